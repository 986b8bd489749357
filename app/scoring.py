"""Scores the playground shows for a motion and a prompt, shared by the Compare and Reward tabs.

- reward: the reward model (what EasyTune optimizes), cosine similarity shown in [0, 1], higher = better;
- text match: the independent evaluator's text-motion distance (the per-pair term of MM-Dist),
  lower = better; never used as a reward, so it is the check on reward hacking;
- foot skating (fraction of contacts that slide) and jerk (m/s^3): plausibility, which the reward
  model does not see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from easytune.metrics import foot_skating_ratio, jerk

# Reference values of the real test motions (README, `python -m easytune evaluate` real-data rows).
REAL_MM_DIST, REAL_SKATE, REAL_JERK = 2.09, 0.035, 54.4


@dataclass(frozen=True)
class Score:
    reward: float
    text_distance: float
    foot_skating: float
    jerk: float


def score_pairs(res, normalized: Sequence[np.ndarray], joints: Sequence[np.ndarray],
                prompts: Sequence[str]) -> list[Score]:
    """One Score per (motion, prompt) pair; motions are normalized (T_i, 263) with joints (T_i, 22, 3)."""
    if not normalized:
        return []
    lengths = [len(m) for m in normalized]
    x = torch.zeros(len(normalized), max(lengths), normalized[0].shape[-1])
    for i, m in enumerate(normalized):
        x[i, :len(m)] = torch.as_tensor(np.asarray(m, np.float32))
    mask = torch.arange(x.shape[1])[None] < torch.tensor(lengths)[:, None]
    rewards = res.reward.score(x, list(prompts), mask=mask)
    motion_emb = res.evaluator.motions(list(normalized))
    text_emb = res.evaluator.texts(list(prompts))
    dist = np.linalg.norm(motion_emb - text_emb, axis=-1)
    return [Score(float(r), float(d), foot_skating_ratio(j), jerk(j)) for r, d, j in zip(rewards, dist, joints)]


def step_rewards(res, step_x0: np.ndarray, length: int, prompt: str) -> list[float]:
    """Reward of each denoising step's x0 prediction, (steps, T, 263) normalized -> one score per step."""
    x = torch.as_tensor(step_x0[:, :length], dtype=torch.float32)
    return res.reward.score(x, [prompt] * len(x))
