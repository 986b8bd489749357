"""Bad input ends in one clear sentence and never loses data (issue 13), table-driven over the commands.

Every case runs `python -m easytune ...` in-process (torch imports once) in a scratch workspace with a
temporary checkpoint registry (demo root and $EASYTUNE_CHECKPOINTS both point into it) and asserts:
exit status 2, exactly one line on stderr that starts with "error:" and matches the expected problem,
no traceback, and no file created, changed or removed (the whole tree is compared before and after).
The real demo_checkpoints/ is checked untouched too. A few cases also run as real subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from easytune import checkpoints as ck
from easytune import cli
from test_inputs import walking_joints, write_bvh

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO / "datasets" / "bandai"
SEED_HUGE = str(10**23)
TQDM = re.compile(r"\[\d\d:\d\d[<,]|\?\w+/s\]")  # a progress bar's render, not a message


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, size, mtime and (for files) content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_file():
            out[p.relative_to(root).as_posix()] = ("f", st.st_size, st.st_mtime_ns,
                                                   hashlib.sha1(p.read_bytes()).hexdigest())
        else:
            out[p.relative_to(root).as_posix()] = ("d", st.st_mtime_ns)
    return out


def _demo_stat() -> dict[str, tuple]:
    root = REPO / "demo_checkpoints"
    return {p.as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _fake_dataset(root: Path, frames: int = 30) -> Path:
    """A minimal dataset folder in our layout (two motions) that `data stats` accepts."""
    from easytune.motion.features import extract_features

    for sub in ("new_joint_vecs", "new_joints", "texts"):
        (root / sub).mkdir(parents=True)
    feats = extract_features(walking_joints(frames + 1)).astype(np.float32)
    labels = {}
    for name in ("a", "b"):
        np.save(root / "new_joint_vecs" / f"{name}.npy", feats)
        np.save(root / "new_joints" / f"{name}.npy", walking_joints(frames))
        (root / "texts" / f"{name}.txt").write_text("a person walks#a/DET person/NOUN#0.0#0.0\n")
        labels[name] = {"content": "walk", "style": "normal", "source": f"{name}.bvh"}
    np.save(root / "Mean.npy", feats.mean(0))
    np.save(root / "Std.npy", feats.std(0) + 1e-3)
    for split, ids in (("train", "a"), ("val", "b"), ("test", "b")):
        (root / f"{split}.txt").write_text(ids + "\n")
    (root / "labels.json").write_text(json.dumps(labels))
    (root / "dataset.json").write_text(json.dumps({"stamp": "fake"}))
    return root


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The scratch workspace: good and bad inputs of every kind, a temporary registry."""
    from easytune.motion.features import extract_features

    w = tmp_path_factory.mktemp("ws")
    j = walking_joints()
    np.save(w / "good.npy", j)
    np.save(w / "features.npy", extract_features(j))
    write_bvh(w / "good.bvh")
    bad = {"huge.npy": j.astype(np.float64) * 1e30, "nan.npy": np.where(j > 1.0, np.nan, j), "cm.npy": j * 100,
           "zeros.npy": j * 0, "shape.npy": j[:, :21], "normalized.npy": (extract_features(j) - 0.5) / 0.1,
           "strings.npy": np.array(["walk"])}
    for name, array in bad.items():
        np.save(w / name, array)
    (w / "empty.npy").write_bytes(b"")
    np.savez(w / "z.npz", j=j)
    os.replace(w / "z.npz", w / "renamed.npy")
    np.save(w / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (w / "truncated.npy").write_bytes((w / "good.npy").read_bytes()[:150])
    write_bvh(w / "nan_time.bvh", frame_time="nan")
    write_bvh(w / "many_joints.bvh", extra_joints=300)
    (w / "bad.yaml").write_text("lr: [1, 2\nsteps: 3\n")
    (w / "bad.json").write_text('{"lr": 1,}')
    (w / "list.yaml").write_text("- 1\n- 2\n")
    (w / "file.txt").write_text("a file, not a folder")
    (w / "somedir").mkdir()
    (w / "somedir" / "keep.txt").write_text("not a dataset")
    allbad = w / "allbad"
    allbad.mkdir()
    (allbad / "walk_happy_001.bvh").write_text("HIERARCHY\nROOT Hips\n{\n")
    write_bvh(allbad / "run_normal_001.bvh")
    (allbad / "run_normal_001.json").write_text("{not json")
    # registry: the demo root holds a base; runs of two kinds to promote
    demo = w / "registry" / "demo"
    sampling = {"steps": 10, "guidance": 2.5, "eta": 0.0}
    import torch

    state = torch.nn.Linear(2, 2).state_dict()
    ck.save_checkpoint(demo / "base", state, kind="base", config={"sampling": sampling})
    ck.save_checkpoint(w / "run_base", state, kind="base", config={"sampling": dict(sampling)})
    ck.save_checkpoint(w / "run_reward", state, kind="reward", config={})
    (w / "registry" / "user").mkdir()
    # damaged datasets for `data stats`
    for name in ("no_val", "bad_npy", "missing_npy", "bad_labels", "bad_text", "bad_joints", "labels_list",
                 "labels_no_style", "bad_split"):
        _fake_dataset(w / "ds" / name)
    (w / "ds" / "no_val" / "val.txt").unlink()
    (w / "ds" / "bad_npy" / "new_joint_vecs" / "a.npy").write_bytes(b"\x93NUMPY garbage")
    (w / "ds" / "missing_npy" / "new_joint_vecs" / "b.npy").unlink()
    (w / "ds" / "bad_labels" / "labels.json").write_text("{broken")
    (w / "ds" / "bad_text" / "texts" / "a.txt").write_bytes(b"\xff\xfe caption")
    np.save(w / "ds" / "bad_joints" / "new_joints" / "a.npy", np.zeros((3, 21, 3)))
    (w / "ds" / "labels_list" / "labels.json").write_text("[1, 2]")
    no_style = json.loads((w / "ds" / "labels_no_style" / "labels.json").read_text())
    no_style["a"].pop("style")
    (w / "ds" / "labels_no_style" / "labels.json").write_text(json.dumps(no_style))
    (w / "ds" / "bad_split" / "val.txt").write_bytes(b"b\n\xff\xfe\n")
    labels = json.loads((w / "ds" / "bad_joints" / "labels.json").read_text())
    labels["a"]["content"] = "wave-left-hand"  # the left/right check reads its joints
    (w / "ds" / "bad_joints" / "labels.json").write_text(json.dumps(labels))
    return w


@pytest.fixture
def in_ws(ws, monkeypatch):
    monkeypatch.chdir(ws)
    monkeypatch.setattr(ck, "DEMO_ROOT", ws / "registry" / "demo")
    monkeypatch.setenv("EASYTUNE_CHECKPOINTS", str(ws / "registry" / "user"))
    return ws


D = str(DATASET)
RENDER = ["render", "--body", "none", "--joints"]
PROMOTE = ["checkpoints", "--promote"]

# (argv, regex the one error line must match)
CASES: list[tuple[list[str], str]] = [
    # --- motion files, through the one loader (render, body, export) ---
    (RENDER + ["huge.npy", "--out", "v.mp4"], r"huge\.npy has a joint coordinate of .*e\+30 m; at most 1000 m"),
    (RENDER + ["nan.npy", "--out", "v.mp4"], r"nan\.npy has NaN or infinite joint positions"),
    (RENDER + ["cm.npy", "--out", "v.mp4"], r"cm\.npy .* \(is the file in centimetres\? divide by 100\)"),
    (RENDER + ["zeros.npy", "--out", "v.mp4"], r"zeros\.npy: every joint lies within 10 cm"),
    (RENDER + ["shape.npy", "--out", "v.mp4"], r"shape \(40, 21, 3\); allowed are joint positions"),
    (RENDER + ["normalized.npy", "--out", "v.mp4"], "does not look like denormalized HumanML3D features"),
    (RENDER + ["strings.npy", "--out", "v.mp4"], r"strings\.npy holds an array of shape \(1,\)"),
    (RENDER + ["empty.npy", "--out", "v.mp4"], r"empty\.npy is empty \(0 bytes\)"),
    (RENDER + ["renamed.npy", "--out", "v.mp4"], r"renamed\.npy is a zip archive \(an \.npz renamed"),
    (RENDER + ["objects.npy", "--out", "v.mp4"], "holds Python objects"),
    (RENDER + ["truncated.npy", "--out", "v.mp4"], r"truncated\.npy is a damaged \.npy file"),
    (RENDER + ["bad.yaml", "--out", "v.mp4"], r"has type '\.yaml'; allowed are \.npy .* and \.bvh"),
    (RENDER + ["missing.npy", "--out", "v.mp4"], r"missing\.npy does not exist"),
    (RENDER + ["somedir", "--out", "v.mp4"], "somedir is a folder"),
    (RENDER + ["nan_time.bvh", "--out", "v.mp4"], "frame time nan"),
    (RENDER + ["many_joints.bvh", "--out", "v.mp4"], "322 joints; at most 256"),
    (RENDER + ["good.npy", "--joints2", "huge.npy", "--out", "v.mp4"], r"huge\.npy has a joint coordinate"),
    (["body", "huge.npy"], r"huge\.npy has a joint coordinate"),
    (["body", "renamed.npy"], "zip archive"),
    (["body", "nan_time.bvh"], "frame time nan"),
    (["body", "empty.npy"], "is empty"),
    (["export", "--joints", "huge.npy", "--out", "m.bvh"], r"huge\.npy has a joint coordinate"),
    (["export", "--joints", "objects.npy", "--out", "m.glb"], "holds Python objects"),
    (["export", "--joints", "cm.npy", "--out", "m.npz"], "centimetres"),
    # --- output paths, numbers, config files ---
    (RENDER + ["good.npy", "--out", "somedir"], "--out somedir is an existing folder"),
    (RENDER + ["good.npy", "--out", "v.avi"], r"--out v\.avi has type '\.avi'; allowed are \.mp4, \.gif"),
    (RENDER + ["good.npy", "--out", "file.txt/v.mp4"], "file.txt is a file, so nothing can be written"),
    (RENDER + ["good.npy", "--out", "x" * 300 + ".mp4"], "longer than 255 bytes"),
    (RENDER + ["good.npy", "--out", "v.mp4", "--fps", "0"], r"render fps must be between 1 and 120, got 0"),
    (RENDER + ["good.npy", "--out", "v.mp4", "--fps", "-5"], r"render fps must be between 1 and 120"),
    (RENDER + ["good.npy", "--out", "v.mp4", "--fps", "nan"], r"'fps' expects a finite number, got 'nan'"),
    (RENDER + ["good.npy", "--out", "v.mp4", "--size", "0"], "render size must be between 64 and 2048"),
    (RENDER + ["good.npy", "--out", "v.mp4", "--size", SEED_HUGE], r"'size' must be an integer in \["),
    (RENDER + ["good.npy", "--out", "v.mp4", "--config", "bad.yaml"], r"bad\.yaml is not valid YAML: .* line 2"),
    (RENDER + ["good.npy", "--out", "v.mp4", "--config", "bad.json"], r"bad\.json is not valid JSON: .* line 1"),
    (RENDER + ["good.npy", "--out", "v.mp4", "--config", "list.yaml"], "must hold a mapping of key: value"),
    (RENDER + ["good.npy", "--out", "v.mp4", "--config", "nope.yaml"], r"config file nope\.yaml does not exist"),
    (RENDER + ["good.npy", "--out", "v.mp4", "--labels", "a,b"], "--labels has 2 names for 1 motions"),
    (RENDER + ["good.npy", "--out", "v.mp4", "--bogus"], "unrecognized arguments: --bogus"),
    (["body", "good.npy", "--fps", "0"], r"--fps must be a frame rate in \[1, 1000\] fps, got 0\.0"),
    (["body", "good.npy", "--fps", "nan"], r"--fps must be a frame rate .* got nan"),
    (["body", "good.npy", "--fps", "-20"], r"--fps must be a frame rate"),
    (["body", "good.npy", "--repeat", "0"], r"--repeat must be an integer in \[1, 1000\]"),
    # --- the registry (a temporary one) ---
    (PROMOTE + ["run_reward", "--name", "base"], r"'base' already exists .*\(--replace\)"),
    (PROMOTE + ["run_reward", "--name", "base", "--replace"], "holds a 'base' model; it cannot be replaced by a 'reward'"),
    (PROMOTE + ["run_base", "--name", "../../x"], r"checkpoint name '\.\./\.\./x' is not allowed"),
    (PROMOTE + ["run_base", "--name", "/abs/path"], r"checkpoint name '/abs/path' is not allowed"),
    (PROMOTE + ["run_base", "--name", ".hidden"], "no leading dot"),
    (PROMOTE + ["run_base", "--name", "x" * 65], "1 to 64 letters"),
    (PROMOTE + ["run_reward", "--name", "r", "--sampling", "steps=20"], "has no default sampler"),
    (PROMOTE + ["run_base", "--name", "b2", "--sampling", "steps=0"], "steps"),
    (PROMOTE + ["nope", "--name", "b2"], "checkpoint 'nope' not found"),
    (PROMOTE + ["run_base"], "--promote needs --name"),
    (["checkpoints", "--name", "x"], "only apply with --promote"),
    (["checkpoints", "--kind", "bogus"], "unknown --kind 'bogus'; kinds are base, evaluator"),
    # --- datasets ---
    (["data", "build", "folder", "--src", "allbad", "--out", "built"],
     r"no usable motion in allbad: 2 BVH file\(s\) read, 2 skipped.* Problems: (?=.*malformed BVH)(?=.*not valid JSON)"),
    (["data", "build", "folder", "--src", "nope", "--out", "built"], "nope does not exist or is not a folder"),
    (["data", "build", "folder", "--src", "allbad", "--out", "file.txt"], "--out file.txt is an existing file"),
    (["data", "build", "folder", "--src", "allbad", "--out", "somedir"], "exists and is not a dataset built by"),
    (["data", "build", "folder", "--src", "allbad", "--out", "new/deeper/built"], "no usable motion"),
    (["data", "build", "folder", "--src", "allbad", "--out", "file.txt/built"], "file.txt is a file, so nothing"),
    (["data", "build", "folder", "--src", "allbad", "--out", "b", "--window-frames", "0"], "min_frames <= window_frames"),
    (["data", "build", "folder", "--src", "allbad", "--out", "b", "--seed", SEED_HUGE],
     r"'seed' must be an integer in \[0, 4294967295\]"),
    (["data", "build", "folder", "--src", "allbad", "--out", "b", "--test-fraction", "nan"], "finite number"),
    (["data", "build", "folder", "--src", "allbad", "--out", "b", "--config", "bad.yaml"], "not valid YAML"),
    (["data", "build", "folder", "--src", "allbad", "--out", "b", "--limit", "0"], "limit >= 1"),
    (["data", "build", "folder", "--src", "allbad", "--out", "b", "--workers", "0"], "workers must be >= 1"),
    (["data", "build", "bandai", "--archives", "nope", "--out", "b"], "no bandai-namco-.*archive in nope"),
    (["data", "stats", "nope"], "dataset folder nope does not exist"),
    (["data", "stats", "somedir"], "has no new_joint_vecs/ folder"),
    (["data", "stats", "ds/no_val"], r"lacks the split file\(s\) val\.txt"),
    (["data", "stats", "ds/bad_npy"], r"a\.npy is not a readable \.npy array"),
    (["data", "stats", "ds/missing_npy"], r"listed in val\.txt have no new_joint_vecs/ file \(e\.g\. b\.npy\)"),
    (["data", "stats", "ds/bad_labels"], r"labels\.json is not valid JSON"),
    (["data", "stats", "ds/bad_text"], r"a\.txt is not UTF-8 text"),
    (["data", "stats", "ds/labels_list"], r"labels\.json holds a list, not a JSON object"),
    (["data", "stats", "ds/labels_no_style"], r"labels\.json: 1 entry \(e\.g\. 'a'\) lacks text 'content', 'style'"),
    (["data", "stats", "ds/bad_split"], r"val\.txt is not UTF-8 text"),
    (["data", "stats", "ds/bad_joints"], r"a\.npy has shape \(3, 21, 3\), expected \(frames, 22, 3\)"),
    (["data", "frobnicate"], "invalid choice"),
    # --- commands of other modules whose bad inputs end well (through cli.py / config.py or their own checks) ---
    (["sample", "--checkpoint", "base", "--prompt", "walk", "--seed", SEED_HUGE],
     r"--seed must be an integer in \[0, 4294967295\]"),
    (["sample", "--checkpoint", "base", "--prompt", "walk", "--seed", "-1"], r"--seed must be an integer in \["),
    (["sample", "--checkpoint", "base", "--prompt", "walk", "--device", "foo"], "unknown device 'foo'"),
    (["sample", "--checkpoint", "base", "--prompt", "walk", "--seconds", "nan"], "length must be between"),
    (["sample", "--checkpoint", "base", "--prompt", "walk", "--num", "0"], "--num must be from 1"),
    (["sample", "--checkpoint", "base", "--prompt", "walk", "--guidance", "nan"], "guidance must be in"),
    (["sample", "--checkpoint", "base", "--prompt", "walk", "--seed", "x"], "invalid int value: 'x'"),
    (["train", "base", "--data", D, "--config", "bad.yaml"], "not valid YAML"),
    (["train", "base", "--data", D, "--seed", SEED_HUGE], r"'seed' must be an integer in \[0, 4294967295\]"),
    (["train", "base", "--data", D, "--lr", "nan"], "'lr' expects a finite number"),
    (["train", "base", "--data", D, "--batch-size", "0"], "batch_size must be at least 1"),
    (["train", "base", "--data", D, "--device", "foo"], "unknown device 'foo'"),
    (["train", "reward", "--data", D, "--steps", "0"], "steps must be >= 1"),
    (["train", "reward", "--data", D, "--config", "list.yaml"], "must hold a mapping"),
    (["train", "reward", "--data", D, "--lr", "inf"], "'lr' expects a finite number"),
    (["train", "evaluator", "--data", D, "--steps", "0"], "steps must be >= 1"),
    (["train", "spl", "--data", D, "--seed", SEED_HUGE], r"'seed' must be an integer"),
    (["train", "base", "--data", D, "--run-dir", "file.txt"], "--run-dir file.txt is an existing file"),
    (["train", "reward", "--data", D, "--out", "file.txt"], "--out file.txt is an existing file"),
    (["train", "reward", "--data", "nope", "--out", "new_run"], "dataset folder nope does not exist"),
    (["train", "reward", "--data", "ds/labels_no_style", "--out", "r"], "lacks text 'content' and 'style'"),
    (["train", "reward", "--data", "ds/bad_split", "--out", "r"], r"val\.txt is not UTF-8 text"),
    (["train", "evaluator", "--data", D, "--out", "file.txt"], "--out file.txt is an existing file"),
    (["train", "spl", "--data", D, "--out", "file.txt/run"], "file.txt is a file, so nothing"),
    (["evaluate", "--out", "file.txt"], "--out file.txt is an existing file"),
    (["evaluate", "--max-motions", "-1"], r"--max-motions \(0 = all\)"),
    (["evaluate", "--cache", "file.txt"], "--cache file.txt is an existing file"),
    (["recognize", "--per-label", "0"], "--per-label"),
    (["recognize", "--out", "file.txt"], "--out file.txt is an existing file"),
    (["evaluate", "--config", "bad.json"], "not valid JSON"),
    (["evaluate", "--seed", SEED_HUGE], r"'seed' must be an integer"),
    (["recognize", "--config", "bad.yaml"], "not valid YAML"),
    (["recognize", "--guidance", "nan"], "'guidance' expects a finite number"),
    (["finetune", "--config", "bad.yaml"], "not valid YAML"),
    (["finetune", "--seed", SEED_HUGE], r"'seed' must be an integer in \[0, 4294967295\]"),
    (["finetune", "--lr", "nan"], "'lr' expects a finite number"),
    (["finetune", "--batch-size", "0", "--data", D], "batch_size must be an integer from 1 to 256"),
    (["finetune", "select", "--config", "bad.json"], "not valid JSON"),
    (["finetune", "select", "--seed", "-3"], r"'seed' must be an integer in \[0, "),
    (["finetune", "select", "--composition", "51"], "composition must be an integer from 0 .off. to 50"),
    (["finetune", "select", "--rule", "composition", "--composition", "0"], "needs the MM-Dist .absent. column"),
    (["finetune", "--reward-ensemble", "reward"], "repeats a reward model"),
    (["study", "create", "bad.yaml", "--db", "s.sqlite", "--media", "m"], r"bad\.yaml is not valid YAML"),
    (["study", "create", "missing.yaml", "--db", "s.sqlite", "--media", "m"], "missing.yaml does not exist"),
    (["study", "results", "nope", "--db", "s.sqlite"], "no study database at s.sqlite"),
    (["study", "export", "nope", "--db", "file.txt", "--csv", "o.csv"], "file.txt is not a readable study database"),
    (["study", "export", "nope", "--db", "s.sqlite"], "needs --csv FILE, --pairs FILE or both"),
    (["finetune", "soup", "--ingredients", "base"], "a soup needs at least 2 ingredients, got 1"),
    (["finetune", "soup", "--ingredients", "base,nope"], "checkpoint 'nope' not found"),
    (["finetune", "soup", "--ingredients", "base,run_base", "--weights", "1,-1"], "weights must be positive finite"),
    (["finetune", "soup", "--ingredients", "run_reward,base", "--out", "soup"], "holds a 'reward' model"),
    (["finetune", "soup", "--ingredients", "run_reward,base", "--out", "run_base"],
     "run_base already holds a checkpoint that is not a soup"),
    (["finetune", "soup", "--ingredients", "base,run_base", "--out", "run_base"], "run_base is one of the ingredients"),
    (["results", "--methods", "easytune,nope"], r"unknown method\(s\) nope; choose from easytune, easytune-k3, refl"),
    (["results", "--lrs", "fast"], "--seeds takes integers and --lrs numbers"),
    (["results", "--budget", "0"], "budget must be 1 to 1e7 seconds"),
    (["frobnicate"], "unknown command 'frobnicate'; `python -m easytune --help` lists the commands"),
]


def _needs_dataset(argv: list[str]) -> bool:
    return D in argv


@pytest.mark.parametrize("argv,message", CASES, ids=[" ".join(a)[:70] for a, _ in CASES])
def test_bad_input_is_one_sentence_and_changes_nothing(in_ws, capsys, argv, message):
    if _needs_dataset(argv) and not DATASET.is_dir():
        pytest.skip(f"{DATASET} not built")
    before, demo_before = _snapshot(in_ws), _demo_stat()
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    lines = [ln for ln in re.split(r"[\r\n]", err) if ln.strip() and not TQDM.search(ln)]
    assert code == 2, (code, out, err)
    assert "Traceback" not in err + out
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert _snapshot(in_ws) == before, "the command created, changed or removed files"
    assert _demo_stat() == demo_before


def test_the_table_covers_every_command():
    tried = {" ".join(argv[:2]) if argv[0] in ("train", "data") or argv[1:2] in (["select"], ["soup"]) else argv[0]
             for argv, _ in CASES}
    registered = {c for c, _, _ in cli.COMMANDS} - {"data"} | {"data build", "data stats"}
    assert registered <= tried, registered - tried


@pytest.mark.parametrize("argv,message", [
    (RENDER + ["huge.npy", "--out", "v.mp4"], "joint coordinate"),
    (["checkpoints", "--kind", "bogus"], "unknown --kind"),
    (["data", "stats", "ds/bad_labels"], "not valid JSON"),
    (["body", "good.npy", "--fps", "nan"], "--fps must be a frame rate"),
])
def test_real_process_exits_2_without_traceback(ws, argv, message):
    env = {**os.environ, "EASYTUNE_CHECKPOINTS": str(ws / "registry" / "user"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    before = _snapshot(ws)
    proc = subprocess.run([sys.executable, "-m", "easytune", *argv], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and message in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()][-1].startswith("error: ")
    assert _snapshot(ws) == before


def test_a_good_promote_and_build_still_work(in_ws, capsys):
    """The refusals above are not blanket ones: the same commands succeed on good input."""
    assert cli.main(PROMOTE + ["run_base", "--name", "base", "--replace"]) == 0
    assert cli.main(PROMOTE + ["run_reward", "--name", "my-reward"]) == 0
    assert sorted(e["name"] for e in ck.list_checkpoints()) == ["base", "my-reward"]
    capsys.readouterr()
    assert cli.main(["checkpoints", "--kind", "lora"]) == 0
    assert "no 'lora' checkpoints found" in capsys.readouterr().out
