"""Differentiable physical terms on normalized features, registered as plug-in rewards.

EasyTune's reward model cannot see feet or smoothness, so an unguarded fine-tune learns to slide and
shake (issue 9's probe: foot skating 0.16 -> 0.45). These terms are the guard: each maps normalized
(B, T, 263) features to (B,) scores (higher is better: minus a penalty) through the differentiable
`recover_from_ric`, and is composed with the reward model by weight (`composite`).

  foot_skating        mean horizontal foot speed (m/s) weighted by a soft contact (foot below 5 cm
                      in both frames; a sigmoid of 1 cm width), the smooth cousin of
                      metrics.foot_skating_ratio (the share of contacts faster than 0.5 m/s)
  floor_penetration   mean depth (m) of the lowest foot joint below the floor
  jerk                mean magnitude of the third difference of joint positions (m/s^3), as metrics.jerk
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from easytune.reward import RewardFn, register_reward

FPS = 20.0
CONTACT_HEIGHT, CONTACT_WIDTH = 0.05, 0.01  # metres, as metrics.foot_skating_ratio's height threshold


def _feet() -> list[int]:
    from easytune.metrics import FOOT_JOINTS

    return list(FOOT_JOINTS)


def joints_of(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalized (B, T, 263) -> joint positions (B, T, 22, 3) in metres, differentiably."""
    from easytune.motion.features import denormalize, recover_from_ric

    return recover_from_ric(denormalize(features.float(), mean.to(features.device).float(),
                                        std.to(features.device).float()))


def _masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample weighted mean over every axis but the first."""
    return (values * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp(min=1e-6)


def foot_skating(joints: torch.Tensor, mask: torch.Tensor | None = None, fps: float = FPS) -> torch.Tensor:
    """(B, T, 22, 3) -> (B,) mean contact-weighted horizontal foot speed, m/s."""
    f = joints[:, :, _feet()]  # (B, T, F, 3)
    low = torch.sigmoid((CONTACT_HEIGHT - f[..., 1]) / CONTACT_WIDTH)
    contact = low[:, 1:] * low[:, :-1]
    speed = (f[:, 1:, :, [0, 2]] - f[:, :-1, :, [0, 2]]).pow(2).sum(-1).add(1e-8).sqrt() * fps
    if mask is not None:
        contact = contact * (mask[:, 1:] & mask[:, :-1])[..., None].to(contact.dtype)
    return _masked_mean(speed, contact)


def floor_penetration(joints: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, 22, 3) -> (B,) mean depth of the lowest foot joint below y = 0, metres."""
    depth = torch.relu(-joints[:, :, _feet(), 1].amin(-1))  # (B, T)
    w = torch.ones_like(depth) if mask is None else mask.to(depth.dtype)
    return _masked_mean(depth, w)


def jerk(joints: torch.Tensor, mask: torch.Tensor | None = None, fps: float = FPS) -> torch.Tensor:
    """(B, T, 22, 3) -> (B,) mean third-difference magnitude, m/s^3 (0 for motions under 4 frames)."""
    d3 = joints.diff(n=3, dim=1)
    mag = d3.pow(2).sum(-1).add(1e-12).sqrt() * fps ** 3  # (B, T-3, 22)
    w = torch.ones_like(mag)
    if mask is not None:
        w = w * (mask[:, 3:] & mask[:, :-3])[..., None].to(mag.dtype)
    return _masked_mean(mag, w)


TERMS: dict[str, Callable[..., torch.Tensor]] = {"foot_skating": foot_skating,
                                                  "floor_penetration": floor_penetration, "jerk": jerk}


def _physical_reward(term: str) -> Callable[..., RewardFn]:
    def factory(mean: torch.Tensor, std: torch.Tensor, **_: Any) -> RewardFn:
        def reward(features, texts, timestep, *, mask=None):
            return -TERMS[term](joints_of(features, mean, std), mask)
        return reward
    factory.__doc__ = f"Minus the differentiable {term} of the motion (needs the dataset's mean and std)."
    return factory


for _name in TERMS:
    register_reward(_name)(_physical_reward(_name))


def composite(parts: Mapping[str, tuple[float, RewardFn]]) -> Callable[..., dict[str, torch.Tensor]]:
    """Weighted sum of rewards: parts {name: (weight, reward_fn)} -> fn(features, texts, timestep, mask=)
    returning {"total": (B,), name: (B,) each unweighted}, so logs show every term."""
    def fn(features: torch.Tensor, texts: Sequence[str], timestep: torch.Tensor | None, *,
           mask: torch.Tensor | None = None, timesteps_for: Sequence[str] = ()) -> dict[str, torch.Tensor]:
        terms = {name: r(features, texts, timestep if name in timesteps_for else None, mask=mask)
                 for name, (w, r) in parts.items() if w}
        total = sum((parts[name][0] * v for name, v in terms.items()),
                    features.new_zeros(features.shape[0]))  # all weights zero: a zero reward, still a tensor
        return {"total": total, **terms}
    return fn
