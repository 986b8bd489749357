"""The training Dataset over a HumanML3D-layout folder: ours (`python -m easytune data build`) or an
official HumanML3D copy (new_joint_vecs/, texts/, Mean.npy, Std.npy, train/val/test.txt; no
dataset.json or labels.json, so stamp and labels are None).

Items follow HumanML3D's text-to-motion loader: a caption is drawn from the motion's text file (a
caption with start/end times applies to that segment only), the motion is cropped to a multiple of
`unit` frames between `min_frames` and `max_frames` (one unit shorter with probability 1/3, as
HumanML3D does, so lengths vary), at a random start, and normalized with the dataset's Mean/Std.
`item(index, rng)` draws caption and crop from the rng it is given (the trainers pass one keyed by
(seed, step), so a resumed run repeats its crops); `dataset[index]` draws from the dataset's own
running stream (DataLoader use).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from easytune.errors import UserError
from easytune.motion.captions import parse_text_line
from easytune.motion.features import FEATURE_DIM, load_mean_std

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "test_seen", "test_unseen")
TEXT_FPS = 20  # start/end times in texts/ are seconds at HumanML3D's 20 fps


def tree_stamp(root: str | os.PathLike, settings: dict[str, Any], keep: Callable[[str], bool] = lambda rel: True) -> str:
    """sha256 of the settings and of the path and bytes of every file under root that `keep(relative path)`
    accepts, 16 hex digits: a build's byte stamp (every file) and its content stamp (below)."""
    root = Path(root)
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and keep(rel):
            h.update(rel.encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def content_stamp(root: str | os.PathLike, settings: dict[str, Any]) -> str:
    """The stamp of what a build writes besides float arrays: its settings and every file's path and bytes except
    the .npy features, Mean/Std, dataset.json and README.md (split lists, labels, captions). The byte stamp also
    hashes float arrays whose last bits depend on the CPU (numpy's SIMD paths; measured on new_joints/), so the same
    build on another machine can get another byte stamp and the same content stamp; Mean/Std are compared by value
    where it matters."""
    return tree_stamp(root, settings, lambda rel: not rel.endswith(".npy") and rel not in ("dataset.json", "README.md"))


def load_dataset_info(root: str | os.PathLike) -> dict[str, Any]:
    """What a dataset folder holds: {"root", "stamp" (None for HumanML3D's own), "content_stamp" (None for builds
    older than it: MotionDataset.content_stamp computes theirs),
    "mean", "std" (263,), "splits" {name: [ids]} for the split files present, "card" (README.md path or None),
    "labels" (labels.json dict or None), "info" (dataset.json dict or None)}.
    A missing folder, Mean/Std or feature folder, or a damaged dataset.json, labels.json or split file
    (not UTF-8, not valid JSON, labels without text content/style) raises UserError naming it."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist; build one with `python -m easytune data build` "
                        f"or point to a HumanML3D folder.")
    if not (root / "new_joint_vecs").is_dir():
        raise UserError(f"{root} has no new_joint_vecs/ folder; a dataset folder needs the HumanML3D layout "
                        f"(new_joint_vecs/, texts/, Mean.npy, Std.npy, train/val/test.txt).")
    mean, std = load_mean_std(root)
    info = _read_json_object(root / "dataset.json") if (root / "dataset.json").is_file() else None
    labels = None
    if (root / "labels.json").is_file():
        labels = _read_json_object(root / "labels.json")
        bad = [k for k, v in labels.items()
               if not (isinstance(v, dict) and all(isinstance(v.get(f), str) for f in ("content", "style")))]
        if bad:
            raise UserError(f"{root / 'labels.json'}: {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} (e.g. "
                            f"{bad[0]!r}) {'lacks' if len(bad) == 1 else 'lack'} text 'content' and 'style'; the dataset is damaged (rebuild it).")
    splits = {}
    for name in SPLITS:
        p = root / f"{name}.txt"
        if p.is_file():
            splits[name] = [ln.strip() for ln in _read_utf8(p).splitlines() if ln.strip()]
    card = root / "README.md"
    return {"root": str(root), "stamp": (info or {}).get("stamp"), "content_stamp": (info or {}).get("content_stamp"),
            "mean": mean, "std": std,
            "splits": splits, "card": str(card) if card.is_file() else None, "labels": labels, "info": info}


def combination_groups(info: dict[str, Any], names: Sequence[str]) -> list[str]:
    """"unseen" for each motion whose (content, style) combination training never shows (listed in
    test_unseen.txt or flagged `unseen_combo` in labels.json), else "seen"; `info` from load_dataset_info."""
    unseen = set(info["splits"].get("test_unseen", []))
    unseen |= {n for n, lab in (info["labels"] or {}).items() if lab.get("unseen_combo")}
    return ["unseen" if n in unseen else "seen" for n in names]


def absent_combinations(labels: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (content, style) pair of the labels' contents and styles that no motion of any split carries, sorted.
    None of them is one of the test split's held-out combinations: those have motions."""
    present = {(v["content"], v["style"]) for v in labels.values()}
    contents = sorted({c for c, _ in present})
    styles = sorted({s for _, s in present})
    return [(c, s) for c in contents for s in styles if (c, s) not in present]


def _read_utf8(path: Path) -> str:
    """A dataset text file (split list, captions, JSON); UserError naming it when it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}); the dataset is damaged (rebuild it).") from None


def _read_json_object(path: Path) -> dict[str, Any]:
    """A dataset JSON file holding an object; UserError naming it when it is damaged."""
    try:
        data = json.loads(_read_utf8(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); the dataset is damaged "
                        f"(rebuild it).") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} holds a {type(data).__name__}, not a JSON object; the dataset is damaged "
                        f"(rebuild it).")
    return data


def _load_features(path: Path) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} cannot be read as a .npy array ({e}).") from None
    if x.ndim != 2 or x.shape[1] != FEATURE_DIM:
        raise UserError(f"{path} has shape {x.shape}; motion features must be (frames, {FEATURE_DIM}).")
    if not np.isfinite(x).all():
        raise UserError(f"{path} contains NaN or infinite values; only finite features are allowed.")
    return x.astype(np.float32)


def _read_texts(path: Path) -> list[tuple[str, float, float]]:
    if not path.is_file():
        return []
    out = []
    for line in _read_utf8(path).splitlines():
        if line.strip():
            caption, _, start, end = parse_text_line(line)
            out.append((caption, start, end))
    return out


class MotionDataset(torch.utils.data.Dataset):
    """Motions of one split with their captions.

    item: {"motion": FloatTensor (T, 263) normalized, "length": int T, "caption": str,
           "label": (content, style) or None, "name": str}
    Attributes: mean, std (263,) np arrays; stamp (str or None); labels (list aligned with items, or
    None for a folder without labels.json); names (list of motion ids).

    Motions whose features (or captioned segment) are shorter than `min_frames` are left out, as
    are ids without features or captions (counted in `.skipped`). `tiny=N` keeps the first N usable
    motions (sorted ids), for tests. `random_crop=False` gives deterministic items: the first
    caption and the longest allowed crop from frame 0.
    """

    def __init__(self, root, split="train", *, mean=None, std=None, min_frames=20, max_frames=196, unit=4,
                 tiny: int | None = None, seed=0, random_crop=True):
        if unit < 1 or min_frames < unit or max_frames < min_frames:
            raise UserError(f"need 1 <= unit <= min_frames <= max_frames, got unit={unit}, "
                            f"min_frames={min_frames}, max_frames={max_frames}.")
        if tiny is not None and tiny < 1:
            raise UserError(f"tiny must be a positive number of motions or None, got {tiny}.")
        info = load_dataset_info(root)
        if split not in info["splits"]:
            raise UserError(f"{root} has no {split}.txt; splits present: {sorted(info['splits'])}.")
        self.root = Path(root)
        self.split = split
        self.info = info
        self.stamp: str | None = info["stamp"]
        self.mean = np.asarray(info["mean"] if mean is None else mean, dtype=np.float32)
        self.std = np.asarray(info["std"] if std is None else std, dtype=np.float32)
        if self.mean.shape != (FEATURE_DIM,) or self.std.shape != (FEATURE_DIM,) or np.any(self.std <= 0):
            raise UserError(f"mean and std must be ({FEATURE_DIM},) with std > 0, got {self.mean.shape}, {self.std.shape}.")
        self.min_frames, self.max_frames, self.unit = min_frames, max_frames, unit
        self.random_crop = random_crop
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._rng_worker: int | None = None  # DataLoader worker whose stream self._rng is
        self._mean_t = torch.from_numpy(self.mean)
        self._std_t = torch.from_numpy(self.std)

        self.names: list[str] = []
        self._motions: list[np.ndarray] = []
        self._captions: list[list[tuple[str, int, int]]] = []  # (caption, first frame, end frame)
        self.skipped = {"missing": 0, "short": 0}
        for name in sorted(info["splits"][split]):
            if tiny is not None and len(self.names) >= tiny:
                break
            fpath = self.root / "new_joint_vecs" / f"{name}.npy"
            texts = _read_texts(self.root / "texts" / f"{name}.txt")
            if not fpath.is_file() or not texts:
                self.skipped["missing"] += 1
                continue
            feats = _load_features(fpath)
            caps = []
            for caption, start, end in texts:
                a, b = (0, len(feats)) if start == 0 and end == 0 else (int(start * TEXT_FPS), int(end * TEXT_FPS))
                b = min(b, len(feats))
                if b - a >= min_frames:
                    caps.append((caption, a, b))
            if not caps:
                self.skipped["short"] += 1
                continue
            self.names.append(name)
            self._motions.append(feats)
            self._captions.append(caps)
        if not self.names:
            raise UserError(f"{root}: split {split!r} has no usable motion ({self.skipped['missing']} ids without "
                            f"features or texts, {self.skipped['short']} shorter than {min_frames} frames).")
        if any(self.skipped.values()):
            log.info("%s/%s: left out %s", root, split, self.skipped)
        labels = info["labels"]
        self.labels = None if labels is None else [
            (labels[n]["content"], labels[n]["style"]) if n in labels else None for n in self.names]

    @functools.cached_property
    def content_stamp(self) -> str | None:
        """The build's content stamp; computed once (about 2 s here) for builds older than it, which is done only
        where a checkpoint records or checks it, not on every dataset load."""
        info = self.info["info"] or {}
        if info.get("content_stamp") or not isinstance(info.get("settings"), dict):
            return info.get("content_stamp")
        return content_stamp(self.root, info["settings"])

    def __len__(self) -> int:
        return len(self.names)

    def captions(self, index: int) -> list[str]:
        """All captions of motion `index` (for retrieval evaluation)."""
        return [c for c, _, _ in self._captions[index]]

    def crop_length(self, n_frames: int, rng: np.random.Generator | None = None) -> int:
        """Frames kept from a segment of `n_frames` (>= min_frames): a multiple of `unit`, at most
        max_frames; with random_crop, one unit less with probability 1/3 (drawn from `rng`, default
        the dataset's running one) while >= min_frames."""
        rng = self._rng if rng is None else rng
        length = (min(n_frames, self.max_frames) // self.unit) * self.unit
        if self.random_crop and length - self.unit >= self.min_frames and rng.random() < 1 / 3:
            length -= self.unit
        return length

    def _worker_rng(self) -> None:
        """Give each DataLoader worker its own stream (forked copies would repeat the same crops);
        torch derives worker seeds from the loader's generator, so runs stay reproducible."""
        info = torch.utils.data.get_worker_info()
        if info is not None and info.id != self._rng_worker:
            self._rng = np.random.default_rng([self._seed, info.seed % (1 << 32)])
            self._rng_worker = info.id

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Item `index` with its caption and crop drawn from the dataset's running RNG (DataLoader use;
        trainers that resume exactly call `item(index, rng)` with a step-keyed rng instead)."""
        self._worker_rng()
        return self.item(index, self._rng)

    def item(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """Item `index` with its caption, crop length and crop start drawn from `rng` only (nothing
        drawn when random_crop is False): the same rng state gives the same item."""
        caps = self._captions[index]
        k = int(rng.integers(len(caps))) if self.random_crop else 0
        caption, a, b = caps[k]
        length = self.crop_length(b - a, rng)
        start = a + (int(rng.integers(0, b - a - length + 1)) if self.random_crop else 0)
        x = torch.from_numpy(self._motions[index][start:start + length])
        return {"motion": (x - self._mean_t) / self._std_t, "length": length, "caption": caption,
                "label": None if self.labels is None else self.labels[index], "name": self.names[index]}


def draw_item(dataset: Any, index: int, rng: np.random.Generator) -> dict[str, Any]:
    """`dataset.item(index, rng)` where the dataset draws its items (MotionDataset), else
    `dataset[index]` (a dataset of fixed items)."""
    item = getattr(dataset, "item", None)
    return item(index, rng) if callable(item) else dataset[index]


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad a list of items to the longest: {"motion": (B, Tmax, 263) zero-padded, "mask": (B, Tmax)
    bool True on valid frames, "lengths": (B,) long, "captions", "labels", "names": lists}."""
    if not batch:
        raise UserError("collate needs at least one item.")
    lengths = torch.tensor([int(b["length"]) for b in batch], dtype=torch.long)
    tmax = int(lengths.max())
    motion = torch.zeros(len(batch), tmax, batch[0]["motion"].shape[-1], dtype=batch[0]["motion"].dtype)
    for i, b in enumerate(batch):
        motion[i, : b["length"]] = b["motion"]
    mask = torch.arange(tmax)[None, :] < lengths[:, None]
    return {"motion": motion, "mask": mask, "lengths": lengths, "captions": [b["caption"] for b in batch],
            "labels": [b["label"] for b in batch], "names": [b["name"] for b in batch]}
