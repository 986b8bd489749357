"""The shared training loop: schedule, save cadence, hooks, cancel, non-finite metrics, exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from easytune.errors import UserError
from easytune.training import LRSchedule, NonFiniteError, run_loop, step_generator, step_rng


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
