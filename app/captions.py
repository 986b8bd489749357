"""Is a prompt like the training captions? A gentle check before generating.

The base model only saw the dataset's captions. A prompt whose MiniLM sentence embedding is far from
every training caption, or that uses words no training caption uses, is still generated, with a
warning that the model may ignore what it has not seen.

The training captions ship as app/assets/train_captions.txt (one per line), written from a built
dataset by

    python -m app.captions datasets/bandai          # -> app/assets/train_captions.txt

Their embeddings are computed once (about 25 s for 4,349 captions on 2 CPU cores) and cached in the
app's data folder, keyed by the captions file's content.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

CAPTIONS_FILE = Path(__file__).resolve().parent / "assets" / "train_captions.txt"
FAR_BELOW = 0.55  # cosine to the nearest training caption under which a prompt counts as "far"
_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def read_captions(path: str | Path = CAPTIONS_FILE) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def training_captions(dataset: str | Path) -> list[str]:
    """Unique captions of the dataset's train split (texts/NAME.txt lines: caption#tokens#start#end)."""
    root = Path(dataset)
    names = (root / "train.txt").read_text(encoding="utf-8").split()
    found = set()
    for name in names:
        for line in (root / "texts" / f"{name}.txt").read_text(encoding="utf-8").splitlines():
            caption = " ".join(line.split("#")[0].replace(" ,", ",").split())
            if caption:
                found.add(caption)
    return sorted(found)


class CaptionIndex:
    """Sentence embeddings of the training captions and their vocabulary."""

    def __init__(self, captions: Sequence[str], encoder: Any, cache_dir: str | Path | None = None):
        self.captions = list(captions)
        self.vocabulary = {w for c in self.captions for w in words(c)}
        key = hashlib.sha256("\n".join(self.captions).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"caption_embeddings-{key}.npy" if cache_dir else None
        if cache is not None and cache.is_file():
            self.embeddings = np.load(cache, allow_pickle=False)
        else:
            self.embeddings = np.concatenate([
                encoder.encode_sentence(self.captions[i:i + 256]).float().cpu().numpy()
                for i in range(0, len(self.captions), 256)]) if self.captions else np.zeros((0, 384), np.float32)
            if cache is not None:
                from easytune.fileio import save_npy

                save_npy(cache, self.embeddings.astype(np.float32))
        self.encoder = encoder

    def nearest(self, prompt: str) -> tuple[float, str]:
        """(cosine similarity, caption) of the training caption nearest to `prompt`."""
        e = self.encoder.encode_sentence([prompt]).float().cpu().numpy()[0]
        sims = self.embeddings @ e
        i = int(np.argmax(sims))
        return float(sims[i]), self.captions[i]

    def warnings(self, prompt: str) -> list[str]:
        """Zero, one or two sentences telling what the model has not seen in `prompt`."""
        out = []
        unseen = sorted({w for w in words(prompt) if w not in self.vocabulary})
        if unseen:
            out.append(f"The training captions never use {', '.join(repr(w) for w in unseen[:6])}; "
                       f"the model may ignore {'it' if len(unseen) == 1 else 'them'}.")
        if self.captions:
            sim, caption = self.nearest(prompt)
            if sim < FAR_BELOW:
                out.append(f"This prompt is far from every training caption (nearest: \"{caption}\", "
                           f"similarity {sim:.2f}); expect a loose match.")
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write app/assets/train_captions.txt from a built dataset")
    parser.add_argument("dataset", help="dataset folder built by `python -m easytune data build`")
    parser.add_argument("--out", type=Path, default=CAPTIONS_FILE)
    args = parser.parse_args(argv)
    captions = training_captions(args.dataset)
    from easytune.fileio import write_text

    write_text(args.out, "\n".join(captions) + "\n")
    print(f"wrote {len(captions)} captions to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
