"""`python -m easytune data ...`: build a HumanML3D-layout dataset from BVH clips, and print a dataset's
statistics.

    python -m easytune data build bandai --out datasets/bandai [--archives ../shared/data/bandai-namco]
    python -m easytune data build folder --src DIR --out DIR     # any folder of BVH (+ JSON labels)
    python -m easytune data stats DIR                            # ours or an official HumanML3D folder

Output (HumanML3D's layout plus our metadata):
    new_joints/ID.npy (T, 22, 3)   new_joint_vecs/ID.npy (T, 263)   texts/ID.txt caption#tokens#0.0#0.0
    Mean.npy Std.npy (263,)        train/val/test.txt, test_seen.txt, test_unseen.txt
    labels.json  per ID: content, style, source file, mirrored, window, split, caption templates
    dataset.json stamp (hash of the content and of the build settings), settings, counts, skipped files
    README.md    the dataset card: license, attribution, held-out combinations and templates

Pipeline per BVH: parse -> FK -> SMPL 22 joints in metres -> 20 fps -> windows of at most
`window_frames` features -> extract_features; its mirror comes from `mirror_features` with the
mirrored content label. Splits go by source file (its windows and mirror follow it). A bad file is
reported and skipped; the folder is assembled under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from easytune.config import add_config_args, config_from_args, config_to_dict
from easytune.errors import UserError
from easytune.fileio import write_json, write_text
from easytune.motion.dataset import content_stamp, tree_stamp


FORMAT = 1
LICENSE = "CC BY-NC 4.0"
ATTRIBUTION = ("Bandai Namco Research Motion dataset (Kobayashi et al. 2023, \"Motion Capture Dataset for "
               "Practical Use of AI-based Motion Editing and Stylization\", arXiv:2306.08861), "
               "https://github.com/BandaiNamcoResearchInc/Bandai-Namco-Research-Motiondataset")


@dataclass
class BuildConfig:
    """Settings of a dataset build; all of them enter the dataset's version stamp."""

    seed: int = field(default=0, metadata={"help": "seeds the splits, the held-out sets and the captions"})
    window_frames: int = field(default=196, metadata={"help": "max feature frames per motion (9.8 s at 20 fps, HumanML3D's max); longer clips become overlapping windows"})
    window_hop: int = field(default=98, metadata={"help": "frames between window starts: half a window, so every moment appears whole in some window"})
    min_frames: int = field(default=20, metadata={"help": "clips with fewer feature frames (1 s) are dropped and counted, too short to crop"})
    test_fraction: float = field(default=0.15, metadata={"help": "share of source files (of seen label combinations) in test"})
    val_fraction: float = field(default=0.10, metadata={"help": "share of source files in val, for early stopping"})
    heldout_combo_fraction: float = field(default=0.10, metadata={"help": "share of (content, style) combinations, and at most this share of files, kept out of training: the unseen test subset"})
    heldout_templates: list[int] = field(default_factory=lambda: [5, 6], metadata={"help": "caption template ids used only in test captions (unseen phrasings)"})
    captions_per_motion: int = field(default=3, metadata={"help": "paraphrases per motion from the seen templates (HumanML3D has about 3)"})
    mirror: bool = field(default=True, metadata={"help": "add each motion's mirror image with left/right swapped in labels and captions"})
    limit: int | None = field(default=None, metadata={"help": "read at most this many BVH files per source, for quick trial builds"})
    workers: int = field(default=1, metadata={"help": "processes for parsing and feature extraction (the archive is read in one stream)"})

    def validate(self) -> None:
        from easytune.motion.captions import TEMPLATES

        if self.min_frames < 2 or self.window_frames < self.min_frames:
            raise UserError(f"need 2 <= min_frames <= window_frames, got {self.min_frames} and {self.window_frames}.")
        if not 1 <= self.window_hop <= self.window_frames:
            raise UserError(f"window_hop must be in [1, window_frames={self.window_frames}], got {self.window_hop}.")
        for name in ("test_fraction", "val_fraction", "heldout_combo_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise UserError(f"{name} must be in [0, 1), got {v}.")
        if self.test_fraction + self.val_fraction >= 1.0:
            raise UserError("test_fraction + val_fraction must be below 1 so that something is left to train on.")
        bad = [t for t in self.heldout_templates if not 0 <= t < len(TEMPLATES)]
        if bad or len(set(self.heldout_templates)) >= len(TEMPLATES) - 1:
            raise UserError(f"heldout_templates must be distinct ids in [0, {len(TEMPLATES) - 1}] leaving at least "
                            f"2 for training, got {self.heldout_templates}.")
        if self.captions_per_motion < 1 or self.workers < 1 or (self.limit is not None and self.limit < 1):
            raise UserError("captions_per_motion and workers must be >= 1 and limit >= 1 (or unset).")


# --- one BVH -> motions ------------------------------------------------------------------------

@dataclass
class Motion:
    """One motion of the dataset (a window of a clip, or its mirror)."""

    name: str
    source: str  # BVH file name
    content: str  # as performed in THIS motion (mirrored for mirrors)
    style: str
    style_raw: str
    mirrored: bool
    window: tuple[int, int]  # [start, end) in 20 fps joint frames of the source clip
    frames: int  # feature frames


def process_entry(entry, cfg: BuildConfig) -> tuple[list[tuple[Motion, np.ndarray]], list[str], str | None]:
    """One BVHEntry -> ([(motion, features (T, 263) float32)], dropped label keys, error or None)."""
    from easytune.motion.bandai import parse_label, resample, to_smpl_joints, windows
    from easytune.motion.bvh import parse_bvh
    from easytune.motion.captions import CONTENT_PHRASES, STYLE_WORDS, mirror_content
    from easytune.motion.features import extract_features, mirror_features
    from easytune.motion.skeleton import FPS

    from easytune.motion.bvh import BadMeta

    try:
        if isinstance(entry.meta, BadMeta):
            raise UserError(f"{entry.source}: {entry.meta.reason}.")
        label = parse_label(entry.name, entry.meta)
        for kind, value, known in (("content", label.content, CONTENT_PHRASES), ("style", label.style, STYLE_WORDS)):
            if value not in known:
                raise UserError(f"{entry.source}: unknown {kind} label {value!r}; known: {sorted(known)}.")
        motion = parse_bvh(entry.text, entry.source)
        joints = resample(to_smpl_joints(motion), motion.fps, FPS)
        stem = entry.name[:-4]
        key = f"{label.content}/{label.style}"
        if joints.shape[0] - 1 < cfg.min_frames:
            return [], [key], None
        spans = windows(joints.shape[0], cfg.window_frames + 1, cfg.window_hop)
        out = []
        for k, (a, b) in enumerate(spans):
            feats = extract_features(joints[a:b])
            name = stem if len(spans) == 1 else f"{stem}_w{k:02d}"
            base = Motion(name, entry.name, label.content, label.style, label.style_raw, False, (a, b), len(feats))
            out.append((base, feats))
            if cfg.mirror:
                mir = dataclasses.replace(base, name="M" + name, content=mirror_content(label.content), mirrored=True)
                out.append((mir, mirror_features(feats).astype(np.float32)))
        return out, [], None
    except UserError as e:
        return [], [], str(e)


def _process_star(args):
    return process_entry(*args)


# --- splits -----------------------------------------------------------------------------------

def _combo_groups(combos: Iterable[tuple[str, str]]) -> list[tuple[tuple[str, str], ...]]:
    """Combinations grouped with their mirror image ((walk-left, x) with (walk-right, x))."""
    from easytune.motion.captions import mirror_content

    groups, done = [], set()
    for c in sorted(combos):
        if c in done:
            continue
        twin = (mirror_content(c[0]), c[1])
        group = tuple(sorted({c, twin}))
        done.update(group)
        groups.append(group)
    return groups


def choose_heldout_combos(sizes: dict[tuple[str, str], int], fraction: float, seed: int) -> set[tuple[str, str]]:
    """About `fraction` of the (content, style) combinations (`sizes`: combination -> source files),
    holding at most `fraction` of the files (big combinations would otherwise empty the training
    set), closed under mirroring (else a mirrored training clip would carry a held-out label), such
    that every content and every style still occurs in some training combination."""
    from easytune.motion.captions import mirror_content

    combos = set(sizes)
    target = int(round(fraction * len(combos)))
    file_budget = fraction * sum(sizes.values())
    everything = combos | {(mirror_content(a), b) for a, b in combos}
    rng = np.random.default_rng(seed)
    groups = _combo_groups(combos)
    held: set[tuple[str, str]] = set()
    for i in rng.permutation(len(groups)):
        if len(held) >= target:
            break
        trial = held | set(groups[i])
        if len(trial) > target + 1 or sum(sizes.get(c, 0) for c in trial) > max(file_budget, 1):
            continue
        rest = everything - trial
        if {a for a, _ in trial} <= {a for a, _ in rest} and {b for _, b in trial} <= {b for _, b in rest}:
            held = trial
    return held & combos


def assign_splits(sources: dict[str, tuple[str, str]], heldout: set[tuple[str, str]], test_fraction: float,
                  val_fraction: float, seed: int) -> dict[str, str]:
    """Source file -> "train" | "val" | "test". Held-out combinations all go to test; the others are
    stratified by combination: combinations and their files are shuffled (seeded) and laid end to end,
    then every file whose running share crosses an integer goes to test (systematic sampling, so
    each combination gets its share to within one file), and likewise for val among the rest."""
    rng = np.random.default_rng(seed + 1)
    by_combo: dict[tuple[str, str], list[str]] = defaultdict(list)
    for src, combo in sorted(sources.items()):
        by_combo[combo].append(src)
    order = [src for i in rng.permutation(len(by_combo))
             for combo in [sorted(by_combo)[i]] if combo not in heldout
             for src in rng.permutation(by_combo[combo]).tolist()]
    split = {src: "test" for src, combo in sources.items() if combo in heldout}
    rest: list[str] = []
    phase = rng.uniform()
    for k, src in enumerate(order):
        if np.floor(phase + (k + 1) * test_fraction) > np.floor(phase + k * test_fraction):
            split[src] = "test"
        else:
            rest.append(src)
    val_share = val_fraction / max(1e-9, 1.0 - test_fraction)
    phase = rng.uniform()
    for k, src in enumerate(rest):
        crossed = np.floor(phase + (k + 1) * val_share) > np.floor(phase + k * val_share)
        split[src] = "val" if crossed else "train"
    return split


# --- the build --------------------------------------------------------------------------------

def _entries(sources: list[tuple[str, Path]], cfg: BuildConfig, errors: list) -> Iterator:
    from easytune.motion.bvh import iter_archive, iter_folder

    for kind, path in sources:
        if kind == "archive":
            yield from iter_archive(path, limit=cfg.limit, errors=errors)
        else:
            yield from iter_folder(path, limit=cfg.limit, errors=errors)


def _check_out(out: Path) -> None:
    """--out is a new folder or a dataset this command built (it is replaced); nothing is created."""
    from easytune.inputs import check_output_path

    check_output_path(out, kind="dir")
    if out.exists() and not (out / "dataset.json").is_file():
        raise UserError(f"--out {out} exists and is not a dataset built by this command; choose a new --out folder "
                        f"(an existing built dataset there is replaced).")


def _missing_parents(path: Path) -> list[Path]:
    """The ancestors of `path` (itself included) that do not exist yet, innermost first."""
    missing = []
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    return missing


def _prepare_out(out: Path) -> Path:
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("new_joints", "new_joint_vecs", "texts"):
        (tmp / sub).mkdir(parents=True)
    return tmp


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished `tmp` with renames only: `out` is never a half-built dataset."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)


def build_dataset(sources: list[tuple[str, Path]], out: str | os.PathLike, cfg: BuildConfig,
                  *, description: str = "", license: str | None = None, attribution: str | None = None,
                  progress: bool = True) -> dict:
    """Build a dataset from `sources` [("archive" | "folder", path)] into `out`; return dataset.json.

    `license`/`attribution` of the source data go into dataset.json and the card.
    Bad files are skipped and listed (dataset.json "skipped"); UserError if nothing usable is left.
    """
    from tqdm import tqdm

    from easytune.motion.captions import TEMPLATES, sample_captions, text_line
    from easytune.motion.features import compute_mean_std, recover_from_ric, save_mean_std

    cfg.validate()
    t0 = time.perf_counter()
    out = Path(out)
    _check_out(out)
    for kind, path in sources:
        if not (path.is_file() if kind == "archive" else path.is_dir()):
            what = "a .tar/.tar.xz of BVH files" if kind == "archive" else "a folder of .bvh files"
            raise UserError(f"{path} does not exist or is not {what}.")
    made = _missing_parents(out.parent)  # created for the build, removed again if it fails
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _prepare_out(out)
    try:
        errors: list[tuple[str, str]] = []
        motions: list[Motion] = []
        dropped: Counter = Counter()
        sources_seen: set[str] = set()
        files_read = 0
        jobs = ((e, cfg) for e in _entries(sources, cfg, errors))
        pool = multiprocessing.get_context("spawn").Pool(cfg.workers) if cfg.workers > 1 else None
        results = pool.imap(_process_star, jobs, chunksize=4) if pool else map(_process_star, jobs)
        try:
            for items, drop, err in tqdm(results, desc="BVH clips", unit="clip", disable=not progress):
                files_read += 1
                if err:
                    errors.append(("", err))
                if items and items[0][0].source in sources_seen:
                    errors.append(("", f"{items[0][0].source}: a second file with this name; names must be unique."))
                    continue
                sources_seen.update(m.source for m, _ in items)
                dropped.update(drop)
                for m, feats in items:
                    np.save(tmp / "new_joint_vecs" / f"{m.name}.npy", feats)
                    np.save(tmp / "new_joints" / f"{m.name}.npy", recover_from_ric(feats).astype(np.float32))
                    motions.append(m)
        finally:
            if pool:
                pool.close()
                pool.join()
        if not motions:
            reasons = [msg if not src else f"{src}: {msg}" for src, msg in errors]
            more = f"; and {len(reasons) - 3} more" if len(reasons) > 3 else ""
            why = f" Problems: {'; '.join(r.rstrip('.') for r in reasons[:3])}{more}." if reasons else ""
            raise UserError(f"no usable motion in {', '.join(str(p) for _, p in sources)}: {files_read} BVH file(s) "
                            f"read, {len(errors)} skipped, {sum(dropped.values())} shorter than {cfg.min_frames} "
                            f"frames.{why}")

        # Splits by source file; held-out label combinations go to test entirely.
        src_combo = {m.source: (m.content, m.style) for m in motions if not m.mirrored}
        heldout = choose_heldout_combos(Counter(src_combo.values()), cfg.heldout_combo_fraction, cfg.seed)
        split_of = assign_splits(src_combo, heldout, cfg.test_fraction, cfg.val_fraction, cfg.seed)
        seen_templates = [t for t in range(len(TEMPLATES)) if t not in cfg.heldout_templates]

        labels, lists = {}, defaultdict(list)
        for m in sorted(motions, key=lambda m: m.name):
            split = split_of[m.source]
            caps = sample_captions(m.content, m.style, seen_templates, cfg.captions_per_motion, f"{cfg.seed}:{m.name}")
            if split == "test" and cfg.heldout_templates:
                caps += sample_captions(m.content, m.style, list(cfg.heldout_templates), 1, f"{cfg.seed}:{m.name}:unseen")
            write_text(tmp / "texts" / f"{m.name}.txt", "".join(text_line(c) + "\n" for _, c in caps))
            unseen = (m.content, m.style) in heldout
            labels[m.name] = {"content": m.content, "style": m.style, "style_raw": m.style_raw, "source": m.source,
                              "mirrored": m.mirrored, "window": list(m.window), "frames": m.frames, "split": split,
                              "caption_templates": [t for t, _ in caps], "unseen_combo": unseen}
            lists[split].append(m.name)
            if split == "test":
                lists["test_unseen" if unseen else "test_seen"].append(m.name)
        for split in ("train", "val", "test", "test_seen", "test_unseen"):
            write_text(tmp / f"{split}.txt", "".join(n + "\n" for n in lists[split]))
        write_json(tmp / "labels.json", labels)

        stat_names = lists["train"] or sorted(labels)  # a tiny build may have no train file
        mean, std = compute_mean_std([np.load(tmp / "new_joint_vecs" / f"{n}.npy") for n in stat_names])
        save_mean_std(tmp, mean, std)

        settings = {"format": FORMAT, "config": config_to_dict(cfg) | {"workers": None},
                    "sources": [os.path.basename(str(p)) for _, p in sources]}
        stamp = tree_stamp(tmp, settings)
        content = content_stamp(tmp, settings)
        skipped = [msg if not src else f"{src}: {msg}" for src, msg in errors]
        info = {
            "format": FORMAT, "stamp": stamp, "content_stamp": content, "settings": settings,
            "description": description, "license": license, "attribution": attribution,
            "counts": {"files_read": files_read, "motions": len(motions),
                       "splits": {k: len(v) for k, v in sorted(lists.items())},
                       "dropped_short": dict(sorted(dropped.items())), "skipped": len(skipped)},
            "heldout_combos": sorted(list(c) for c in heldout), "heldout_templates": list(cfg.heldout_templates),
            "templates": TEMPLATES, "skipped": skipped, "build_seconds": round(time.perf_counter() - t0, 1),
        }
        write_json(tmp / "dataset.json", info)
        write_text(tmp / "README.md", dataset_card(info, labels))
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
        raise
    return info


def dataset_card(info: dict, labels: dict) -> str:
    """README.md of a built dataset: what it is, how it was made, license and attribution."""
    stats = compute_stats_from_labels(labels)
    c = info["counts"]
    lines = [
        "# Motion dataset (HumanML3D layout)", "",
        f"Built by `{info['description'] or 'python -m easytune data build'}` (EasyTune Playground).",
        f"Version stamp: `{info['stamp']}` (checkpoints trained on it record this; loading refuses a mismatch).", "",
    ]
    if info.get("license"):
        lines += ["## License and attribution", "",
                  f"License: **{info['license']}** (https://creativecommons.org/licenses/by-nc/4.0/): "
                  "attribution required, non-commercial use only. Anything trained on this dataset must say so.", "",
                  f"Source: {info['attribution']}.", "",
                  "Changes: retargeted to the 22 SMPL joints, resampled from 30 to 20 fps, cut into windows of at "
                  "most 9.8 s, converted to HumanML3D's 263-d features, mirrored, captioned from the labels by "
                  "templates.", ""]
    lines += ["## Contents", "",
              f"- BVH files read: {c['files_read']}; skipped as bad: {c['skipped']}; dropped as shorter than "
              f"{info['settings']['config']['min_frames']} frames: {sum(c['dropped_short'].values())}",
              f"- motions: {c['motions']} ({stats['hours']:.2f} h at 20 fps), captions: {stats['captions']}",
              f"- splits: " + ", ".join(f"{k} {v}" for k, v in c["splits"].items()),
              f"- (content, style) combinations: {stats['combos']}", "",
              "## Held out of training", "",
              "Unseen combinations (all their files are in test_unseen.txt; mirror twins held out together): "
              + (", ".join(f"{a}/{b}" for a, b in info["heldout_combos"]) or "none"), "",
              "Unseen caption templates (used only for one extra caption of each test motion; "
              "labels.json lists each caption's template): "
              + (", ".join(f"{t}: `{info['templates'][t]}`" for t in info["heldout_templates"]) or "none"), "",
              "## Dropped short clips per label", ""]
    lines += [f"- {k}: {v}" for k, v in c["dropped_short"].items()] or ["- none"]
    if info["skipped"]:
        lines += ["", "## Skipped files", ""] + [f"- {s}" for s in info["skipped"]]
    return "\n".join(lines) + "\n"


def compute_stats_from_labels(labels: dict) -> dict:
    frames = sum(v["frames"] for v in labels.values())
    return {"hours": frames / 20 / 3600, "captions": sum(len(v["caption_templates"]) for v in labels.values()),
            "combos": len({(v["content"], v["style"]) for v in labels.values()})}


def dataset_stats(root: str | os.PathLike) -> dict:
    """Real statistics of a dataset folder (ours or HumanML3D's): motions, frames, hours per split,
    captions, vocabulary (distinct words), and label counts when labels.json exists."""
    from easytune.motion.captions import parse_text_line
    from easytune.motion.dataset import load_dataset_info

    _check_dataset_files(Path(root))
    info = load_dataset_info(root)
    root = Path(root)
    missing_splits = [s for s in ("train", "val", "test") if s not in info["splits"]]
    if missing_splits:
        raise UserError(f"dataset {root} lacks the split file(s) {', '.join(s + '.txt' for s in missing_splits)}; "
                        f"a dataset needs train.txt, val.txt and test.txt (rebuild it).")
    out: dict = {"root": str(root), "stamp": info["stamp"], "splits": {}}
    vocab: Counter = Counter()
    n_caps = 0
    all_frames = 0
    counted: set[str] = set()
    for split, ids in info["splits"].items():
        frames = n = 0
        missing = [i for i in ids if not (root / "new_joint_vecs" / f"{i}.npy").is_file()]
        if missing:
            raise UserError(f"dataset {root}: {len(missing)} motion(s) listed in {split}.txt have no "
                            f"new_joint_vecs/ file (e.g. {missing[0]}.npy); rebuild the dataset.")
        for i in ids:
            p = root / "new_joint_vecs" / f"{i}.npy"
            t = _feature_frames(p)
            frames += t
            n += 1
            if i not in counted and split in ("train", "val", "test"):
                counted.add(i)
                all_frames += t
                tp = root / "texts" / f"{i}.txt"
                if tp.is_file():
                    for line in _read_text(tp).splitlines():
                        if line.strip():
                            cap = parse_text_line(line)[0]
                            n_caps += 1
                            vocab.update(w.strip(".,!?;:\"'").lower() for w in cap.split())
        out["splits"][split] = {"motions": n, "frames": frames, "hours": round(frames / 20 / 3600, 3)}
    vocab.pop("", None)
    out.update({"motions": len(counted), "hours": round(all_frames / 20 / 3600, 3), "captions": n_caps,
                "vocabulary": len(vocab)})
    if info["labels"]:
        labels = info["labels"]
        out["contents"] = len({v["content"] for v in labels.values()})
        out["styles"] = len({v["style"] for v in labels.values()})
        out["combos"] = len({(v["content"], v["style"]) for v in labels.values()})
        out["source_files"] = len({v["source"] for v in labels.values()})
        out["sided_check"] = sided_check(root, labels)
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; the dataset is damaged (rebuild it).") from None


def _check_dataset_files(root: Path) -> None:
    """The dataset's JSON and split files are readable (what load_dataset_info reads unguarded)."""
    for name in ("labels.json", "dataset.json"):
        p = root / name
        if p.is_file():
            try:
                data = json.loads(_read_text(p))
            except json.JSONDecodeError as e:
                raise UserError(f"{p} is not valid JSON ({e.msg} at line {e.lineno}); the dataset is damaged "
                                f"(rebuild it).") from None
            if not isinstance(data, dict):
                raise UserError(f"{p} holds a {type(data).__name__}, not a JSON object; the dataset is damaged.")
            if name == "labels.json":
                bad = [k for k, v in data.items() if not (isinstance(v, dict) and all(
                    isinstance(v.get(f), str) for f in ("content", "style", "source")))]
                if bad:
                    raise UserError(f"{p}: {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} (e.g. {bad[0]!r}) "
                                    f"{'lacks' if len(bad) == 1 else 'lack'} "
                                    f"text 'content', 'style' and 'source'; the dataset is damaged (rebuild it).")
    for p in sorted(root.glob("*.txt")):
        _read_text(p)


def _dataset_array(path: Path, tail: tuple[int, ...], mmap: bool = False) -> np.ndarray:
    """One array file of a dataset with shape (frames, *tail); UserError if it is missing or damaged."""
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path} is not a readable .npy array ({e}); the dataset is damaged (rebuild it).") from None
    if array.ndim != 1 + len(tail) or array.shape[1:] != tail:
        raise UserError(f"{path} has shape {array.shape}, expected (frames, {', '.join(map(str, tail))}); the "
                        f"dataset is damaged (rebuild it).")
    return array


def _feature_frames(path: Path) -> int:
    """Frames of one new_joint_vecs/ file, read from its header."""
    return int(_dataset_array(path, (263,), mmap=True).shape[0])


def sided_check(root: Path, labels: dict) -> str:
    """Left/right sanity of a built dataset: among motions whose content names a hand
    (wave-left-hand, raise-up-right-hand, ...; mirrors included), how many move that wrist more
    than the other one, relative to the pelvis. "n/m" (m = 0: no such motion)."""
    from easytune.motion.skeleton import JOINT_NAMES

    wrist = {"left": JOINT_NAMES.index("left_wrist"), "right": JOINT_NAMES.index("right_wrist")}
    ok = total = 0
    for name, lab in labels.items():
        words = lab["content"].split("-")
        if "hand" not in words or ("left" in words) == ("right" in words):
            continue
        side, other = ("left", "right") if "left" in words else ("right", "left")
        j = _dataset_array(root / "new_joints" / f"{name}.npy", (22, 3))
        if not np.isfinite(j).all():
            raise UserError(f"{root / 'new_joints' / (name + '.npy')} has NaN or infinite values; the dataset is "
                            f"damaged (rebuild it).")
        travel = np.abs(np.diff(j - j[:, :1], axis=0)).sum(axis=(0, 2))
        ok += int(travel[wrist[side]] > travel[wrist[other]])
        total += 1
    return f"{ok}/{total}"


# --- CLI --------------------------------------------------------------------------------------

DEFAULT_ARCHIVES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bandai-namco"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from easytune.cli import HelpFormatter

    sub = parser.add_subparsers(dest="action", required=True, metavar="{build,stats}")
    build = sub.add_parser("build", help="build a dataset from BVH files")
    kinds = build.add_subparsers(dest="kind", required=True, metavar="{bandai,folder}")
    bandai = kinds.add_parser("bandai", help="from the Bandai Namco archives, read in place",
                              formatter_class=HelpFormatter)
    bandai.add_argument("--archives", type=Path, default=DEFAULT_ARCHIVES,
                        help="folder holding bandai-namco-*.tar.xz (or one archive)")
    folder = kinds.add_parser("folder", help="from a folder of BVH files with labels in names or JSON",
                              formatter_class=HelpFormatter)
    folder.add_argument("--src", type=Path, required=True, help="folder of .bvh files (searched recursively)")
    for p in (bandai, folder):
        p.add_argument("--out", type=Path, required=True, help="dataset folder to write (replaced if it is one)")
        add_config_args(p, BuildConfig)
    stats = sub.add_parser("stats", help="print a dataset's statistics (ours or HumanML3D's)")
    stats.add_argument("root", type=Path, help="dataset folder")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _archives(path: Path) -> list[tuple[str, Path]]:
    if path.is_file():
        return [("archive", path)]
    found = sorted(path.glob("bandai-namco-*.tar*")) if path.is_dir() else []
    if not found:
        raise UserError(f"no bandai-namco-*.tar.xz archive in {path}; pass --archives with the folder "
                        f"that holds them (e.g. ../shared/data/bandai-namco).")
    return [("archive", p) for p in found]


def _stamp_of(out: Path) -> str | None:
    """The stamp of the dataset built in `out` before, or None."""
    try:
        return json.loads((out / "dataset.json").read_text(encoding="utf-8")).get("stamp", "?")
    except (OSError, ValueError, AttributeError):
        return None


def run(args: argparse.Namespace) -> int:
    if args.action == "stats":
        s = dataset_stats(args.root)
        if args.json:
            print(json.dumps(s, indent=2))
        else:
            print(f"{s['root']}  stamp {s['stamp']}")
            for k, v in s.items():
                if k not in ("root", "stamp", "splits"):
                    print(f"  {k}: {v}")
            for split, v in s["splits"].items():
                print(f"  {split:<12} {v['motions']:>6} motions {v['frames']:>8} frames {v['hours']:>7} h")
        return 0
    cfg = config_from_args(BuildConfig, args)
    if args.kind == "bandai":
        sources = _archives(args.archives)
        desc = f"python -m easytune data build bandai --archives {args.archives} --out {args.out}"
    else:
        sources = [("folder", args.src)]
        desc = f"python -m easytune data build folder --src {args.src} --out {args.out}"
    t0 = time.perf_counter()
    bandai = args.kind == "bandai"
    replaced = _stamp_of(args.out)
    info = build_dataset(sources, args.out, cfg, description=desc, license=LICENSE if bandai else None,
                         attribution=ATTRIBUTION if bandai else None)
    c = info["counts"]
    print(f"wrote {args.out}: {c['motions']} motions from {c['files_read']} BVH files, splits {c['splits']}, "
          f"stamp {info['stamp']}, {time.perf_counter() - t0:.1f} s")
    if replaced is not None:
        print(f"replaced the dataset that was in {args.out} (stamp {replaced})")
    if info["skipped"]:
        print(f"skipped {len(info['skipped'])} file(s):")
        for s in info["skipped"]:
            print(f"  {s}")
    return 0
