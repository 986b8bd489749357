"""The baselines EasyTune is compared with (easytune/finetune/{refl,draft,alignprop,drtune}.py) on tiny
random models: memory held for backward (DRaFT-K grows with K, EasyTune flat, AlignProp's checkpointing
saves less for the same gradient), where ReFL and DRTune stop and train, DRaFT-LV's averaged gradient,
and every method through `finetune(...)` and the CLI, with resume."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from easytune.checkpoints import load_checkpoint
from easytune.errors import UserError
from easytune.finetune import alignprop, draft, drtune, refl
from easytune.finetune import easytune as et
from easytune.finetune import harness as H
from tiny_models import write_tiny_checkpoints

PROMPTS = ["a person walks forward", "a person waves the right hand", "someone kicks", "a person bows"]


@pytest.fixture(scope="module")
def text_encoder():
    from easytune.text import load_text_encoder

    return load_text_encoder("cpu")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = write_tiny_checkpoints(tmp_path_factory.mktemp("baselines"))
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return root


def _cfg(ckpts, tmp_path, **kw) -> H.FinetuneConfig:
    base = dataclasses.replace(H.preset_tiny(), base=str(ckpts / "base"), reward=str(ckpts / "reward"),
                               prompts=str(ckpts / "prompts.txt"), val_file=str(ckpts / "prompts.txt"),
                               val_prompts=0, out=str(tmp_path / "run"), device="cpu", lr=1e-3)
    return dataclasses.replace(base, **kw)


class SavedBytes:
    """Peak bytes of the storages autograd holds for backward, each storage counted once while any saved
    tensor on it is alive; the model's parameters (held anyway) are not counted."""

    def __init__(self, params=()):
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.live: dict[int, list[int]] = {}
        self.now = self.peak = 0

    def pack(self, t):
        key = t.untyped_storage().data_ptr()
        return t if key in self.skip else _Held(self, key, t.untyped_storage().nbytes(), t)

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda h: h if torch.is_tensor(h) else h.t)


class _Held:
    def __init__(self, counter, key, nbytes, t):
        self.counter, self.key, self.t = counter, key, t
        entry = counter.live.setdefault(key, [0, nbytes])
        entry[0] += 1
        if entry[0] == 1:
            counter.now += nbytes
            counter.peak = max(counter.peak, counter.now)

    def __del__(self):
        entry = self.counter.live[self.key]
        entry[0] -= 1
        if entry[0] == 0:
            self.counter.now -= entry[1]
            del self.counter.live[self.key]


def _held_bytes(run, method, index=0) -> int:
    counter = SavedBytes(run.model.parameters())
    with counter.hooks():
        method(run, index)
    assert counter.now == 0  # everything saved was released by backward
    return counter.peak


def _calls(model):
    """Log (grad enabled, input requires grad) of every denoiser call."""
    log = []
    model.register_forward_pre_hook(
        lambda m, args, kwargs: log.append((torch.is_grad_enabled(), args[0].requires_grad)), with_kwargs=True)
    return log


def _grads_at_step(run):
    """The gradients the optimizer sees, per optimizer step."""
    seen = []
    step = run.optimizer.step

    def record(*a, **k):
        seen.append([None if p.grad is None else p.grad.detach().clone() for p in run.params])
        return step(*a, **k)
    run.optimizer.step = record
    return seen


def test_draft_memory_grows_with_k_while_easytune_stays_flat(ckpts, tmp_path, text_encoder):
    held = {}
    for k in (1, 3, 6):
        held[k] = _held_bytes(H.setup(_cfg(ckpts, tmp_path, method="draft", steps=6, draft_k=k), text_encoder),
                              draft.trajectory)
    easy = {n: _held_bytes(H.setup(_cfg(ckpts, tmp_path, steps=n), text_encoder), et.trajectory) for n in (2, 6)}
    assert 0 < held[1] < held[3] < held[6], held
    assert (held[6] - held[3]) / 3 == pytest.approx((held[3] - held[1]) / 2, rel=0.02)  # linear in K: a call each
    assert easy[2] == easy[6] > 0  # one call, whatever the number of steps
    assert easy[6] == pytest.approx(held[1], rel=0.05)  # EasyTune holds what DRaFT-1 holds
    assert held[6] > 4 * easy[6]


def test_refl_stops_at_a_step_among_the_last_m_with_one_gradient_call(ckpts, tmp_path, text_encoder):
    run = H.setup(_cfg(ckpts, tmp_path, method="refl", steps=8, stop_last=3), text_encoder)
    calls, grads = _calls(run.model), _grads_at_step(run)
    stops = []
    for index in range(6):
        calls.clear()
        m = refl.trajectory(run, index)
        stop = int(m["stop_step"])
        assert stop == refl.stop_step(8, 3, run.cfg.seed, index) and 5 <= stop <= 7
        assert len(calls) == stop + 1  # the chain ends at the stopping step
        assert calls[-1][0] and not any(g for g, _ in calls[:-1])  # one gradient-enabled call, the last
        stops.append(stop)
    assert len(grads) == 6 and len(set(stops)) > 1  # one update per trajectory; the stop is drawn
    # the update's reward is the stopping step's x0, as a plain no-grad chain computes it
    prep = run.prepare_batch(6)
    sampler = prep.sampler(copy.deepcopy(run.model), run.bundle.diffusion)
    stop = refl.stop_step(8, 3, run.cfg.seed, 6)
    s = list(sampler.iterate(prep.x_T, stop=stop + 1))[-1]
    want = run.reward(s.out.pred_x0, prep.prompts, None, mask=prep.mask).mean()
    assert refl.trajectory(run, 6)["reward"] == pytest.approx(float(want), abs=1e-6)


def test_drtune_detaches_every_input_trains_k_spaced_steps_and_stops_early(ckpts, tmp_path, text_encoder):
    run = H.setup(_cfg(ckpts, tmp_path, method="drtune", steps=10, stop_last=4, drtune_k=3, optimizer="sgd",
                       lr=0.0, grad_clip=0.0), text_encoder)
    calls, grads = _calls(run.model), _grads_at_step(run)
    for index in range(5):
        calls.clear()
        m = drtune.trajectory(run, index)
        stop = int(m["stop_step"])
        assert 6 <= stop <= 9 and len(calls) == stop + 1
        trained = drtune.training_steps(stop, 3, run.cfg.seed, index)
        assert {i for i, (g, _) in enumerate(calls) if g} == trained and len(trained) == 3
        gaps = {b - a for a, b in zip(sorted(trained), sorted(trained)[1:])}
        assert gaps == {(stop + 1) // 3}  # evenly spaced
        assert not any(x_grad for _, x_grad in calls)  # the denoiser never sees an input with grad
        assert any(g is not None and g.abs().sum() > 0 for g in grads[-1])
    # the scored x0 has the value of the plain chain's (the eps-form output changes gradients only)
    prep = run.prepare_batch(0)
    sampler = prep.sampler(run.model, run.bundle.diffusion)
    stop = refl.stop_step(10, 4, run.cfg.seed, 0)
    s = list(sampler.iterate(prep.x_T, stop=stop + 1))[-1]
    want = run.reward(s.out.pred_x0, prep.prompts, None, mask=prep.mask).mean()
    assert drtune.trajectory(run, 0)["reward"] == pytest.approx(float(want), abs=1e-5)
    # an x0-predicting base: a training step before the stopping step still reaches the score
    prep = run.prepare_batch(0)
    sampler = prep.sampler(run.model, run.bundle.diffusion)
    with torch.enable_grad():
        x = prep.x_T
        for i in range(3):
            s = sampler.step(x, i, denoiser=drtune.input_detached(run.model, sampler.scheduler, grad=i == 1))
            x = s.out.prev_sample
        g = torch.autograd.grad(s.out.pred_x0.square().sum(), run.params, allow_unused=True)
    assert any(v is not None and v.abs().sum() > 0 for v in g)


def test_draft_lv_averages_n_one_step_gradients(ckpts, tmp_path, text_encoder):
    cfg = _cfg(ckpts, tmp_path, method="draft-lv", steps=3, lv_n=3, optimizer="sgd", lr=0.05, grad_clip=0.0,
               warmup=0, min_lr_ratio=1.0)
    run = H.setup(cfg, text_encoder)
    calls, grads = _calls(run.model), _grads_at_step(run)
    twin = copy.deepcopy(run.model)
    draft.trajectory_lv(run, 0)
    assert [g for g, _ in calls] == [False] * 3 + [True] * 3  # the chain, then n one-step calls
    # independent: sample with the twin, re-noise n times, one autograd.grad each, average
    prep = run.prepare_batch(0)
    sampler = prep.sampler(twin, run.bundle.diffusion)
    x0 = sampler.sample(prep.x_T)
    params = [p for p in twin.parameters() if p.requires_grad]
    t = sampler.timesteps[-1]
    each = []
    for eps in draft.lv_noise(run, 0, x0.shape, x0.device):
        x_t = sampler.scheduler.add_noise(x0, eps, t)
        pred = sampler.step(x_t, 2).out.pred_x0
        r = run.reward(pred, prep.prompts, None, mask=prep.mask).mean()
        each.append(torch.autograd.grad(-r, params, allow_unused=True))
    assert len(each) == 3
    for j, got in enumerate(grads[0]):
        parts = [e[j] for e in each if e[j] is not None]
        if not parts:
            assert got is None or not got.abs().sum()
            continue
        torch.testing.assert_close(got, sum(parts) / 3, atol=1e-6, rtol=1e-4)
    j = next(j for j, g in enumerate(each[0]) if g is not None)
    assert not torch.allclose(each[0][j], each[1][j])  # n different one-step gradients


def test_alignprop_checkpointing_saves_less_for_the_same_gradient(ckpts, tmp_path, text_encoder):
    out = {}
    for ckpt in (True, False):
        run = H.setup(_cfg(ckpts, tmp_path, method="alignprop", steps=5, align_k_min=5, align_k_max=5,
                           checkpointing=ckpt), text_encoder)
        grads = _grads_at_step(run)
        out[ckpt] = (_held_bytes(run, alignprop.trajectory), grads[0])
    # each checkpointed call keeps only its inputs (on this tiny denoiser about half of what it saves)
    assert out[True][0] < 0.6 * out[False][0], (out[True][0], out[False][0])
    for a, b in zip(out[True][1], out[False][1]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert any(a is not None and a.abs().sum() > 0 for a in out[True][1])
    # the truncation is drawn per trajectory within its range
    ks = {alignprop.truncation(20, 3, 7, 0, i) for i in range(40)}
    assert ks == set(range(3, 8))
    assert alignprop.truncation(4, 3, 0, 0, 1) in (3, 4)


@pytest.mark.parametrize("method", H.METHODS)
def test_every_method_finetunes_end_to_end_and_resumes(method, ckpts, tmp_path, text_encoder):
    kw = dict(method=method, trajectories=2, save_every=1, val_every=0, val_prompts=2, steps=3, stop_last=2,
              draft_k=2, drtune_k=2)
    whole = H.finetune(_cfg(ckpts, tmp_path / "whole", **kw), text_encoder=text_encoder, progress=False)
    assert whole["step"] == 2 and len(whole["validation"]) == 2

    def crash(metrics):
        if metrics["step"] == 1:
            raise KeyboardInterrupt
    cfg = _cfg(ckpts, tmp_path / "cut", **kw)
    with pytest.raises(KeyboardInterrupt):
        H.finetune(cfg, text_encoder=text_encoder, progress=False, on_step=crash)
    assert H.finetune(cfg, text_encoder=text_encoder, progress=False)["step"] == 2
    a = load_checkpoint(tmp_path / "whole" / "run" / "last")
    b = load_checkpoint(tmp_path / "cut" / "run" / "last")
    assert a.meta["method"] == method and a.state.keys() == b.state.keys()
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    base = load_checkpoint(ckpts / "base").state
    assert any(not torch.equal(a.state[k], base[k]) for k in base if k.startswith("denoiser."))  # it trained


def test_cli_runs_each_method(ckpts, tmp_path, text_encoder, capsys):
    from easytune import cli

    for method in H.METHODS:
        rc = cli.main(["finetune", "--method", method, "--preset", "tiny", "--base", str(ckpts / "base"),
                       "--reward", str(ckpts / "reward"), "--prompts", str(ckpts / "prompts.txt"),
                       "--val-prompts", "0", "--trajectories", "1", "--steps", "2", "--device", "cpu",
                       "--no-progress", "--out", str(tmp_path / method)])
        assert rc == 0, method
        assert load_checkpoint(tmp_path / method / "last").meta["method"] == method
    assert "1 trajectories" in capsys.readouterr().out


def test_baseline_settings_are_checked(ckpts, tmp_path, text_encoder):
    for kw, msg in [(dict(draft_k=0), "draft_k must be an integer from 1"), (dict(lv_n=65), "lv_n must be"),
                    (dict(stop_last=0), "stop_last must be"), (dict(drtune_k=0), "drtune_k must be"),
                    (dict(align_k_min=4, align_k_max=2), "align_k_max must be 0"),
                    (dict(method="refl", variant="chain"), "variant 'chain' is EasyTune's")]:
        with pytest.raises(UserError, match=msg):
            _cfg(ckpts, tmp_path, **kw).validate()
