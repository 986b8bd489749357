"""Guo-style text-motion matching model: the evaluator (never used as a reward).

Architecture after Guo et al. 2022's evaluator (a different family from the reward model, so the
judge does not share the reward's blind spots):
  motion (B, T, 263) -> first 259 dims (foot contacts dropped) -> 1-D conv movement encoder, 4x
  temporal downsampling -> bidirectional GRU over the T // 4 movement codes -> (B, embed_dim)
  text MiniLM tokens (B, L, 384) -> bidirectional GRU -> (B, embed_dim)
Embeddings are not normalized: R-Precision, FID, MM-Dist and Diversity use Euclidean distances.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

MOVEMENT_DIMS = 259  # 263 minus the 4 foot-contact flags


@dataclass
class EvaluatorConfig:
    feature_dim: int = field(default=263, metadata={"help": "motion feature width; the last 4 (contacts) are dropped"})
    text_dim: int = field(default=384, metadata={"help": "token feature width of the frozen MiniLM"})
    movement_dim: int = field(default=256, metadata={"help": "channels of the conv movement encoder"})
    hidden_dim: int = field(default=256, metadata={"help": "GRU hidden size per direction"})
    embed_dim: int = field(default=128, metadata={"help": "embedding size; <= test-set size so FID's covariance is full rank"})
    dropout: float = field(default=0.2, metadata={"help": "dropout in the movement encoder"})


class MovementEncoder(nn.Module):
    """(B, T, 259) + lengths (B,) -> (B, T // 4, movement_dim): two stride-2 convolutions.

    Frames past each motion's length are zeroed before each convolution, so a motion's codes do not
    depend on how much padding its batch has (metrics must not change with the batching)."""

    def __init__(self, cfg: EvaluatorConfig):
        super().__init__()
        self.conv1 = nn.Conv1d(MOVEMENT_DIMS, cfg.movement_dim, 4, 2, 1)
        self.conv2 = nn.Conv1d(cfg.movement_dim, cfg.movement_dim, 4, 2, 1)
        self.act = nn.Sequential(nn.Dropout(cfg.dropout), nn.LeakyReLU(0.2))
        self.out = nn.Linear(cfg.movement_dim, cfg.movement_dim)

    @staticmethod
    def _keep(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Zero time steps >= lengths in h (B, C, T)."""
        valid = torch.arange(h.shape[-1], device=h.device)[None] < lengths[:, None]
        return h * valid[:, None].to(h.dtype)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self._keep(x.transpose(1, 2), lengths)
        h = self._keep(self.act(self.conv1(h)), torch.div(lengths, 2, rounding_mode="floor"))
        h = self.act(self.conv2(h))
        return self.out(h.transpose(1, 2))


class BiGRUEncoder(nn.Module):
    """(B, L, in_dim) with lengths (B,) -> (B, embed_dim) from the final forward and backward states."""

    def __init__(self, in_dim: int, hidden: int, embed_dim: int):
        super().__init__()
        self.input = nn.Linear(in_dim, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.h0 = nn.Parameter(torch.zeros(2, 1, hidden))
        self.out = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, embed_dim))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.input(x)
        packed = pack_padded_sequence(h, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        _, last = self.gru(packed, self.h0.expand(-1, x.shape[0], -1).contiguous())  # (2, B, hidden)
        return self.out(torch.cat([last[0], last[1]], dim=-1))


class EvaluatorModel(nn.Module):
    def __init__(self, cfg: EvaluatorConfig):
        super().__init__()
        self.cfg = cfg
        self.movement = MovementEncoder(cfg)
        self.motion_encoder = BiGRUEncoder(cfg.movement_dim, cfg.hidden_dim, cfg.embed_dim)
        self.text_encoder = BiGRUEncoder(cfg.text_dim, cfg.hidden_dim, cfg.embed_dim)

    def encode_motion(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, 263) normalized features, lengths (B,) valid frames -> (B, embed_dim)."""
        if x.shape[-1] != self.cfg.feature_dim:
            raise ValueError(f"motion features must be {self.cfg.feature_dim}-d, got {x.shape[-1]}")
        codes = self.movement(x[..., :MOVEMENT_DIMS], lengths)
        return self.motion_encoder(codes, torch.div(lengths, 4, rounding_mode="floor").clamp(max=codes.shape[1]))

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens (B, L, 384), mask (B, L) True = valid -> (B, embed_dim)."""
        return self.text_encoder(tokens, mask.long().sum(1))
