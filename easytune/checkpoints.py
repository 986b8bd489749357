"""Checkpoints: safetensors weights + a JSON config, written atomically, and a registry of named ones.

A checkpoint is a folder:

    NAME/model.safetensors   weights (and buffers such as the dataset's Mean/Std), never pickle
    NAME/config.json         {"format", "kind", "config", "dataset", "meta"}
    NAME/README.md           the model card (optional for run checkpoints, required for demo ones)
    NAME/train_state.*       optional: optimizer state + step, for resuming a run

`kind` says what it holds ("base", "reward", "evaluator", "finetune", "lora", ...); `config` is the
resolved config of the module that made it; `dataset` records the dataset's version stamp, so that
loading against a different dataset is refused with a clear message; `meta` holds free provenance
(command, seed, steps, wall time, parent checkpoint for fine-tunes and LoRA adapters).

The registry is a scan, not a second copy of this state: every folder with a config.json under the
checkpoint roots (the repo's demo_checkpoints/, then $EASYTUNE_CHECKPOINTS, `:`-separated) is a named
checkpoint; its name is its folder name (hidden folders, e.g. a registration in progress, are not).
`register` is the one way in: a plain name, never replacing a checkpoint unless asked and never by
another kind, all or nothing (built in a temporary folder beside the target, loaded, then renamed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from easytune.errors import UserError
from easytune.fileio import atomic_path, write_json, write_text

FORMAT = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAIN_STATE = "train_state.safetensors"
TRAIN_STATE_JSON = "train_state.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_ROOT = REPO_ROOT / "demo_checkpoints"
KINDS = ("base", "reward", "evaluator", "finetune", "lora")  # what the project's commands write


@dataclass
class Checkpoint:
    """A loaded checkpoint: its folder, its config.json, and its tensors."""

    path: Path
    info: dict[str, Any]
    state: dict[str, torch.Tensor] = field(repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> str:
        return self.info["kind"]

    @property
    def config(self) -> dict[str, Any]:
        return self.info.get("config", {})

    @property
    def dataset(self) -> dict[str, Any]:
        return self.info.get("dataset") or {}

    @property
    def meta(self) -> dict[str, Any]:
        return self.info.get("meta") or {}


def save_checkpoint(directory: str | os.PathLike, state: dict[str, torch.Tensor], *, kind: str,
                    config: dict[str, Any], dataset: dict[str, Any] | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write weights then config, each atomically; a reader never sees a half-written checkpoint."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"kind": kind, "format": str(FORMAT)})
    info = {"format": FORMAT, "kind": kind, "config": config, "dataset": dataset or {}, "meta": meta or {}}
    write_json(directory / CONFIG, info)
    return directory


def _roots() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("EASYTUNE_CHECKPOINTS", "").split(":") if p]
    return [DEMO_ROOT, *extra]


def list_checkpoints(roots: list[Path] | None = None) -> list[dict[str, Any]]:
    """Every checkpoint folder under the roots (one level deep): name, kind, path, parent."""
    found = []
    for root in roots if roots is not None else _roots():
        if not root.is_dir():
            continue
        for cfg in sorted(root.glob(f"*/{CONFIG}")):
            if cfg.parent.name.startswith("."):
                continue  # a registration in progress (or one a crash left): never a name
            try:
                info = json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                info = None
            if not isinstance(info, dict):
                continue  # a corrupt entry is reported when someone loads it, not while listing
            found.append({"name": cfg.parent.name, "kind": info.get("kind", "?"), "path": str(cfg.parent),
                          "parent": (info.get("meta") or {}).get("parent")})
    return found


def resolve(name_or_path: str | os.PathLike, roots: list[Path] | None = None) -> Path:
    """A checkpoint folder from a path or a registry name; a clear error listing the names otherwise."""
    p = Path(name_or_path)
    if p.is_file() and p.name in (WEIGHTS, CONFIG):
        p = p.parent
    if (p / CONFIG).is_file():
        return p
    for entry in list_checkpoints(roots):
        if entry["name"] == str(name_or_path):
            return Path(entry["path"])
    names = ", ".join(e["name"] for e in list_checkpoints(roots)) or "none"
    raise UserError(f"checkpoint {str(name_or_path)!r} not found: not a checkpoint folder (with {CONFIG}) "
                    f"and not a registered name (known: {names})")


def load_checkpoint(name_or_path: str | os.PathLike, *, kind: str | None = None,
                    roots: list[Path] | None = None) -> Checkpoint:
    """Load config + weights; a missing file, corrupt file or wrong kind raises UserError."""
    path = resolve(name_or_path, roots)
    try:
        info = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"checkpoint {path}: {CONFIG} is not valid JSON ({e})") from None
    if not isinstance(info, dict) or "kind" not in info:
        raise UserError(f"checkpoint {path}: {CONFIG} has no 'kind'; is this an EasyTune checkpoint?")
    if info.get("format", 0) > FORMAT:
        raise UserError(f"checkpoint {path} has format {info['format']}; this code reads format <= {FORMAT}")
    if kind is not None and info["kind"] != kind:
        raise UserError(f"checkpoint {path} holds a {info['kind']!r} model, expected {kind!r}")
    weights = path / WEIGHTS
    if not weights.is_file():
        raise UserError(f"checkpoint {path}: {WEIGHTS} is missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"checkpoint {path}: {WEIGHTS} is corrupt or truncated ({e})") from None
    return Checkpoint(path=path, info=info, state=state)


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str = "checkpoint",
                 prefix: str = "", may_lack: tuple[str, ...] = ()) -> list[str]:
    """Strictly load `state` (keys under `prefix`) into `module`, naming every missing, extra or
    mis-shaped tensor instead of torch's long error. Tensors under the `may_lack` prefixes may be absent
    from `state` (they keep the module's own init); returns their names."""
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    kept = sorted(k for k in set(own) - set(state) if k.startswith(may_lack)) if may_lack else []
    state = {**state, **{k: own[k] for k in kept}}
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    problems = []
    if shapes:
        problems.append("shape mismatch for " + "; ".join(shapes[:5]) + (" ..." if len(shapes) > 5 else ""))
    if missing:
        problems.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
    if extra:
        problems.append(f"unexpected {len(extra)} tensors (e.g. {', '.join(extra[:3])})")
    if problems:
        raise UserError(f"{source} does not fit this model: " + "; ".join(problems)
                        + ". Was it trained with a different config?")
    module.load_state_dict(state, strict=True)
    return kept


def same_dataset(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two dataset records ({"stamp", "content_stamp"}, as checkpoints and MotionDataset hold them)
    name the same dataset: equal byte stamps, or equal content stamps (the byte stamp also hashes float files
    whose last bits differ between CPUs; easytune.motion.dataset.content_stamp). Unknown (None) matches anything."""
    a, b = a or {}, b or {}
    if not a.get("stamp") or not b.get("stamp") or a["stamp"] == b["stamp"]:
        return True
    return bool(a.get("content_stamp")) and a.get("content_stamp") == b.get("content_stamp")


def check_dataset(ckpt: Checkpoint, dataset: str | dict[str, Any] | None) -> None:
    """Refuse to use a checkpoint with a dataset other than the one it was trained on. `dataset` is a stamp, or a
    record {"stamp", "content_stamp", optional "mean"/"std"}: when only the content stamps match, the checkpoint's
    Mean/Std (if it keeps them) must equal the dataset's too."""
    record = {"stamp": dataset} if isinstance(dataset, str) or dataset is None else dataset
    if not same_dataset(ckpt.dataset, record):
        raise UserError(f"checkpoint {ckpt.path} was trained on dataset {ckpt.dataset.get('stamp')}, but the dataset "
                        f"given has stamp {record.get('stamp')}; its Mean/Std and labels would not match. Use the same "
                        f"dataset or retrain.")
    if ckpt.dataset.get("stamp") != record.get("stamp") and "mean" in ckpt.state and record.get("mean") is not None:
        import numpy as np

        for key in ("mean", "std"):
            if not np.allclose(ckpt.state[key].float().cpu().numpy(), np.asarray(record[key]), atol=1e-5):
                raise UserError(f"checkpoint {ckpt.path} and the dataset given (stamp {record.get('stamp')}) have "
                                f"the same labels and captions but a different {key.capitalize()}; retrain on it.")


def file_hash(path: str | os.PathLike, length: int = 16) -> str:
    """Content hash of a file (e.g. a checkpoint's weights), for caches keyed by checkpoint."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def checkpoint_hash(name_or_path: str | os.PathLike) -> str:
    path = resolve(name_or_path)
    return file_hash(path / WEIGHTS)


BANDAI_LICENSE = ("Trained on the Bandai-Namco Research Motion dataset (Kobayashi et al. 2023, arXiv:2306.08861), "
                  "CC BY-NC 4.0: these weights are CC BY-NC 4.0 too (non-commercial use, with attribution).")


def write_model_card(directory: str | os.PathLike, title: str, sections: dict[str, str], *,
                     license_text: str = BANDAI_LICENSE) -> None:
    """README.md beside a checkpoint: a title, `## section` blocks (data, command, seed, metrics) and
    the license of the data it was trained on."""
    body = [f"# {title}", ""]
    for name, text in sections.items():
        body += [f"## {name}", text.strip(), ""]
    body += ["## License", license_text, ""]
    write_text(Path(directory) / "README.md", "\n".join(body))


# --- resumable training state: optimizer tensors in safetensors, the rest in JSON --------------

def save_train_state(directory: str | os.PathLike, optimizer: torch.optim.Optimizer,
                     extra: dict[str, Any], extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Save the optimizer state (and e.g. step, RNG, EMA tensors) next to a checkpoint for resuming."""
    directory = Path(directory)
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    with atomic_path(directory / TRAIN_STATE) as tmp:
        save_file(tensors, str(tmp))
    write_json(directory / TRAIN_STATE_JSON,
               {"param_groups": sd["param_groups"], "scalars": scalars, "extra": extra})


def load_train_state(directory: str | os.PathLike, optimizer: torch.optim.Optimizer | None
                     ) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """Restore the optimizer in place; return (extra, extra_tensors), or None if there is no state."""
    directory = Path(directory)
    if not (directory / TRAIN_STATE).is_file() or not (directory / TRAIN_STATE_JSON).is_file():
        return None
    meta = json.loads((directory / TRAIN_STATE_JSON).read_text(encoding="utf-8"))
    tensors = load_file(str(directory / TRAIN_STATE))
    if optimizer is not None:
        state: dict[int, dict[str, Any]] = {}
        for key, v in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        for idx, sc in meta["scalars"].items():
            state.setdefault(int(idx), {}).update(sc)
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    extra_tensors = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return meta["extra"], extra_tensors


# --- promoting a run's checkpoint into the registry -------------------------------------------

def provenance(path: str | os.PathLike) -> str:
    """A model-card section built from a checkpoint's config.json: dataset stamp, command, seed,
    steps, wall time, parameter count, file size and hash (so the card cannot drift from the file)."""
    path = resolve(path)
    info = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    meta, dataset = info.get("meta") or {}, info.get("dataset") or {}
    weights = path / WEIGHTS
    rows = [("kind", info.get("kind")), ("dataset stamp", dataset.get("stamp")),
            ("command", f"`{meta['command']}`" if meta.get("command") else None), ("seed", meta.get("seed")),
            ("steps", meta.get("steps")), ("parameters", meta.get("parameters")),
            ("wall time", f"{meta['wall_s'] / 60:.1f} min" if meta.get("wall_s") is not None else None),
            ("parent", meta.get("parent") or meta.get("init")),
            ("default sampler", _sampler_text((info.get("config") or {}).get("sampling"))),
            ("weights", f"{weights.stat().st_size / 2**20:.1f} MiB, sha256 {file_hash(weights)}")]
    lines = [f"- {k}: {v}" for k, v in rows if v not in (None, "")]
    return "\n".join(lines)


def _sampler_text(sampling: dict[str, Any] | None) -> str | None:
    if not sampling:
        return None
    return ", ".join(f"{k} {sampling[k]}" for k in ("steps", "guidance", "eta") if k in sampling)


def parse_sampling(items: list[str] | None) -> dict[str, Any]:
    """["steps=20", "guidance=2.5"] -> {"steps": 20, "guidance": 2.5}, each value checked."""
    from easytune.diffusion import check_guidance, check_steps

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if key not in ("steps", "guidance", "eta"):
            raise UserError(f"unknown sampler setting {item!r}; use steps=N, guidance=G or eta=E")
        try:
            number = int(value) if key == "steps" else float(value)
        except ValueError:
            raise UserError(f"sampler setting {item!r} must look like steps=20, guidance=2.5 or eta=0") from None
        if key == "steps":
            out[key] = check_steps(number)
        elif key == "guidance":
            out[key] = check_guidance(number)
        elif not 0.0 <= number <= 1.0:
            raise UserError(f"eta must be in [0, 1], got {value}")
        else:
            out[key] = number
    return out


def _copied(src: Path) -> list[Path]:
    """The files of a checkpoint folder that a registered copy keeps: top-level weights, JSON and
    Markdown; not the optimizer state (train_state.*) and not hidden or temporary files."""
    return [f for f in sorted(src.iterdir())
            if f.is_file() and not f.name.startswith(("train_state", ".")) and f.suffix in (".safetensors", ".json", ".md")]


def _kind_of(path: Path) -> str | None:
    """The kind in `path`/config.json, or None when it is missing or unreadable."""
    try:
        info = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return info.get("kind") if isinstance(info, dict) else None


def register(src_dir: str | os.PathLike, name: str, *, root: str | os.PathLike | None = None, replace: bool = False,
             edit: Callable[[Path], None] | None = None) -> Path:
    """Register the checkpoint folder `src_dir` (a run, or a folder a fine-tune just wrote) as
    `root`/`name`, all or nothing, and return the new folder.

    `root` defaults to demo_checkpoints/. `name` must be a plain name (inputs.check_registry_name). An existing `root`/`name` is replaced only
    with `replace=True`, and only by a checkpoint of the same kind; a name taken in another registry
    root is refused. The copy is built in a hidden temporary folder beside the target, `edit(tmp)` may
    change it (a new default sampler, the card), it must then load (config, kind, weights), and only
    then is it renamed into place. Any failure leaves the registry exactly as it was.
    """
    import shutil
    import tempfile

    from easytune.inputs import check_registry_name

    name = check_registry_name(name)
    root = Path(DEMO_ROOT if root is None else root)
    src = resolve(src_dir)
    kind = load_checkpoint(src).kind  # refuses a corrupt source before anything is copied
    dst = root / name
    for other in _roots():
        if other.resolve() != root.resolve() and (other / name / CONFIG).is_file():
            raise UserError(f"checkpoint name {name!r} is already taken by {other / name}; choose another name.")
    if dst.exists() or dst.is_symlink():
        old_kind = _kind_of(dst) if dst.is_dir() and not dst.is_symlink() else None
        if old_kind is None:
            raise UserError(f"{dst} exists and is not a readable checkpoint; choose another name (nothing was "
                            f"changed).")
        if not replace:
            raise UserError(f"checkpoint {name!r} already exists in {root} (a {old_kind!r} model); choose another "
                            f"name or ask to replace it (--replace).")
        if old_kind != kind:
            raise UserError(f"checkpoint {name!r} in {root} holds a {old_kind!r} model; it cannot be replaced by a "
                            f"{kind!r} model. Choose another name.")
        if dst.resolve() == src.resolve():
            raise UserError(f"{src} is already registered as {name!r}; nothing to do.")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.registering-", dir=root))
    old = root / f".{name}.replaced-{os.getpid()}"
    try:
        for f in _copied(src):
            shutil.copyfile(f, tmp / f.name)
        if edit is not None:
            edit(tmp)
        load_checkpoint(tmp, kind=kind)  # the copy loads: valid config, same kind, readable weights
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; registered folders get normal permissions
        if dst.exists():
            os.rename(dst, old)
            try:
                os.rename(tmp, dst)
            except BaseException:
                os.rename(old, dst)
                raise
            shutil.rmtree(old)
        else:
            try:
                os.rename(tmp, dst)
            except OSError as e:  # another registration took the name meanwhile (dst now not empty)
                raise UserError(f"checkpoint {name!r} appeared in {root} while registering ({e.strerror}); "
                                f"nothing was changed.") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def promote(run_dir: str | os.PathLike, name: str, root: str | os.PathLike | None = None,
            sampling: dict[str, Any] | None = None, *, replace: bool = False) -> Path:
    """Register a run's checkpoint (weights, config, card, JSON reports; not the optimizer state) as
    root/name through `register` (all or nothing; an existing name only with `replace`, same kind), and
    append a Provenance section to its card. `sampling` overrides the checkpoint's default sampler
    (steps, guidance, eta), e.g. after measuring quality against sampling time."""
    src = resolve(run_dir)
    if sampling and not isinstance((_read_info(src).get("config") or {}).get("sampling"), dict):
        raise UserError(f"{src} has no default sampler to change (only base and fine-tuned checkpoints do)")

    def edit(tmp: Path) -> None:
        if sampling:
            info = _read_info(tmp)
            info["config"]["sampling"].update(sampling)
            write_json(tmp / CONFIG, info)
        card = (tmp / "README.md").read_text(encoding="utf-8") if (tmp / "README.md").is_file() else f"# {name}\n"
        marker = "\n## Provenance\n"
        card = card.split(marker)[0].rstrip() + "\n" + marker + provenance(tmp) + "\n"
        write_text(tmp / "README.md", card)

    return register(src, name, root=root, replace=replace, edit=edit)


def _read_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"checkpoint {path}: {CONFIG} is not valid JSON ({e})") from None
    if not isinstance(info, dict):
        raise UserError(f"checkpoint {path}: {CONFIG} does not hold a JSON object")
    return info


# --- `python -m easytune checkpoints` ----------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", default=None, help=f"only list checkpoints of this kind ({', '.join(KINDS)})")
    parser.add_argument("--promote", default=None, metavar="RUN_DIR",
                        help="copy this run's checkpoint into demo_checkpoints/ (needs --name)")
    parser.add_argument("--name", default=None, help="registry name for --promote: letters, digits, '.', '_', '-'")
    parser.add_argument("--replace", action="store_true",
                        help="with --promote: replace an existing checkpoint of that name (same kind only)")
    parser.add_argument("--sampling", nargs="+", default=None, metavar="KEY=VALUE",
                        help="with --promote: new default sampler, e.g. steps=20 guidance=2.5 eta=0")


def run(args: argparse.Namespace) -> int:
    from easytune.inputs import check_registry_name

    if (args.sampling or args.replace or args.name) and not args.promote:
        raise UserError("--name, --replace and --sampling only apply with --promote RUN_DIR --name NAME")
    if args.promote:
        if args.kind:
            raise UserError("--kind filters the listing; it does not apply with --promote")
        if not args.name:
            raise UserError("--promote needs --name (the checkpoint's registry name)")
        check_registry_name(args.name)
        sampling = parse_sampling(args.sampling)
        print(f"promoted to {promote(args.promote, args.name, sampling=sampling, replace=args.replace)}")
        return 0
    entries = list_checkpoints()
    known = sorted(set(KINDS) | {e["kind"] for e in entries})
    if args.kind is not None and args.kind not in known:
        raise UserError(f"unknown --kind {args.kind!r}; kinds are {', '.join(known)}")
    rows = [e for e in entries if args.kind in (None, e["kind"])]
    if not rows:
        what = f"{args.kind!r} checkpoints" if args.kind else "checkpoints"
        print(f"no {what} found under " + ", ".join(str(r) for r in _roots()))
        return 0
    width = max(len(e["name"]) for e in rows)
    for e in rows:
        parent = f"  (from {e['parent']})" if e["parent"] else ""
        print(f"{e['name'].ljust(width)}  {e['kind']:<10} {e['path']}{parent}")
    return 0
