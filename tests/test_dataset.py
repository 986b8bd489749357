"""MotionDataset + collate over our built layout and over an official HumanML3D-style folder."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from easytune.errors import UserError
from easytune.motion.build import BuildConfig, build_dataset
from easytune.motion.dataset import MotionDataset, collate, load_dataset_info
from test_build import make_folder


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("dsdata")
    build_dataset([("folder", make_folder(base / "src"))], base / "ds",
                  BuildConfig(heldout_combo_fraction=0.0, test_fraction=0.2), progress=False)
    return base / "ds"


def test_info(root):
    info = load_dataset_info(root)
    assert len(info["stamp"]) == 16 and info["card"].endswith("README.md")
    assert info["mean"].shape == (263,) and info["std"].shape == (263,)
    assert set(info["splits"]) == {"train", "val", "test", "test_seen", "test_unseen"}
    assert info["splits"]["test_unseen"] == []  # no held-out combination in this build
    assert info["labels"] is not None and info["info"]["format"] == 1


def test_items_are_cropped_normalized_and_labelled(root):
    ds = MotionDataset(root, "train", seed=1)
    assert ds.stamp == load_dataset_info(root)["stamp"] and len(ds.labels) == len(ds) > 10
    raw = {n: np.load(root / "new_joint_vecs" / f"{n}.npy") for n in ds.names}
    lengths = set()
    for i in range(len(ds)):
        for _ in range(3):
            item = ds[i]
            T = item["length"]
            lengths.add(T)
            assert item["motion"].shape == (T, 263) and item["motion"].dtype == torch.float32
            assert T % 4 == 0 and 20 <= T <= min(196, len(raw[item["name"]]))
            assert item["caption"] in ds.captions(i)
            assert item["label"] == ds.labels[i] and item["label"][1] in ("happy", "sad", "angry")
            # the item is a window of the stored features, normalized with Mean/Std
            x = item["motion"].numpy() * ds.std + ds.mean
            r = raw[item["name"]]
            starts = [s for s in range(len(r) - T + 1) if np.allclose(r[s:s + T], x, atol=1e-4)]
            assert starts, item["name"]
    assert {24, 28, 192, 196} <= lengths  # 29-frame clips: 28 or one unit less; 196-frame windows too


def test_deterministic_mode_and_tiny(root):
    ds = MotionDataset(root, "train", random_crop=False, tiny=3)
    assert len(ds) == 3 and ds.names == sorted(ds.names)
    a, b = ds[0], ds[0]
    assert a["caption"] == b["caption"] == ds.captions(0)[0]
    torch.testing.assert_close(a["motion"], b["motion"])
    raw = np.load(root / "new_joint_vecs" / f"{a['name']}.npy")
    assert a["length"] == (min(len(raw), 196) // 4) * 4
    np.testing.assert_allclose(a["motion"].numpy(), (raw[: a["length"]] - ds.mean) / ds.std, rtol=1e-5, atol=1e-5)


def test_given_mean_std_and_crop_limits(root):
    mean, std = np.zeros(263, np.float32), np.full(263, 2.0, np.float32)
    ds = MotionDataset(root, "train", mean=mean, std=std, random_crop=False, max_frames=40, min_frames=24, tiny=40)
    raw = np.load(root / "new_joint_vecs" / f"{ds.names[0]}.npy")
    np.testing.assert_allclose(ds[0]["motion"].numpy(), raw[: ds[0]["length"]] / 2.0, rtol=1e-6)
    assert all(ds[i]["length"] in (24, 28, 40) for i in range(len(ds)))
    with pytest.raises(UserError, match="unit <= min_frames <= max_frames"):
        MotionDataset(root, min_frames=50, max_frames=40)
    with pytest.raises(UserError, match="no test_bogus.txt"):
        MotionDataset(root, "test_bogus")


def test_collate_pads_and_masks(root):
    ds = MotionDataset(root, "train", random_crop=False)
    items = [ds[i] for i in range(len(ds)) if ds[i]["length"] in (28, 196)][:1] + \
            [ds[i] for i in range(len(ds)) if ds[i]["length"] == 196][:1]
    batch = collate(items)
    assert batch["motion"].shape == (2, 196, 263) and batch["mask"].dtype == torch.bool
    assert batch["lengths"].tolist() == [items[0]["length"], 196]
    assert batch["mask"].sum(1).tolist() == batch["lengths"].tolist()
    assert batch["mask"][0, items[0]["length"] - 1] and (items[0]["length"] == 196 or not batch["mask"][0, items[0]["length"]])
    assert torch.all(batch["motion"][0, items[0]["length"]:] == 0)
    assert batch["captions"] == [i["caption"] for i in items] and batch["names"] == [i["name"] for i in items]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
    first = next(iter(loader))
    assert first["motion"].shape[0] == 4 and len(first["labels"]) == 4


def _humanml3d_folder(tmp_path, ref):
    """The official layout as a user has it: no dataset.json, no labels.json."""
    d = tmp_path / "HumanML3D"
    (d / "new_joint_vecs").mkdir(parents=True)
    (d / "texts").mkdir()
    shutil.copy(ref / "new_joint_vecs" / "012314.npy", d / "new_joint_vecs" / "012314.npy")
    shutil.copy(ref / "Mean.npy", d / "Mean.npy")
    shutil.copy(ref / "Std.npy", d / "Std.npy")
    (d / "texts" / "012314.txt").write_text(
        "a person walks forward.#a/DET person/NOUN walk/VERB forward/ADV#0.0#0.0\n"
        "a person turns around.#a/DET person/NOUN turn/VERB around/ADV#2.0#4.0\n")
    (d / "train.txt").write_text("012314\n000000\n")  # the second id is not on disk
    return d


def test_reads_official_humanml3d_layout(humanml3d_reference, tmp_path):
    d = _humanml3d_folder(tmp_path, humanml3d_reference)
    ds = MotionDataset(d, "train", random_crop=False)
    assert ds.stamp is None and ds.labels is None and ds.names == ["012314"] and ds.skipped["missing"] == 1
    item = ds[0]
    assert item["label"] is None and item["length"] == 168  # 170 frames -> a multiple of 4
    ref = np.load(humanml3d_reference / "new_joint_vecs" / "012314.npy")
    mean, std = np.load(humanml3d_reference / "Mean.npy"), np.load(humanml3d_reference / "Std.npy")
    np.testing.assert_allclose(item["motion"].numpy(), (ref[:168] - mean) / std, rtol=1e-5, atol=1e-4)
    # the segment caption covers seconds 2-4 = frames 40-80 only
    ds2 = MotionDataset(d, "train", seed=0)
    assert len(ds.captions(0)) == 2
    draws = [ds2[0] for _ in range(30)]
    assert {it["caption"] for it in draws} == set(ds.captions(0))
    assert all(it["length"] in (36, 40) for it in draws if it["caption"] == "a person turns around.")
    assert any(it["length"] > 40 for it in draws if it["caption"] == "a person walks forward.")


def test_bad_dataset_inputs(root, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(root, d)
    name = (d / "train.txt").read_text().split()[0]
    np.save(d / "new_joint_vecs" / f"{name}.npy", np.zeros((30, 200), np.float32))
    with pytest.raises(UserError, match=rf"{name}\.npy has shape \(30, 200\)"):
        MotionDataset(d, "train")
    np.save(d / "new_joint_vecs" / f"{name}.npy", np.full((30, 263), np.nan, np.float32))
    with pytest.raises(UserError, match="NaN or infinite"):
        MotionDataset(d, "train")
    (d / "Std.npy").unlink()
    with pytest.raises(UserError, match="Std.npy does not exist"):
        load_dataset_info(d)
    with pytest.raises(UserError, match="does not exist"):
        MotionDataset(tmp_path / "nowhere")


def test_dataloader_workers_get_their_own_reproducible_crops(root):
    ds = MotionDataset(root, "train", max_frames=40)
    long = next(i for i, n in enumerate(ds.names) if n.endswith("_w00") and not n.startswith("M"))

    def run(seed):
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, [long] * 4), batch_size=1, num_workers=2,
                                             collate_fn=collate, generator=torch.Generator().manual_seed(seed))
        return [b["motion"][0] for b in loader]

    a = run(0)
    assert not torch.equal(a[0], a[1])  # batches 0 and 1 come from different workers
    assert all(torch.equal(x, y) for x, y in zip(a, run(0)))


def test_item_draws_from_the_given_rng_only(root):
    ds = MotionDataset(root, "train", max_frames=40)
    i = next(i for i in range(len(ds)) if len(ds.captions(i)) > 1 or ds[i]["length"] > 20)
    before = ds._rng.bit_generator.state
    a, b = ds.item(i, np.random.default_rng(5)), ds.item(i, np.random.default_rng(5))
    assert a["caption"] == b["caption"] and torch.equal(a["motion"], b["motion"])
    assert ds._rng.bit_generator.state == before  # the running stream (DataLoader use) is untouched
    draws = [ds.item(i, np.random.default_rng(s)) for s in range(20)]
    assert len({(d["length"], d["caption"], float(d["motion"][0, 0])) for d in draws}) > 1  # the rng decides
    # without random crops nothing is drawn: the deterministic item
    fixed = MotionDataset(root, "train", max_frames=40, random_crop=False)
    assert torch.equal(fixed.item(i, np.random.default_rng(1))["motion"], fixed[i]["motion"])
