"""The playground through a real Gradio server on 127.0.0.1, driven by gradio_client: Compare (scores,
per-step rewards, the same noise for both sides, cache, video, downloads), Reward (uploads, ranking) and
bad inputs, each a one-sentence error. Uses the shipped demo checkpoints with short, few-step motions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.config import AppConfig, Limits
from app_client import api_error

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a person raises the right hand and waves"
ARGS = [PROMPT, 1.5, 7, 2.5, 3]  # prompt, seconds, seed, guidance, steps


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from gradio_client import Client

    from app import resources, ui

    cfg = AppConfig(port=7900, data_dir=str(tmp_path_factory.mktemp("app")), cache_entries=4,
                    limits=Limits(render_size=128, max_candidates=3))
    res = resources.load(cfg)
    demo = ui.build(res)
    url = ui.launch(demo, res)
    assert url.startswith("http://127.0.0.1:")
    yield res, Client(url, verbose=False)
    demo.close()


def test_compare_scores_both_sides_from_the_same_noise(served):
    res, client = served
    name = res.names[0]
    notes, scores, plot, glb_left, glb_right = client.predict(*ARGS, name, name, api_name="/compare")
    assert PROMPT in notes and "same noise" in notes
    rows = scores["data"]
    assert [r[:2] for r in rows] == [["left", name], ["right", name]]
    assert rows[0][2:] == rows[1][2:]  # same checkpoint + same seed = same motion, same scores
    assert 0.0 <= rows[0][2] <= 1.0 and rows[0][3] > 0
    steps = [r for r in plot["data"] if r[2] == f"{name} (left)"]
    assert [r[0] for r in steps] == [1, 2, 3] and all(0.0 <= r[1] <= 1.0 for r in steps)
    assert Path(glb_left).read_bytes()[:4] == b"glTF" and Path(glb_right).is_file()


def test_compare_differs_by_seed_and_is_cached(served):
    res, client = served
    name = res.names[0]
    hits = res.cache.hits
    first = client.predict(*ARGS, name, name, api_name="/compare")[1]["data"]
    assert res.cache.hits == hits + 1  # identical request: served from the cache
    other = client.predict(PROMPT, 1.5, 8, 2.5, 3, name, name, api_name="/compare")[1]["data"]
    assert other[0][2] != first[0][2]


def test_video_and_downloads(served):
    import imageio.v3 as iio

    res, client = served
    name = res.names[0]
    video, files = client.predict(*ARGS, name, name, api_name="/compare_video")
    frames = iio.imread(video)
    assert frames.shape[0] == 30 and frames.shape[1:3] == (128, 256)  # 1.5 s at 20 fps, two 128 px lanes
    suffixes = sorted(Path(f).suffix for f in files)
    assert suffixes == sorted([".mp4"] + [".bvh", ".npz", ".npy", ".glb"] * 2)
    by = {Path(f).suffix: f for f in files}
    assert Path(by[".bvh"]).read_text().startswith("HIERARCHY")
    npz = np.load(by[".npz"], allow_pickle=False)
    assert npz["poses"].shape == (30, 72) and str(npz["surface_model_type"]) == "smpl"
    assert np.load(by[".npy"]).shape == (30, 22, 3)


def test_reward_tab_ranks_uploads_and_generated(served, tmp_path):
    from gradio_client import handle_file

    res, client = served
    joints = np.load(sorted((REPO / "datasets" / "bandai" / "new_joints").glob("*wave*"))[0]) \
        if (REPO / "datasets" / "bandai" / "new_joints").is_dir() else _generated_joints(res)
    np.save(tmp_path / "mine.npy", joints.astype(np.float32))
    verdict, table = client.predict("a person waves\na person walks forward", [handle_file(str(tmp_path / "mine.npy"))],
                                    "centimetres", [res.names[0]], 1.5, 0, api_name="/score")
    rows = table["data"]
    assert len(rows) == 4 and [r[0] for r in rows] == [1, 2, 3, 4]
    rewards = [r[3] for r in rows]
    assert rewards == sorted(rewards, reverse=True)
    assert {r[1] for r in rows} == {"mine.npy (joints)", f"{res.names[0]} (generated, seed 0)"}
    assert "Best pair" in verdict


def _generated_joints(res):
    from easytune.generate import generate

    return generate(res.bundle(res.names[0]), "a person waves", 2.0, seed=0, steps=2).joints[0]


@pytest.mark.parametrize("args, pattern", [
    (["", 1.5, 0, 2.5, 3], r"prompt is empty"),
    (["x" * 5000, 1.5, 0, 2.5, 3], r"5000 characters|maximum length|limit"),
    (["!!!", 1.5, 0, 2.5, 3], r"has no words"),
    ([PROMPT, 60.0, 0, 2.5, 3], r"greater than maximum value 9\.8|length \(seconds\)"),
    ([PROMPT, 1.5, 0, 2.5, 0], r"less than minimum value 1|sampling steps"),
    ([PROMPT, 1.5, -1, 2.5, 3], r"seed|minimum"),
])
def test_compare_bad_inputs_are_one_sentence(served, args, pattern):
    res, client = served
    message = api_error(client, *args, res.names[0], res.names[0], api_name="/compare")
    assert re.search(pattern, message), message


def test_unknown_checkpoint_is_one_sentence(served):
    res, client = served
    message = api_error(client, *ARGS, "no-such-model", res.names[0], api_name="/compare")
    assert "no-such-model" in message


def test_reward_bad_inputs_are_one_sentence(served, tmp_path):
    from gradio_client import handle_file

    res, client = served
    (tmp_path / "fake.npy").write_text("not an array")
    (tmp_path / "pickle.npy").write_bytes(np.lib.format.magic(1, 0) + b"junk")
    cases = [
        (["", None, "centimetres", [res.names[0]], 1.5, 0], r"at least one prompt"),
        (["a\nb\nc\nd", None, "centimetres", [res.names[0]], 1.5, 0], r"4 prompts given; at most 3"),
        (["a person waves", None, "centimetres", [], 1.5, 0], r"no motion to score"),
        (["a person waves", [handle_file(str(tmp_path / "fake.npy"))], "centimetres", [], 1.5, 0], r"fake\.npy"),
        (["a person waves", [handle_file(str(tmp_path / "pickle.npy"))], "centimetres", [], 1.5, 0], r"pickle\.npy"),
    ]
    for args, pattern in cases:
        message = api_error(client, *args, api_name="/score")
        assert re.search(pattern, message), message
        assert "/tmp/" not in message  # the server's temporary paths stay private


def test_app_py_bad_checkpoint_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "app.py", "--base", "nope", "--data-dir", str(tmp_path), "--no-warm"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "'nope'" in lines[0] and "Traceback" not in proc.stderr
