"""TMR-style text-motion reward model: two transformer encoders into one embedding space.

reward(x, text) = cos(motion_encoder(x, t), text_encoder(text)), in [-1, 1]; shown as sim / 2 + 0.5.

The motion encoder reads normalized 263-d HumanML3D frames. When `step_aware`, a diffusion-timestep
token joins the learned [CLS] token, so the same model can score a noisy x_t (EasyTune's step-aware
reward); timestep None means a clean motion (t = 0). The text encoder reads frozen MiniLM token
features (B, L, 384) computed outside (models/text_encoder.py). Everything is differentiable w.r.t.
the motion features: EasyTune backpropagates the reward into the denoiser through `encode_motion`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class RewardModelConfig:
    feature_dim: int = field(default=263, metadata={"help": "motion feature width (HumanML3D 263-d)"})
    text_dim: int = field(default=384, metadata={"help": "token feature width of the frozen MiniLM"})
    latent_dim: int = field(default=256, metadata={"help": "transformer width; 256 keeps the checkpoint ~10 MB"})
    embed_dim: int = field(default=256, metadata={"help": "shared embedding size where cosine is taken"})
    motion_layers: int = field(default=3, metadata={"help": "motion transformer depth"})
    text_layers: int = field(default=2, metadata={"help": "text transformer depth (MiniLM already contextualises)"})
    num_heads: int = field(default=4, metadata={"help": "attention heads per layer"})
    ff_size: int = field(default=512, metadata={"help": "feed-forward width inside each layer"})
    dropout: float = field(default=0.1, metadata={"help": "dropout in the transformers"})
    step_aware: bool = field(default=True, metadata={"help": "add a diffusion-timestep token to score noisy x_t"})
    num_timesteps: int = field(default=1000, metadata={"help": "diffusion steps the timestep token covers"})


def sinusoidal(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) integer or float positions -> (N, dim) sinusoidal features (Vaswani et al.)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float()[:, None] * freqs[None]
    emb = torch.cat([angles.sin(), angles.cos()], dim=1)
    return F.pad(emb, (0, dim - 2 * half))


def _encoder(cfg: RewardModelConfig, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(cfg.latent_dim, cfg.num_heads, cfg.ff_size, cfg.dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class SequenceEncoder(nn.Module):
    """(B, L, in_dim) + validity mask (B, L) + optional extra tokens (B, K, latent) -> (B, embed_dim)
    read from a learned [CLS] token, before normalization."""

    def __init__(self, cfg: RewardModelConfig, in_dim: int, layers: int):
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.input = nn.Linear(in_dim, cfg.latent_dim)
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.latent_dim) * 0.02)
        self.encoder = _encoder(cfg, layers)
        self.norm = nn.LayerNorm(cfg.latent_dim)
        self.proj = nn.Linear(cfg.latent_dim, cfg.embed_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, extra: torch.Tensor | None = None) -> torch.Tensor:
        b, length, _ = x.shape
        h = self.input(x) + sinusoidal(torch.arange(length, device=x.device), self.latent_dim)[None]
        prefix = [self.cls.expand(b, -1, -1)] + ([extra] if extra is not None else [])
        h = torch.cat(prefix + [h], dim=1)
        if mask is None:
            mask = torch.ones(b, length, dtype=torch.bool, device=x.device)
        valid = torch.cat([torch.ones(b, h.shape[1] - length, dtype=torch.bool, device=x.device), mask.bool()], 1)
        h = self.encoder(h, src_key_padding_mask=~valid)
        return self.proj(self.norm(h[:, 0]))


class RewardModel(nn.Module):
    """Motion and text encoders into a shared, L2-normalized embedding space."""

    def __init__(self, cfg: RewardModelConfig):
        super().__init__()
        self.cfg = cfg
        self.motion_encoder = SequenceEncoder(cfg, cfg.feature_dim, cfg.motion_layers)
        self.text_encoder = SequenceEncoder(cfg, cfg.text_dim, cfg.text_layers)
        if cfg.step_aware:
            self.time_mlp = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.latent_dim), nn.SiLU(),
                                          nn.Linear(cfg.latent_dim, cfg.latent_dim))

    def encode_motion(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                      timestep: torch.Tensor | int | None = None) -> torch.Tensor:
        """x (B, T, feature_dim) normalized features (clean, or x_t at `timestep`), mask (B, T) True =
        valid frame, timestep (B,) / int / None (= clean, t = 0) -> (B, embed_dim) unit vectors."""
        if x.shape[-1] != self.cfg.feature_dim:
            raise ValueError(f"motion features must be {self.cfg.feature_dim}-d, got {x.shape[-1]}")
        extra = None
        if self.cfg.step_aware:
            t = torch.zeros(x.shape[0], device=x.device) if timestep is None else torch.as_tensor(
                timestep, device=x.device).float().expand(x.shape[0])
            extra = self.time_mlp(sinusoidal(t, self.cfg.latent_dim))[:, None]
        return F.normalize(self.motion_encoder(x, mask, extra), dim=-1)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, L, text_dim) frozen MiniLM features, mask (B, L) True = valid -> (B, embed_dim)."""
        return F.normalize(self.text_encoder(tokens, mask), dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, tokens: torch.Tensor,
                token_mask: torch.Tensor | None, timestep: torch.Tensor | int | None = None) -> torch.Tensor:
        """Paired cosine similarity (B,) in [-1, 1]: the reward."""
        return (self.encode_motion(x, mask, timestep) * self.encode_text(tokens, token_mask)).sum(-1)
