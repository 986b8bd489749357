"""The shared training loop: schedule, save cadence, hooks, cancel, non-finite metrics, exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from easytune.errors import UserError
from easytune.training import (LRSchedule, NonFiniteError, epoch_batch, open_run, resume_point, run_loop, seed_torch,
                               step_generator, step_rng)


def test_schedule_warmup_then_cosine_to_floor():
    s = LRSchedule(lr=1.0, max_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert s.at(0) == pytest.approx(0.1) and s.at(9) == pytest.approx(1.0)
    assert s.at(10) == pytest.approx(1.0)
    assert s.at(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert s.at(110) == pytest.approx(0.1) and s.at(500) == pytest.approx(0.1)
    with pytest.raises(UserError, match="learning rate"):
        LRSchedule(lr=math.nan, max_steps=3)
    with pytest.raises(UserError, match="min_lr_ratio"):
        LRSchedule(lr=1.0, max_steps=3, min_lr_ratio=2)


def _toy():
    w = torch.nn.Parameter(torch.tensor([3.0]))
    opt = torch.optim.SGD([w], lr=0.1)

    def step_fn(step):
        g = step_generator(7, step)
        target = torch.randn(1, generator=g)
        loss = ((w - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}
    return w, opt, step_fn


def test_loop_sets_lr_saves_and_reports_every_step():
    w, opt, step_fn = _toy()
    saves, seen = [], []
    sched = LRSchedule(lr=0.1, max_steps=7, warmup_steps=2)
    res = run_loop(step_fn, optimizer=opt, schedule=sched, save=saves.append, save_every=3,
                   on_step=seen.append, progress=False)
    assert res.step == 7 and not res.stopped
    assert saves == [3, 6, 7]
    assert [m["step"] for m in seen] == list(range(1, 8))
    assert [m["lr"] for m in seen] == pytest.approx([sched.at(i) for i in range(7)])
    assert opt.param_groups[0]["lr"] == pytest.approx(sched.at(6))


def test_resume_repeats_the_unbroken_run_exactly():
    w1, opt1, f1 = _toy()
    run_loop(f1, optimizer=opt1, schedule=LRSchedule(0.1, 6), progress=False)
    w2, opt2, f2 = _toy()
    run_loop(f2, optimizer=opt2, schedule=LRSchedule(0.1, 6), max_steps=4, progress=False)
    run_loop(f2, optimizer=opt2, schedule=LRSchedule(0.1, 6), start_step=4, progress=False)
    assert torch.equal(w1, w2)
    assert step_rng(1, 2).random() == step_rng(1, 2).random() != step_rng(1, 3).random()


def test_should_stop_saves_and_returns_early():
    w, opt, step_fn = _toy()
    saves, calls = [], []
    res = run_loop(step_fn, optimizer=opt, schedule=LRSchedule(0.1, 10), save=saves.append,
                   should_stop=lambda: len(calls) >= 3, on_step=calls.append, progress=False)
    assert res.stopped and res.step == 3 and saves == [3]


def test_non_finite_metric_stops_before_saving():
    saves = []

    def step_fn(step):
        return {"loss": 1.0 if step < 4 else float("nan")}
    with pytest.raises(NonFiniteError, match="loss became nan at step 5.*step 4"):
        run_loop(step_fn, optimizer=None, schedule=None, max_steps=10, save=saves.append, save_every=2,
                 progress=False)
    assert saves == [2, 4]


def test_epoch_batches_cover_every_item_once_per_epoch():
    epoch0 = [epoch_batch(10, 3, 0, step) for step in range(3)]  # 3 full batches per epoch, one item left over
    flat = [i for b in epoch0 for i in b]
    assert all(len(b) == 3 for b in epoch0) and len(set(flat)) == 9
    assert epoch_batch(10, 3, 0, 3) != epoch0[0] or epoch_batch(10, 3, 0, 4) != epoch0[1]  # epoch 1 reshuffles
    assert epoch_batch(10, 3, 0, 7) == epoch_batch(10, 3, 0, 7) and epoch_batch(10, 3, 1, 0) != epoch0[0]
    with pytest.raises(UserError, match="fewer than batch_size=4"):
        epoch_batch(3, 4, 0, 0)


def test_seed_torch_repeats_dropout_per_step():
    drop = torch.nn.Dropout(0.5)
    seed_torch(3, 10)
    a = drop(torch.ones(64))
    torch.rand(5)  # whatever ran in between
    seed_torch(3, 10)
    assert torch.equal(a, drop(torch.ones(64)))
    seed_torch(3, 11)
    assert not torch.equal(a, drop(torch.ones(64)))


def test_run_folder_config_and_resume_point(tmp_path):
    from dataclasses import dataclass

    from easytune.checkpoints import save_checkpoint, save_train_state

    @dataclass
    class Cfg:
        lr: float = 0.1

    folder = open_run(tmp_path / "run", Cfg(lr=0.5))
    assert json.loads((folder / "train_config.json").read_text()) == {"lr": 0.5}
    w, opt, step_fn = _toy()
    module = torch.nn.Module()
    module.w = w
    assert resume_point(folder, opt, module, kind="toy") == 0  # nothing saved yet
    run_loop(step_fn, optimizer=opt, schedule=LRSchedule(0.1, 3), progress=False)
    save_checkpoint(folder, {"model.w": w.detach().clone()}, kind="toy", config={})
    save_train_state(folder, opt, {"step": 3})
    w2, opt2, _ = _toy()
    other = torch.nn.Module()
    other.w = w2
    assert resume_point(folder, opt2, other, kind="toy") == 3
    assert torch.equal(w2, w) and not torch.equal(w, torch.tensor([3.0]))
