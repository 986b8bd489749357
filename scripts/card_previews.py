"""Model-card previews for a base checkpoint: a FIXED list of prompts and seeds (never picked by hand),
each generated with the checkpoint's default schedule, fitted with the default body and rendered as a
filmstrip PNG (frames at evenly spaced times). Writes previews/*.png and previews.md into the
checkpoint folder, and puts the table into its README.md between the `<!-- previews -->` and
`<!-- /previews -->` markers when they are there.

    OMP_NUM_THREADS=2 python scripts/card_previews.py --checkpoint demo_checkpoints/base

Each strip is what `python -m easytune sample --checkpoint C --prompt P --seed S --seconds 4` makes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from easytune.checkpoints import resolve  # noqa: E402
from easytune.fileio import atomic_path, write_text  # noqa: E402
from easytune.generate import generate, load_base  # noqa: E402
from easytune.render import RenderConfig, body_motions, render_frames  # noqa: E402

# The common action families, both hands and both turn directions, styles; the last two are
# (content, style) combinations that the Bandai dataset holds out of training (its unseen test group).
PROMPTS = [
    "a person waves their left hand",
    "someone raises their right hand",
    "a person walks and turns left",
    "a person walks and turns right",
    "a tired person walks forward",
    "an energetic person runs forward",
    "a person walks backwards",
    "a person bows",
    "a tired person raises their left hand",
    "an energetic person waves their right hand",
]
SEEDS = (0, 1)
SECONDS = 4.0
STRIP_FRAMES = 6
MARKERS = ("<!-- previews -->", "<!-- /previews -->")


def filmstrip(joints: np.ndarray, size: int, n: int) -> np.ndarray:
    """(size, n * size, 3) uint8: the motion's body mesh at n evenly spaced frames."""
    motions = body_motions([joints])
    frames = list(render_frames(motions, RenderConfig(size=size, show_labels=False)))
    picks = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return np.concatenate([frames[i] for i in picks], axis=1)


def save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", optimize=True)


def update_card(card: Path, table: str) -> bool:
    """Replace the text between the markers in `card`; False when the markers are absent."""
    if not card.is_file():
        return False
    text = card.read_text(encoding="utf-8")
    start, end = (re.escape(m) for m in MARKERS)
    new, count = re.subn(f"{start}.*?{end}", lambda _: f"{MARKERS[0]}\n{table}\n{MARKERS[1]}", text, flags=re.S)
    if count:
        write_text(card, new)
    return bool(count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="base", help="base checkpoint (registry name or folder)")
    parser.add_argument("--size", type=int, default=160, help="pixels per frame")
    args = parser.parse_args()
    folder = resolve(args.checkpoint)
    bundle = load_base(folder)
    out = folder / "previews"
    out.mkdir(exist_ok=True)
    rows = [f"Fixed prompts and seeds, {SECONDS:g} s, the checkpoint's default schedule ({bundle.steps} DDIM steps, "
            f"guidance {bundle.guidance:g}); frames at {STRIP_FRAMES} evenly spaced times, left to right. Made by "
            f"`python scripts/card_previews.py --checkpoint {args.checkpoint}`.", "",
            "| prompt | " + " | ".join(f"seed {s}" for s in SEEDS) + " |", "|---" * (len(SEEDS) + 1) + "|"]
    for k, prompt in enumerate(PROMPTS):
        cells = []
        for seed in SEEDS:
            g = generate(bundle, [prompt], seconds=SECONDS, seed=seed)
            name = f"{k:02d}_seed{seed}.png"
            save_png(filmstrip(g.joints[0, : int(g.lengths[0])], args.size, STRIP_FRAMES), out / name)
            cells.append(f"![{prompt}, seed {seed}](previews/{name})")
            print(f"{prompt!r} seed {seed} -> {out / name}")
        rows.append(f"| {prompt} | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    write_text(folder / "previews.md", table + "\n")
    print("card updated" if update_card(folder / "README.md", table) else f"wrote {folder / 'previews.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
