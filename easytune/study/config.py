"""A study's configuration: a YAML file, checked field by field, with a canonical JSON form and hash.

    name: walk_vs_easytune          # slug: a-z, 0-9, '_' and '-', 1 to 40 characters
    prompts:                        # 1 to 200 distinct prompts, each at most 300 characters
      - a person walks forward
      - a person jumps twice
    checkpoints: [base, easytune]   # exactly two different registry names (generators)
    seeds: [0, 1]                   # noise seeds; one pair per (prompt, seed)
    seconds: 4                      # motion length, 1 to 9.8 s
    steps: null                     # DDIM steps; null = each checkpoint's own default
    guidance: null                  # guidance scale; null = each checkpoint's own default
    attention_checks: 2             # extra pairs that check the rater is paying attention

The config hash (sha256 of the canonical JSON) is the study's identity: votes were cast on what
this configuration produced, so it cannot change under them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from easytune.errors import UserError

NAME_RE = re.compile(r"[a-z0-9_-]{1,40}")
MAX_PROMPTS = 200
MAX_PROMPT_CHARS = 300
MAX_SEEDS = 20
SEED_MAX = 2**32 - 1  # as easytune.inputs.check_seed
MIN_SECONDS, MAX_SECONDS = 1.0, 9.8  # easytune.generate's range (20 to 196 frames)
MIN_STEPS, MAX_STEPS = 1, 1000  # easytune.diffusion.check_steps
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 20.0  # easytune.diffusion.check_guidance
MAX_ATTENTION_CHECKS = 50
GENERATOR_KINDS = ("base", "finetune", "lora")  # what easytune.generate.load_base accepts


@dataclass(frozen=True)
class StudyConfig:
    name: str  # the study's key in the database and its media folder name
    prompts: tuple[str, ...]  # shown to raters; whitespace collapsed
    checkpoints: tuple[str, str]  # registry names; motion "a" comes from the first, "b" from the second
    seeds: tuple[int, ...] = (0,)  # one pair per (prompt, seed), both sides from the same starting noise
    seconds: float = 4.0  # length of every motion
    steps: int | None = None  # None = each checkpoint's sampling default (resolved when the study is prepared)
    guidance: float | None = None
    attention_checks: int = 2  # alternately a repeat (sides swapped) and a mismatch (wrong-prompt motion)

    @property
    def normal_pairs(self) -> int:
        return len(self.prompts) * len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompts"], d["checkpoints"], d["seeds"] = list(self.prompts), list(self.checkpoints), list(self.seeds)
        return d


FIELDS = ("name", "prompts", "checkpoints", "seeds", "seconds", "steps", "guidance", "attention_checks")


def canonical_json(cfg: StudyConfig) -> str:
    """Sorted keys, no spaces, floats as floats: equal configs give equal text."""
    return json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(cfg: StudyConfig) -> str:
    return hashlib.sha256(canonical_json(cfg).encode("utf-8")).hexdigest()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _name(v: Any) -> str:
    if not isinstance(v, str) or not NAME_RE.fullmatch(v):
        raise UserError(f"study 'name' must be 1 to 40 characters of a-z, 0-9, '_' or '-', got {v!r}")
    return v


def _prompts(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_PROMPTS:
        got = f"{len(v)} items" if isinstance(v, list) else type(v).__name__
        raise UserError(f"study 'prompts' must be a list of 1 to {MAX_PROMPTS} texts, got {got}")
    out: list[str] = []
    for i, p in enumerate(v, 1):
        if not isinstance(p, str) or not p.strip():
            raise UserError(f"study 'prompts' item {i} is {'empty' if isinstance(p, str) else 'not text'}; "
                            f"every prompt must be a non-empty text")
        p = " ".join(p.split())
        if len(p) > MAX_PROMPT_CHARS:
            raise UserError(f"study 'prompts' item {i} has {len(p)} characters; the limit is {MAX_PROMPT_CHARS}")
        if not any(ch.isalnum() for ch in p):
            raise UserError(f"study 'prompts' item {i} ({p[:40]!r}) has no letter or digit; describe a motion in words")
        if p in out:
            raise UserError(f"study 'prompts' item {i} ({p[:60]!r}) repeats item {out.index(p) + 1}; "
                            f"each prompt must appear once")
        out.append(p)
    return tuple(out)


def _checkpoints(v: Any) -> tuple[str, str]:
    if not isinstance(v, list) or len(v) != 2 or not all(isinstance(c, str) and c for c in v):
        raise UserError(f"study 'checkpoints' must be a list of exactly two registry names, got {v!r}")
    if v[0] == v[1]:
        raise UserError(f"study 'checkpoints' names {v[0]!r} twice; a study compares two different checkpoints")
    from easytune.checkpoints import list_checkpoints  # imports torch: only when a config is checked

    known = {e["name"]: e["kind"] for e in list_checkpoints()}
    for c in v:
        if c not in known:
            names = ", ".join(n for n, k in known.items() if k in GENERATOR_KINDS) or "none"
            raise UserError(f"study 'checkpoints' entry {c!r} is not a registered checkpoint (generators: {names})")
        if known[c] not in GENERATOR_KINDS:
            raise UserError(f"study 'checkpoints' entry {c!r} is a {known[c]!r} checkpoint; a study compares "
                            f"motion generators ({', '.join(GENERATOR_KINDS)})")
    return v[0], v[1]


def _seeds(v: Any) -> tuple[int, ...]:
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_SEEDS:
        raise UserError(f"study 'seeds' must be a list of 1 to {MAX_SEEDS} integers, got {v!r}")
    for s in v:
        if not _is_int(s) or not 0 <= s <= SEED_MAX:
            raise UserError(f"study 'seeds' entries must be integers from 0 to {SEED_MAX}, got {s!r}")
    if len(set(v)) != len(v):
        raise UserError(f"study 'seeds' repeats a seed ({v!r}); each seed must appear once")
    return tuple(v)


def _seconds(v: Any) -> float:
    if not _is_number(v) or not MIN_SECONDS <= v <= MAX_SECONDS:
        raise UserError(f"study 'seconds' must be a number from {MIN_SECONDS:g} to {MAX_SECONDS:g}, got {v!r}")
    return float(v)


def _steps(v: Any) -> int | None:
    if v is not None and (not _is_int(v) or not MIN_STEPS <= v <= MAX_STEPS):
        raise UserError(f"study 'steps' must be an integer from {MIN_STEPS} to {MAX_STEPS} (or null for the "
                        f"checkpoint's default), got {v!r}")
    return v


def _guidance(v: Any) -> float | None:
    if v is not None and (not _is_number(v) or not MIN_GUIDANCE <= v <= MAX_GUIDANCE):
        raise UserError(f"study 'guidance' must be a number from {MIN_GUIDANCE:g} to {MAX_GUIDANCE:g} (or null "
                        f"for the checkpoint's default), got {v!r}")
    return None if v is None else float(v)


def _attention_checks(v: Any, normal: int) -> int:
    if not _is_int(v) or not 0 <= v <= MAX_ATTENTION_CHECKS:
        raise UserError(f"study 'attention_checks' must be an integer from 0 to {MAX_ATTENTION_CHECKS}, got {v!r}")
    if (v + 1) // 2 > normal:  # each repeat check repeats a different normal pair
        raise UserError(f"study 'attention_checks' is {v}, but its {(v + 1) // 2} repeat checks need as many "
                        f"normal pairs and there are {normal} (prompts x seeds); use at most {2 * normal}")
    return v


def parse_config(data: Any) -> StudyConfig:
    """A checked StudyConfig from a mapping (e.g. parsed YAML); UserError naming the field otherwise."""
    if not isinstance(data, dict):
        raise UserError(f"a study configuration must be a mapping of key: value, got {type(data).__name__}")
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise UserError(f"unknown study setting {str(unknown[0])!r}; allowed are {', '.join(FIELDS)}")
    for key in ("name", "prompts", "checkpoints"):
        if key not in data:
            raise UserError(f"study setting {key!r} is missing; a study needs name, prompts and checkpoints")
    name, prompts = _name(data["name"]), _prompts(data["prompts"])
    seeds = _seeds(data.get("seeds", [0]))
    return StudyConfig(name=name, prompts=prompts, checkpoints=_checkpoints(data["checkpoints"]), seeds=seeds,
                       seconds=_seconds(data.get("seconds", 4.0)), steps=_steps(data.get("steps")),
                       guidance=_guidance(data.get("guidance")),
                       attention_checks=_attention_checks(data.get("attention_checks", 2),
                                                          len(prompts) * len(seeds)))


def load_config(path: str | Path) -> StudyConfig:
    """Read and check a study YAML (or JSON) file."""
    from easytune.inputs import read_config_file  # size limit, UTF-8, yaml.safe_load, one-sentence errors

    return parse_config(read_config_file(path))


def config_from_json(text: str) -> StudyConfig:
    """The StudyConfig stored in the database (canonical JSON), without re-checking the registry:
    a stored study stays readable even after its checkpoints are renamed or removed."""
    d = json.loads(text)
    return StudyConfig(name=d["name"], prompts=tuple(d["prompts"]), checkpoints=tuple(d["checkpoints"]),
                       seeds=tuple(d["seeds"]), seconds=float(d["seconds"]), steps=d["steps"],
                       guidance=d["guidance"], attention_checks=int(d["attention_checks"]))
