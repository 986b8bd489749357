"""One recipe at several seeds: each seed's validation row, its composition probe and, where it was run, its test row
over the first N replications (so rows evaluated with 3 and with 5 replications compare like for like).

    python scripts/seed_spread.py --replications 3 --rows \
        s0=docs/recipes/k3x350m10lr3/selection_composition.json:250,docs/recipes/k3x350m10lr3/selection_composition.json:250,docs/recipes/k3x350m10lr3_step250_test \
        s3=docs/recipes/k3x350m10lr3s3/step250_val,docs/recipes/k3x350m10lr3s3/probe.md:step_00250,docs/recipes/k3x350m10lr3s3_step250_test3

Each row: NAME=VAL,PROBE[,TEST]. VAL is an `evaluate --split val` folder (its results.json, first replication) or
a `finetune select` JSON and a step (`FILE:STEP`); PROBE is a `finetune select --rule composition` JSON and a step, or
a `scripts/composition_probe.py` table saved as markdown and a text its checkpoint cell contains (`FILE:TEXT`);
TEST is an `evaluate` folder on the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VAL = [("R-Precision top-1", "R@1", 3), ("FID", "FID", 3), ("MultiModality", "MultiModality", 3)]
TEST = [("R-Precision top-1", "R@1", 3), ("MM-Dist", "MM-Dist", 3), ("FID", "FID", 3),
        ("MM-Dist (seen)", "MM-Dist seen", 3), ("MM-Dist (unseen)", "MM-Dist unseen", 3), ("FID (unseen)", "FID unseen", 3)]


def _json(path: Path) -> dict:
    file = path / "results.json" if path.is_dir() else path
    return json.loads(file.read_text(encoding="utf-8"))


def _split(spec: str) -> tuple[Path, str]:
    path, _, key = spec.rpartition(":")
    if not path:
        raise SystemExit(f"{spec}: expected FILE:STEP or FILE:TEXT")
    return Path(path), key


def _selection_row(path: Path, step: str) -> dict:
    rows = [r for r in _json(path)["rows"] if r["step"] == int(step)]
    if not rows:
        raise SystemExit(f"{path} has no step {step}")
    return rows[0]


def val_row(spec: str) -> dict:
    if ":" in Path(spec).name:
        return _selection_row(*_split(spec))
    return {k: v[0] for k, v in _json(Path(spec))["rows"]["generated"].items()}


def probe(spec: str) -> float:
    path, key = _split(spec)
    if path.suffix == ".json":
        return float(_selection_row(path, key)["MM-Dist (absent)"])
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and key in cells[0]:
            return float(cells[2])  # | checkpoint | R@1 | MM-Dist |
    raise SystemExit(f"{path}: no probe row whose checkpoint contains {key!r}")


def test_means(spec: str, n: int) -> dict:
    gen = _json(Path(spec))["rows"]["generated"]
    short = [k for k, _, _ in TEST if len(gen[k]) < n]
    if short:
        raise SystemExit(f"{spec}: fewer than {n} replications of {short}")
    return {k: sum(gen[k][:n]) / n for k, _, _ in TEST}


def table(rows: list[str], n: int) -> str:
    names = [f"val {label}" for _, label, _ in VAL] + ["MM-Dist (absent)"] + [f"test {label}" for _, label, _ in TEST]
    lines = ["| seed | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for spec in rows:
        name, _, paths = spec.partition("=")
        parts = paths.split(",")
        if len(parts) not in (2, 3):
            raise SystemExit(f"{spec}: expected NAME=VAL,PROBE[,TEST]")
        v = val_row(parts[0])
        cells = [f"{v[k]:.{d}f}" for k, _, d in VAL] + [f"{probe(parts[1]):.3f}"]
        t = test_means(parts[2], n) if len(parts) == 3 else None
        cells += [f"{t[k]:.{d}f}" if t else "" for k, _, d in TEST]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", required=True, metavar="NAME=VAL,PROBE[,TEST]")
    p.add_argument("--replications", type=int, default=3, help="test replications to average (the first N)")
    args = p.parse_args(argv)
    if args.replications < 1:
        p.error("--replications must be at least 1")
    print(table(args.rows, args.replications))
    return 0


if __name__ == "__main__":
    sys.exit(main())
