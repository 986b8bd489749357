"""Base-model training: LR schedule, config, exact resume, and a tiny model that overfits 4 real clips."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from easytune import cli
from easytune.checkpoints import load_checkpoint
from easytune.errors import UserError
from easytune.motion.dataset import MotionDataset, collate
from easytune.train_base import (RUN_CONFIG, TrainBaseConfig, batch_indices, lr_schedule, preset_cpu, preset_tiny,
                                 train)
from tiny_models import synthetic_clips, write_dataset

CAPTIONS = ["a person walks forward", "someone turns around slowly", "a man raises both arms",
            "the person jumps in place"]
SEGMENTS = [(0, 40), (42, 82), (85, 125), (128, 168)]  # 4 distinct crops of the 170-frame reference clip


@pytest.fixture(scope="module")
def text_encoder():
    from easytune.text import load_text_encoder

    return load_text_encoder("cpu")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synthetic"), synthetic_clips(6), np.zeros(263), np.ones(263), val=True)


def test_lr_schedule_and_batches():
    cfg = dataclasses.replace(preset_cpu(), lr=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    lr_at = lr_schedule(cfg).at  # the one LRSchedule of easytune.training, with the base's floor
    assert lr_at(0) == pytest.approx(1e-4)
    assert lr_at(9) == pytest.approx(1e-3)
    assert lr_at(60) == pytest.approx(0.55e-3)  # half-way down the cosine
    assert lr_at(110) == pytest.approx(1e-4)
    assert batch_indices(10, 4, 0, 7) == batch_indices(10, 4, 0, 7)
    assert batch_indices(10, 4, 0, 7) != batch_indices(10, 4, 0, 8)
    assert len(batch_indices(3, 8, 0, 0)) == 8  # fewer clips than the batch: sampled with replacement


def test_config_validation():
    assert preset_tiny().d_model == 64 and preset_cpu().d_model == 256
    with pytest.raises(UserError, match="min_frames"):
        dataclasses.replace(preset_tiny(), min_frames=50, max_frames=40).validate()
    with pytest.raises(UserError, match="cond_drop"):
        dataclasses.replace(preset_tiny(), cond_drop=1.0).validate()
    with pytest.raises(UserError, match="divisible"):
        dataclasses.replace(preset_tiny(), d_model=33).validate()


def _same_checkpoints(a, b):
    a, b = load_checkpoint(a), load_checkpoint(b)
    assert a.state.keys() == b.state.keys()
    for k in a.state:
        assert torch.equal(a.state[k], b.state[k]), k


def test_resume_matches_an_unbroken_run(tmp_path, synthetic_dir, text_encoder):
    # random crops (24..40-frame clips cropped to 20..40) and dropout: everything a step draws must repeat
    data = MotionDataset(synthetic_dir, "train", min_frames=20, max_frames=40)
    val = MotionDataset(synthetic_dir, "train", min_frames=20, max_frames=40, random_crop=False)
    cfg = dataclasses.replace(preset_tiny(), d_model=32, batch_size=3, max_steps=6, warmup_steps=2,
                              val_every=3, ckpt_every=3, dropout=0.1)
    seen = []
    full = train(dataclasses.replace(cfg, run_dir=str(tmp_path / "a")), data, val, collate=collate,
                 text_encoder=text_encoder, progress=False, on_step=seen.append)
    assert [m["step"] for m in seen] == [1, 2, 3, 4, 5, 6] and "val_loss" in seen[2] and "val_loss" not in seen[3]
    assert seen[0]["lr"] == pytest.approx(lr_schedule(cfg).at(0)) and seen[0]["samples_per_s"] > 0

    # cancelled after 4 steps (should_stop): it saves step 4 and returns; running again resumes from there
    half = dataclasses.replace(cfg, run_dir=str(tmp_path / "b"))
    done = []
    stopped = train(half, data, val, collate=collate, text_encoder=text_encoder, progress=False,
                    on_step=done.append, should_stop=lambda: len(done) >= 4)
    assert stopped["stopped"] and stopped["step"] == 4 and load_checkpoint(tmp_path / "b" / "last").meta["step"] == 4
    resumed = train(half, data, val, collate=collate, text_encoder=text_encoder, progress=False)
    assert full["step"] == resumed["step"] == 6 and not resumed["stopped"]
    _same_checkpoints(tmp_path / "a" / "last", tmp_path / "b" / "last")
    assert full["val_loss"] == resumed["val_loss"]

    # killed in step 5 (an exception, no save): resumes from the step-3 checkpoint and still ends identical
    def kill(metrics):
        if metrics["step"] == 5:
            raise KeyboardInterrupt
    killed = dataclasses.replace(cfg, run_dir=str(tmp_path / "c"))
    with pytest.raises(KeyboardInterrupt):
        train(killed, data, val, collate=collate, text_encoder=text_encoder, progress=False, on_step=kill)
    assert load_checkpoint(tmp_path / "c" / "last").meta["step"] == 3
    train(killed, data, val, collate=collate, text_encoder=text_encoder, progress=False)
    _same_checkpoints(tmp_path / "a" / "last", tmp_path / "c" / "last")

    # the checkpoint records what loading needs
    a = load_checkpoint(tmp_path / "a" / "last")
    assert a.kind == "base" and a.dataset["root"] == "" and a.dataset["stamp"] is None  # HumanML3D layout: no stamp
    assert a.config["sampling"] == {"steps": 10, "guidance": 2.5, "eta": 0.0}
    assert a.config["model"]["d_model"] == 32
    torch.testing.assert_close(a.state["std"], torch.ones(263))
    saved = json.loads((tmp_path / "a" / RUN_CONFIG).read_text())
    assert saved["max_steps"] == 6 and TrainBaseConfig(**saved) == dataclasses.replace(cfg, run_dir=str(tmp_path / "a"))


def test_init_starts_from_another_checkpoints_weights(tmp_path, synthetic_dir, text_encoder):
    data = MotionDataset(synthetic_dir, "train", min_frames=20, max_frames=40, random_crop=False)
    cfg = dataclasses.replace(preset_tiny(), d_model=32, batch_size=3, max_steps=4, warmup_steps=2, val_every=0,
                              ckpt_every=4)
    train(dataclasses.replace(cfg, run_dir=str(tmp_path / "a")), data, None, collate=collate,
          text_encoder=text_encoder, progress=False)
    # lr 0 and no decay: the weights cannot move, so the new run's checkpoint holds exactly the init weights
    frozen = dataclasses.replace(cfg, run_dir=str(tmp_path / "b"), init=str(tmp_path / "a" / "last"), lr=0.0,
                                 weight_decay=0.0, max_steps=2)
    train(frozen, data, None, collate=collate, text_encoder=text_encoder, progress=False)
    a, b = load_checkpoint(tmp_path / "a" / "last"), load_checkpoint(tmp_path / "b" / "last")
    for k in a.state:
        torch.testing.assert_close(a.state[k], b.state[k], msg=k)
    assert b.meta["step"] == 2 and b.config["train"]["init"] == str(tmp_path / "a" / "last")
    wide = dataclasses.replace(frozen, run_dir=str(tmp_path / "c"), d_model=64)
    with pytest.raises(UserError, match="shape"):
        train(wide, data, None, collate=collate, text_encoder=text_encoder, progress=False)
    # a model with a new identity-initialised output conv starts as exactly the init checkpoint's function
    smooth = dataclasses.replace(frozen, run_dir=str(tmp_path / "d"), out_smooth=3)
    train(smooth, data, None, collate=collate, text_encoder=text_encoder, progress=False)
    d = load_checkpoint(tmp_path / "d" / "last")
    assert set(d.state) - set(a.state) == {"denoiser.smooth.weight", "denoiser.smooth.bias"}
    assert not d.state["denoiser.smooth.weight"].any() and d.config["model"]["out_smooth"] == 3


def test_velocity_loss_adds_to_the_x0_loss_and_needs_x0():
    from easytune.diffusion import DDIMScheduler
    from easytune.train_base import diffusion_loss
    from models.denoiser import MotionDenoiser

    cfg = dataclasses.replace(preset_tiny(), d_model=32)
    torch.manual_seed(0)
    model = MotionDenoiser(cfg.denoiser_config())
    torch.nn.init.normal_(model.motion_out.weight, std=0.05)
    sched = DDIMScheduler(cfg.diffusion_config())
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 8:] = False
    batch = {"motion": torch.randn(2, 12, 263) * mask[..., None], "mask": mask}
    tok, tmask = torch.randn(2, 3, 384), torch.ones(2, 3, dtype=torch.bool)
    losses = [diffusion_loss(model, sched, batch, tok, tmask, torch.Generator().manual_seed(0), 0.0, w).item()
              for w in (0.0, 1.0, 2.0)]
    assert losses[0] < losses[1] < losses[2]
    assert losses[2] - losses[1] == pytest.approx(losses[1] - losses[0], rel=1e-4)  # linear in the weight
    with pytest.raises(UserError, match="vel_weight"):
        dataclasses.replace(preset_tiny(), prediction_type="epsilon", vel_weight=1.0).validate()


def test_epsilon_prediction_with_scaled_linear_schedule_learns(tmp_path, synthetic_dir, text_encoder):
    data = MotionDataset(synthetic_dir, "train", min_frames=20, max_frames=40, random_crop=False)
    cfg = dataclasses.replace(preset_tiny(), run_dir=str(tmp_path), d_model=32, batch_size=6, max_steps=120,
                              warmup_steps=5, lr=3e-3, val_every=120, ckpt_every=120, ema_decay=0.9,
                              prediction_type="epsilon", beta_schedule="scaled_linear")
    out = train(cfg, data, data, collate=collate, text_encoder=text_encoder, progress=False)
    # the zero-initialised head starts at MSE = E[eps^2] = 1; after 120 steps it predicts part of the noise
    assert out["val_loss"] < 0.9, out
    ck = load_checkpoint(tmp_path / "last")
    assert ck.config["diffusion"]["prediction_type"] == "epsilon" and ck.config["model"]["input_skip"] is True


def test_train_base_cli_trains_resumes_and_rejects_bad_data(tmp_path, synthetic_dir, capsys):
    run = tmp_path / "run"
    common = ["train", "base", "--data", str(synthetic_dir), "--run-dir", str(run), "--preset", "tiny",
              "--no-progress", "--d-model", "32", "--val-every", "2", "--ckpt-every", "2"]
    assert cli.main([*common, "--max-steps", "2"]) == 0
    assert load_checkpoint(run / "last").meta["step"] == 2
    # run again with a larger budget: resumes from step 2 by default, keeping the saved config
    assert cli.main(["train", "base", "--data", str(synthetic_dir), "--run-dir", str(run), "--no-progress",
                     "--resume", "--max-steps", "4"]) == 0
    ck = load_checkpoint(run / "last")
    assert ck.meta["step"] == 4 and ck.config["model"]["d_model"] == 32 and ck.meta["val_loss"] is not None
    assert ck.meta["command"] == (f"python -m easytune train base --preset cpu --data {synthetic_dir} "
                                  f"--run-dir {run} --max-steps 4")  # the saved config, not the preset, set the model
    capsys.readouterr()
    assert cli.main(["train", "base", "--data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    assert cli.main(["train", "base", "--data", str(synthetic_dir), "--run-dir", str(tmp_path / "r3"),
                     "--batch-size", "0"]) == 2
    assert "batch_size" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_model_overfits_four_real_clips(tmp_path, humanml3d_reference, text_encoder):
    """A tiny model trained on 4 crops of the real reference clip reproduces one from its caption."""
    from easytune.generate import generate, load_base
    from easytune.motion.features import recover_from_ric

    feats = np.load(humanml3d_reference / "new_joint_vecs" / "012314.npy").astype(np.float32)
    mean, std = np.load(humanml3d_reference / "Mean.npy"), np.load(humanml3d_reference / "Std.npy")
    root = write_dataset(tmp_path / "data", [(feats[a:b], c) for (a, b), c in zip(SEGMENTS, CAPTIONS)], mean, std)
    data = MotionDataset(root, "train", min_frames=40, max_frames=40, random_crop=False)
    assert [len(data[i]["motion"]) for i in range(4)] == [40] * 4
    cfg = dataclasses.replace(preset_tiny(), run_dir=str(tmp_path / "run"), d_model=128, heads=4, max_steps=800,
                              warmup_steps=50, lr=1e-3, cond_drop=0.0, val_every=800, ckpt_every=800)
    summary = train(cfg, data, data, collate=collate, text_encoder=text_encoder, progress=False)
    assert summary["val_loss"] < 0.06  # x0-MSE in normalised units; 0.32 after 300 steps, 0.036 after 800

    bundle = load_base(tmp_path / "run", text_encoder=text_encoder)
    out = generate(bundle, CAPTIONS, seconds=2.0, seed=0, steps=20, guidance=1.0)
    truth = [recover_from_ric(feats[a:b].astype(np.float64)) for a, b in SEGMENTS]
    # (generated i, true j) mean joint error in metres
    err = np.array([[np.linalg.norm(out.joints[i] - truth[j], axis=-1).mean() for j in range(4)] for i in range(4)])
    assert err[3, 3] < 0.05, err  # "the person jumps in place" within 5 cm
    assert err[3, 3] < 0.5 * min(err[3, j] for j in range(3)), err  # and it is that clip, not another one
    assert np.all(np.argmin(err, axis=1) == np.arange(4)), err  # every caption picks its own clip
