"""MDM-style transformer denoiser over normalized 263-d HumanML3D frames; knows nothing about betas.

One sequence per motion, attended by a pre-norm transformer encoder:

    [time token] [text tokens (projected MiniLM features)] [motion tokens]

A motion token packs `frames_per_token` consecutive frames (a linear "patch" embedding, like a ViT's),
which cuts attention cost by that factor squared; the output head unpacks each token back into frames.
The timestep's sinusoidal embedding is a token of its own and is also added to every motion token.
Condition dropout for classifier-free guidance: `drop_text` (B,) bool swaps a sample's text for a
learned null token, so conditional and unconditional passes share one batched call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn


@dataclass
class DenoiserConfig:
    """Shape of the denoiser; constructor arguments are the config (saved in the checkpoint)."""

    feature_dim: int = field(default=263, metadata={"help": "per-frame feature size (HumanML3D: 263)"})
    text_dim: int = field(default=384, metadata={"help": "text token feature size (MiniLM: 384)"})
    d_model: int = field(default=256, metadata={"help": "transformer width; 256 trains at CPU speed"})
    layers: int = field(default=4, metadata={"help": "transformer depth"})
    heads: int = field(default=4, metadata={"help": "attention heads (d_model must divide by it)"})
    ff_mult: int = field(default=4, metadata={"help": "feed-forward width as a multiple of d_model"})
    dropout: float = field(default=0.1, metadata={"help": "dropout inside the transformer (training only)"})
    frames_per_token: int = field(default=2, metadata={
        "help": "frames packed into one motion token; 2 halves tokens (4x less attention) at little quality cost"})
    out_smooth: int = field(default=0, metadata={
        "help": "kernel (odd, frames) of a residual temporal conv on the output frames, zero-initialised; "
                "lets tokens of k frames agree at their borders (0 = none, as in the first demo runs)"})
    input_skip: bool = field(default=False, metadata={
        "help": "add a timestep-gated linear skip from x_t to the output; needed to predict epsilon, whose "
                "263*k dims do not fit through d_model (slows x0 overfitting, so off for x0)"})

    def validate(self) -> None:
        from easytune.errors import UserError

        if self.d_model % self.heads:
            raise UserError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.frames_per_token < 1 or self.layers < 1:
            raise UserError("frames_per_token and layers must be at least 1")
        if self.out_smooth < 0 or (self.out_smooth and self.out_smooth % 2 == 0):
            raise UserError(f"out_smooth must be 0 or an odd kernel size, got {self.out_smooth}")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of (B,) timesteps or positions (Transformer / DDPM style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class MotionDenoiser(nn.Module):
    # Layers whose fresh init is the identity: a checkpoint without them loads as the same function
    # (`train base --init` from a model trained without them).
    IDENTITY_INIT = ("smooth.",)

    """forward(x_t (B,T,F), t (B,), text_tokens (B,L,C), text_mask (B,L) bool, motion_mask (B,T) bool
    or None, drop_text (B,) bool or None) -> (B,T,F) model output (x0 or eps, as trained).

    Masks: True = valid. Padded frames neither attend nor are attended; their output is zero.
    T need not be a multiple of frames_per_token (padded internally).
    """

    def __init__(self, cfg: DenoiserConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DenoiserConfig()
        cfg.validate()
        d, k = cfg.d_model, cfg.frames_per_token
        self.motion_in = nn.Linear(cfg.feature_dim * k, d)
        self.motion_out = nn.Linear(d, cfg.feature_dim * k)
        self.text_in = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, d))
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.null_text = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.type_emb = nn.Parameter(torch.randn(3, d) * 0.02)  # time / text / motion token types
        layer = nn.TransformerEncoderLayer(d, cfg.heads, cfg.ff_mult * d, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d)
        # Output starts at zero: an x0-predictor then begins at "the mean pose", an eps-predictor at 0.
        nn.init.zeros_(self.motion_out.weight)
        nn.init.zeros_(self.motion_out.bias)
        if cfg.out_smooth:
            # Tokens of k frames are predicted side by side, so neighbouring tokens need not agree where
            # they meet (jerky motion at 20/k Hz); a conv across frame borders can reconcile them.
            self.smooth = nn.Conv1d(cfg.feature_dim, cfg.feature_dim, cfg.out_smooth, padding=cfg.out_smooth // 2)
            nn.init.zeros_(self.smooth.weight)
            nn.init.zeros_(self.smooth.bias)
        if cfg.input_skip:
            # Per-frame linear skip from x_t, scaled per timestep: the d_model-wide token path cannot
            # carry the full 263*k-dim noise that an epsilon-predictor must return.
            self.skip = nn.Linear(cfg.feature_dim, cfg.feature_dim)
            self.skip_gate = nn.Linear(d, cfg.feature_dim)
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)
            nn.init.zeros_(self.skip_gate.weight)
            nn.init.ones_(self.skip_gate.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
                motion_mask: torch.Tensor | None = None, drop_text: torch.Tensor | None = None) -> torch.Tensor:
        B, T, F = x_t.shape
        k, d = self.cfg.frames_per_token, self.cfg.d_model
        if motion_mask is None:
            motion_mask = torch.ones(B, T, dtype=torch.bool, device=x_t.device)
        pad = (-T) % k
        fmask = nn.functional.pad(motion_mask, (0, pad), value=False)
        # zero padded frames: a token straddling the end of a motion must not see what lies past it
        x = nn.functional.pad(x_t, (0, 0, 0, pad)) * fmask[..., None].to(x_t.dtype)
        n = (T + pad) // k
        # (B, T', F) -> (B, n, k*F) tokens; a token is valid when its first frame is (lengths are prefixes)
        motion = self.motion_in(x.reshape(B, n, k * F))
        mmask = fmask.reshape(B, n, k)[..., 0]
        pos = timestep_embedding(torch.arange(n, device=x.device), d).to(motion.dtype)
        temb = self.time_mlp(timestep_embedding(t, d).to(motion.dtype))  # (B, d)
        motion = motion + pos[None] + temb[:, None] + self.type_emb[2]

        text = self.text_in(text_tokens.to(motion.dtype)) + self.type_emb[1]
        tmask = text_mask.bool()
        if drop_text is not None:
            drop = drop_text.bool()
            null = self.null_text.to(text.dtype).expand(B, text.shape[1], d)
            text = torch.where(drop[:, None, None], null, text)
            first = torch.zeros_like(tmask)
            first[:, 0] = True
            tmask = torch.where(drop[:, None], first, tmask)

        seq = torch.cat([(temb + self.type_emb[0])[:, None], text, motion], dim=1)
        valid = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=x.device), tmask, mmask], dim=1)
        h = self.encoder(seq, src_key_padding_mask=~valid)
        h = self.final_norm(h[:, -n:])
        out = self.motion_out(h).reshape(B, n * k, F)[:, :T]
        if self.cfg.out_smooth:
            valid_out = out * motion_mask[..., None].to(out.dtype)  # no padding leaks into the last frames
            out = out + self.smooth(valid_out.transpose(1, 2)).transpose(1, 2)
        if self.cfg.input_skip:
            out = out + self.skip_gate(temb)[:, None] * self.skip(x_t)
        return out * motion_mask[..., None].to(out.dtype)
