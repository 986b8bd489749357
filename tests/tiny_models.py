"""Tiny fixtures shared by the training tests: a tiny base and a tiny reward model on the same (fake)
dataset stamp and normalization (test_finetune, test_baselines, test_distributed), and a
HumanML3D-layout dataset folder written from given clips (test_train_base, test_distributed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from easytune.checkpoints import save_checkpoint
from easytune.train_base import base_checkpoint_config, preset_tiny
from models.denoiser import MotionDenoiser
from models.reward import RewardModel

BASE_CFG = dataclasses.replace(preset_tiny(), d_model=32, layers=1, heads=2, sample_steps=3, guidance=2.0)


def write_tiny_checkpoints(root: Path) -> Path:
    """root/base and root/reward: seeded random weights (the output layer scaled up so rewards move)."""
    from easytune import reward as R

    torch.manual_seed(0)
    den = MotionDenoiser(BASE_CFG.denoiser_config())
    torch.nn.init.normal_(den.motion_out.weight, std=0.05)
    g = torch.Generator().manual_seed(1)
    mean, std = torch.randn(263, generator=g) * 0.1, torch.rand(263, generator=g) * 0.1 + 0.5
    state = {f"denoiser.{k}": v for k, v in den.state_dict().items()} | {"mean": mean, "std": std}
    save_checkpoint(root / "base", state, kind="base", config=base_checkpoint_config(BASE_CFG),
                    dataset={"stamp": "toy-v1"})
    rm = RewardModel(R.model_preset("tiny", True))
    R.save_reward_checkpoint(root / "reward", rm, train_config=R.RewardTrainConfig(), mean=mean, std=std,
                             dataset_info={"stamp": "toy-v1"}, meta={})
    return root


def write_dataset(root, clips, mean, std, val=False):
    """A HumanML3D-layout folder: new_joint_vecs/*.npy, texts/*.txt, Mean/Std.npy, train.txt (val.txt)."""
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    for i, (feats, caption) in enumerate(clips):
        np.save(root / "new_joint_vecs" / f"{i:06d}.npy", feats.astype(np.float32))
        (root / "texts" / f"{i:06d}.txt").write_text(f"{caption}#{caption.replace(' ', '/X ')}/X#0.0#0.0\n")
    np.save(root / "Mean.npy", np.asarray(mean, np.float32))
    np.save(root / "Std.npy", np.asarray(std, np.float32))
    ids = "\n".join(f"{i:06d}" for i in range(len(clips))) + "\n"
    (root / "train.txt").write_text(ids)
    if val:
        (root / "val.txt").write_text(ids)
    return root


def synthetic_clips(n: int, caption: str = "motion number {i}", seed: int = 0) -> list:
    """n low-rank, smooth clips (4 sinusoids mixed into 263 dims) of 24-39 frames, like real motion and
    learnable by a tiny model, with their captions."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((4, 263))
    clips = []
    for i in range(n):
        t = np.arange(int(rng.integers(24, 40)))[:, None]
        z = np.sin(t * rng.uniform(0.1, 0.5, 4) + rng.uniform(0, 6.3, 4))
        clips.append((z @ mix / 2, caption.format(i=i)))
    return clips
