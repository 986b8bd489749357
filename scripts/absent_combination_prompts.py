"""Training prompts for the (content, style) combinations a dataset holds no motion of at all.

    python scripts/absent_combination_prompts.py --data datasets/bandai --per-combination 6 --out runs/absent_prompts.txt

Every content x style pair of the dataset's labels that no motion of any split carries (so none of the test
split's held-out combinations, which do have motions), captioned with the training templates only (the dataset's
held-out templates are left out), `--per-combination` distinct captions each, reproducibly. Used with
`finetune --extra-prompts` to ask the reward for compositions the data never shows, without touching the test split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from easytune.motion.dataset import absent_combinations  # noqa: E402  (re-exported: the combinations themselves)


def prompts(data: str, per_combination: int, seed: int = 0) -> list[str]:
    from easytune.errors import UserError
    from easytune.motion.captions import TEMPLATES, sample_captions
    from easytune.motion.dataset import load_dataset_info

    info = load_dataset_info(data)
    if not info["labels"]:
        raise UserError(f"{data} has no labels.json: combinations need (content, style) labels")
    held_out = set((info["info"] or {}).get("heldout_templates", []))
    templates = [t for t in range(len(TEMPLATES)) if t not in held_out]
    return [cap for c, s in absent_combinations(info["labels"])
            for _, cap in sample_captions(c, s, templates, per_combination, f"{seed}:{c}:{s}")]


def main(argv: list[str] | None = None) -> int:
    from easytune.errors import UserError

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="datasets/bandai")
    ap.add_argument("--per-combination", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        if not 1 <= args.per_combination <= 50:
            raise UserError(f"--per-combination must be from 1 to 50, got {args.per_combination}")
        lines = prompts(args.data, args.per_combination, args.seed)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} prompts -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
