"""Frozen text encoder wrapper: per-token features and a pooled sentence embedding, cached per prompt.

The wrapper receives an already-loaded sentence-transformers module (MiniLM, see easytune/text.py,
which does the loading); it does no file I/O. It never trains: its parameters are frozen and every
call runs under `torch.no_grad()`, so cached features can be shared between threads and callers.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


class TextEncoder(nn.Module):
    """Wrap a sentence-transformers model (token embeddings + mean pooling, e.g. all-MiniLM-L6-v2).

    encode_tokens(texts) -> (tokens (B, L, dim) float, mask (B, L) bool, True = real token)
    encode_sentence(texts) -> (B, dim) mean-pooled over real tokens, L2-normalised

    Results are cached per prompt string (an LRU of `cache_size` prompts, guarded by a lock), so the
    captions of a training set or the prompts of a playground session are encoded once.
    """

    def __init__(self, sentence_model: nn.Module, dim: int = 384, cache_size: int = 50_000):
        super().__init__()
        self.model = sentence_model
        self.dim = dim
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "TextEncoder":
        # Frozen: stay in eval mode (no dropout) whatever the parent module's mode is.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _encode_uncached(self, texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Run the model on `texts`; per text: (tokens (L_i, dim), sentence (dim,))."""
        features = self.model.preprocess(texts)
        features = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in features.items()}
        out = self.model(features)
        tokens, mask = out["token_embeddings"].float(), features["attention_mask"].bool()
        pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        pooled = F.normalize(pooled, dim=-1)
        return [(tokens[i, : int(mask[i].sum())].clone(), pooled[i].clone()) for i in range(len(texts))]

    def _lookup(self, texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"expected a non-empty list of strings, got {texts!r}")
        with self._lock:
            found = {t: self._cache[t] for t in set(texts) if t in self._cache}
            for t in found:
                self._cache.move_to_end(t)
        missing = sorted(set(texts) - set(found))
        if missing:
            fresh = dict(zip(missing, self._encode_uncached(missing)))
            with self._lock:
                for t, v in fresh.items():
                    self._cache[t] = v
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            found.update(fresh)
        return [found[t] for t in texts]

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def encode_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (B, L, dim), mask (B, L) bool True=valid); L = longest prompt's token count."""
        items = self._lookup(list(texts))
        length = max(tok.shape[0] for tok, _ in items)
        tokens = torch.zeros(len(items), length, self.dim, device=self.device)
        mask = torch.zeros(len(items), length, dtype=torch.bool, device=self.device)
        for i, (tok, _) in enumerate(items):
            tokens[i, : tok.shape[0]] = tok
            mask[i, : tok.shape[0]] = True
        return tokens, mask

    def encode_sentence(self, texts: list[str]) -> torch.Tensor:
        """(B, dim) mean-pooled, L2-normalised sentence embeddings (cosine = dot product)."""
        return torch.stack([s for _, s in self._lookup(list(texts))])

    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_tokens(texts)
