"""EasyTune and its harness on tiny random models (no data): one denoiser call per update, the exact
update, step vs chain, LoRA, a real gain over the lr=0 control, resume and NaN handling."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from easytune.checkpoints import load_checkpoint, save_checkpoint
from easytune.errors import UserError
from easytune.finetune import harness as H
from easytune.finetune.easytune import trajectory
from easytune.finetune.lora import merged
from easytune.generate import load_base
from easytune.training import NonFiniteError
from models.reward import RewardModel
from tiny_models import write_tiny_checkpoints

PROMPTS = ["a person walks forward", "a person waves the right hand", "someone kicks", "a person bows"]
HELD_OUT = ["a person runs", "a person waves both hands", "a person walks back", "someone punches",
            "a person dances", "a person raises the left hand", "a person turns left", "a tired walk"]


@pytest.fixture(scope="module")
def text_encoder():
    from easytune.text import load_text_encoder

    return load_text_encoder("cpu")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = write_tiny_checkpoints(tmp_path_factory.mktemp("ft"))
    (root / "prompts.txt").write_text("\n".join(PROMPTS[:2] + ["", "  "] + PROMPTS[2:]) + "\n")
    (root / "held_out.txt").write_text("\n".join(HELD_OUT) + "\n")
    return root


def _cfg(ckpts, tmp_path, **kw) -> H.FinetuneConfig:
    base = dataclasses.replace(H.preset_tiny(), base=str(ckpts / "base"), reward=str(ckpts / "reward"),
                               prompts=str(ckpts / "prompts.txt"), val_file=str(ckpts / "held_out.txt"),
                               val_prompts=8, out=str(tmp_path / "run"), device="cpu", lr=1e-3)
    return dataclasses.replace(base, **kw)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_prompts_file_skips_and_counts_empty_lines(ckpts, tmp_path, text_encoder):
    run = H.setup(_cfg(ckpts, tmp_path), text_encoder)
    assert run.prompts.captions == tuple(PROMPTS) and run.prompts.skipped == 2
    assert run.prompts.frames == (30,) * 4 and len(run.val) == 8


def test_extra_prompts_are_added_to_the_training_prompts(ckpts, tmp_path, text_encoder):
    (tmp_path / "extra.txt").write_text("an elderly person dances\n\na happy person bows\n")
    run = H.setup(_cfg(ckpts, tmp_path, extra_prompts=str(tmp_path / "extra.txt"), seconds=2.0), text_encoder)
    assert run.prompts.captions == tuple(PROMPTS) + ("an elderly person dances", "a happy person bows")
    assert run.prompts.frames == (40,) * 6  # the extra prompts at --seconds, as a --prompts file's
    with pytest.raises(UserError, match="does not exist"):
        H.setup(_cfg(ckpts, tmp_path, extra_prompts=str(tmp_path / "missing.txt")), text_encoder)


def test_each_update_backpropagates_through_exactly_one_denoiser_call(ckpts, tmp_path, text_encoder):
    run = H.setup(_cfg(ckpts, tmp_path, steps=4, k=3), text_encoder)
    calls, updates = [], []
    run.model.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append((torch.is_grad_enabled(), args[0].requires_grad)), with_kwargs=True)
    step = run.optimizer.step

    def counted_step(*a, **k):
        updates.append([c for c in calls if c[0]])
        calls.clear()
        return step(*a, **k)
    run.optimizer.step = counted_step
    m = trajectory(run, 0)
    assert m["optimized_steps"] == 3 and len(updates) == 3
    for grad_calls in updates:
        assert grad_calls == [(True, False)]  # one grad-enabled call, on a detached x_t


def test_saved_tensors_stay_flat_in_the_number_of_steps(ckpts, tmp_path, text_encoder):
    """Memory held for backward: bytes saved by autograd during an update, the same at 2 and 8 steps."""
    def saved_bytes(steps):
        run = H.setup(_cfg(ckpts, tmp_path, steps=steps, k=0, val_prompts=0), text_encoder)
        sizes, seen = [], set()

        def pack(t):
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            if key not in seen:
                seen.add(key)
                sizes[-1] += key[1]
            return t
        step = run.optimizer.step

        def mark(*a, **k):
            sizes.append(0)
            seen.clear()
            return step(*a, **k)
        run.optimizer.step = mark
        sizes.append(0)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            trajectory(run, 0)
        return max(sizes)
    assert saved_bytes(2) == saved_bytes(8) > 0


def test_one_update_equals_an_independent_reward_gradient(ckpts, tmp_path, text_encoder):
    cfg = _cfg(ckpts, tmp_path, steps=2, k=1, optimizer="sgd", lr=0.05, grad_clip=0.0, warmup=0,
               min_lr_ratio=1.0, val_prompts=0)
    run = H.setup(cfg, text_encoder)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    # independent computation with a copy of the same weights
    import copy
    twin = copy.deepcopy(run.model)
    prep = run.prepare_batch(0)
    sampler = prep.sampler(twin, run.bundle.diffusion)
    with torch.no_grad():
        x1 = sampler.step(prep.x_T, 0).out.prev_sample
    x0 = sampler.step(x1, 1).out.pred_x0
    r = run.reward(x0, prep.prompts, None, mask=prep.mask).mean()
    grads = torch.autograd.grad(-r, [p for p in twin.parameters() if p.requires_grad], allow_unused=True)
    run.optimizer.param_groups[0]["lr"] = 0.05
    trajectory(run, 0)
    names = [n for n, p in twin.named_parameters() if p.requires_grad]
    moved = 0
    for name, g in zip(names, grads):
        want = before[name] if g is None else before[name].add(g, alpha=-0.05)  # SGD's own arithmetic
        got = dict(run.model.named_parameters())[name].detach()
        torch.testing.assert_close(got, want, atol=0, rtol=0)
        moved += int(not torch.equal(got, before[name]))
    assert moved > 0


def test_pair_distance_is_the_rms_over_valid_frames():
    x = torch.zeros(4, 3, 2)
    x[1, :2] = 3.0  # pair 0 differs by 3 on its two valid frames; frame 2 is padding
    x[1, 2] = 100.0
    x[3] = 1.0  # pair 1 differs by 1 on every frame
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(H.pair_distance(x, mask), torch.tensor([3.0, 1.0]))


def test_diversity_guard_pairs_prompts_and_pushes_collapsed_pairs_apart(ckpts, tmp_path, text_encoder):
    with pytest.raises(UserError, match="batch_size must be even"):
        _cfg(ckpts, tmp_path, diversity_weight=1.0, batch_size=3).validate()
    cfg = _cfg(ckpts, tmp_path, steps=2, k=1, batch_size=4, diversity_weight=1.0, reward_weight=0.0,
               optimizer="sgd", lr=0.5, grad_clip=0.0, warmup=0, min_lr_ratio=1.0, val_prompts=0)
    run = H.setup(cfg, text_encoder)
    prep = run.prepare_batch(0)
    assert prep.prompts[0::2] == prep.prompts[1::2] and not torch.equal(prep.x_T[0::2], prep.x_T[1::2])
    sampler = prep.sampler(run.model, run.bundle.diffusion)
    with torch.no_grad():
        x1 = sampler.step(prep.x_T, 0).out.prev_sample

    def guard():
        return run.objective(sampler.step(x1, 1), sampler, prep)

    # the tuned copy still equals the base (train-mode vs eval-mode kernels differ in the last bits only)
    assert float(guard()["diversity_guard"]) < 1e-6
    with torch.no_grad():  # collapse the tuned model: its x0 now varies half as much as the base's
        run.model.motion_out.weight.mul_(0.5)
        run.model.motion_out.bias.mul_(0.5)
    terms = guard()
    assert float(terms["diversity_ratio"]) < 0.9 and float(terms["diversity_guard"]) > 0.1
    terms["loss"].backward()
    run.clip_and_step()
    after = guard()
    assert float(after["diversity_ratio"]) > float(terms["diversity_ratio"])  # the step spread the pairs


def test_diversity_margin_asks_pairs_to_spread_beyond_the_base(ckpts, tmp_path, text_encoder):
    with pytest.raises(UserError, match=r"diversity_margin must be in \[0.0, 1.0\]"):
        _cfg(ckpts, tmp_path, diversity_weight=1.0, diversity_margin=1.5).validate()
    cfg = _cfg(ckpts, tmp_path, steps=2, k=1, batch_size=4, diversity_weight=1.0, diversity_margin=0.2,
               reward_weight=0.0, val_prompts=0)
    run = H.setup(cfg, text_encoder)
    prep = run.prepare_batch(0)
    sampler = prep.sampler(run.model, run.bundle.diffusion)
    terms = run.objective(sampler.step(prep.x_T, 0), sampler, prep)
    # the tuned copy equals the base (ratio 1), so the guard reads the margin: it binds before any collapse
    assert float(terms["diversity_ratio"]) == pytest.approx(1.0, abs=1e-4)
    assert float(terms["diversity_guard"]) == pytest.approx(0.2, abs=1e-4)


def test_anchor_steps_take_guard_only_updates_outside_the_optimized_set(ckpts, tmp_path, text_encoder):
    for bad in (dict(k=0, anchor_steps=1, base_penalty=1.0), dict(k=1, anchor_steps=1),
                dict(k=1, anchor_steps=1, base_penalty=1.0, method="refl")):
        with pytest.raises(UserError, match="anchor_steps"):
            _cfg(ckpts, tmp_path, **bad).validate()
    cfg = _cfg(ckpts, tmp_path, steps=4, k=1, anchor_steps=2, base_penalty=1.0, optimizer="sgd", lr=0.5,
               grad_clip=0.0, warmup=0, min_lr_ratio=1.0, val_prompts=0)
    run = H.setup(cfg, text_encoder)
    assert run.optimized_steps(4, 0) == {3}
    picks = [run.anchor_steps(4, i, {3}) for i in range(6)]
    assert all(len(a) == 2 and a <= {0, 1, 2} for a in picks) and len({frozenset(a) for a in picks}) > 1
    prep = run.prepare_batch(0)
    sampler = prep.sampler(run.model, run.bundle.diffusion)
    with torch.no_grad():  # move the tuned model away from the base
        run.model.motion_out.weight.mul_(0.5)
        run.model.motion_out.bias.mul_(0.5)

    def anchor():
        return run.objective(sampler.step(prep.x_T, 0), sampler, prep, guards_only=True)

    terms = anchor()
    assert "reward" not in terms and "foot_skating" not in terms  # no reward: the guards only
    torch.testing.assert_close(terms["loss"], terms["base_penalty"])  # weight 1, and nothing else
    terms["loss"].backward()
    run.clip_and_step()
    assert float(anchor()["base_penalty"]) < float(terms["base_penalty"])  # the update pulled it to the base
    updates = []
    step = run.optimizer.step
    run.optimizer.step = lambda *a, **k: (updates.append(1), step(*a, **k))[1]
    m = trajectory(run, 1)
    assert len(updates) == 3 and m["optimized_steps"] == 1  # one reward update, two anchor updates
    assert "anchor_base_penalty" in m and "anchor_reward" not in m and "reward" in m


def _watch(model, log):
    first = next(p for p in model.parameters() if p.requires_grad)
    model.register_forward_pre_hook(lambda m, a: log.append(first.detach().clone()))


def test_step_updates_in_place_and_chain_samples_with_a_frozen_copy(ckpts, tmp_path, text_encoder):
    run = H.setup(_cfg(ckpts, tmp_path, steps=4, variant="step", lr=1e-2), text_encoder)
    seen = []
    _watch(run.model, seen)
    trajectory(run, 0)
    assert len(seen) == 4 and not torch.equal(seen[0], seen[-1])  # later steps use new weights

    run = H.setup(_cfg(ckpts, tmp_path, steps=4, variant="chain", lr=1e-2), text_encoder)
    start = _params(run.model)
    copy_seen, model_seen = [], []
    _watch(run.sampling_copy, copy_seen)
    _watch(run.model, model_seen)
    trajectory(run, 0)
    assert len(copy_seen) == 4 and model_seen == []  # the copy made the whole trajectory
    assert all(torch.equal(w, copy_seen[0]) for w in copy_seen)  # ... with unchanged weights
    assert any(not torch.equal(v, start[k]) for k, v in run.model.state_dict().items())  # model trained
    for k, v in run.model.state_dict().items():  # and the copy is synced at the trajectory's end
        assert torch.equal(v, run.sampling_copy.state_dict()[k])


def test_lora_keeps_base_weights_and_round_trips_exactly(ckpts, tmp_path, text_encoder):
    cfg = _cfg(ckpts, tmp_path, lora_rank=4, lr=5e-2, trajectories=2, val_prompts=2)
    run = H.setup(cfg, text_encoder)
    frozen = {k: v.clone() for k, v in run.model.state_dict().items() if "lora_" not in k}
    trajectory(run, 0)
    trajectory(run, 1)
    for k, v in run.model.state_dict().items():
        if "lora_" not in k:
            assert torch.equal(v, frozen[k]), k
    B = [p for n, p in run.model.named_parameters() if "lora_B" in n]
    assert B and any(p.abs().sum() > 0 for p in B)
    # merged (plain weights, eval) equals the unmerged adapter (train mode, dropout 0)
    x = torch.randn(2, 12, 263, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([10, 700])
    tok, tmask = text_encoder.encode_tokens(["a person waves", "a person walks"])
    with torch.no_grad():
        unmerged = run.model(x, t, tok, tmask)
        plain = merged(run.model).eval()(x, t, tok, tmask)
        base_out = run.bundle.denoiser(x, t, tok, tmask)
    # in float32 the merge's rounding of W + BA reaches 3e-5 with some thread layouts; float64 shows the identity
    m64 = copy.deepcopy(run.model).double()
    with torch.no_grad():
        torch.testing.assert_close(merged(m64).eval()(x.double(), t, tok.double(), tmask),
                                   m64(x.double(), t, tok.double(), tmask), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain, unmerged, atol=1e-4, rtol=1e-4)  # float32, as the app runs it
    assert not torch.allclose(plain, base_out, atol=1e-4)
    # save as a registry checkpoint and load it back through its parent: identical outputs
    kind, state, config = run.checkpoint_state()
    assert kind == "lora" and all(k.startswith("denoiser.") and "lora_" in k for k in state)
    from easytune.checkpoints import checkpoint_hash
    save_checkpoint(tmp_path / "adapter", state, kind=kind, config=config, dataset=run.bundle.dataset,
                    meta={"parent": str(ckpts / "base"), "parent_hash": checkpoint_hash(ckpts / "base")})
    assert (tmp_path / "adapter" / "model.safetensors").stat().st_size < 200_000
    loaded = load_base(tmp_path / "adapter", text_encoder=text_encoder)
    with torch.no_grad():
        torch.testing.assert_close(loaded.denoiser(x, t, tok, tmask), plain, atol=0, rtol=0)
    # a changed parent is refused
    bad = load_checkpoint(tmp_path / "adapter")
    save_checkpoint(tmp_path / "adapter2", bad.state, kind="lora", config=bad.config, dataset=bad.dataset,
                    meta={**bad.meta, "parent_hash": "0" * 16})
    with pytest.raises(UserError, match="now has weights"):
        load_base(tmp_path / "adapter2", text_encoder=text_encoder)


def test_finetune_raises_held_out_reward_beyond_the_lr0_control(ckpts, tmp_path, text_encoder):
    gains = {}
    for lr in (0.0, 3e-3):
        cfg = _cfg(ckpts, tmp_path / f"lr{lr}", trajectories=8, batch_size=4, lr=lr, val_every=0, warmup=0)
        s = H.finetune(cfg, text_encoder=text_encoder, progress=False)
        gains[lr] = (s["held_out_gain"]["gain"], s["held_out_gain"]["ci"])
        assert s["validation"][-1]["reward"] - s["validation"][0]["reward"] == pytest.approx(gains[lr][0])
    assert gains[0.0] == (0.0, 0.0)  # lr 0: same weights, same held-out noise, same reward
    gain, ci = gains[3e-3]
    assert gain > ci > 0, gains


def test_interrupted_run_resumes_to_the_same_weights(ckpts, tmp_path, text_encoder):
    whole = H.finetune(_cfg(ckpts, tmp_path / "whole", trajectories=5, save_every=2, val_every=0),
                       text_encoder=text_encoder, progress=False)

    def crash(metrics):
        if metrics["step"] == 3:
            raise KeyboardInterrupt
    cfg = _cfg(ckpts, tmp_path / "cut", trajectories=5, save_every=2, val_every=0)
    with pytest.raises(KeyboardInterrupt):
        H.finetune(cfg, text_encoder=text_encoder, progress=False, on_step=crash)
    assert load_checkpoint(tmp_path / "cut" / "run" / "last").meta["steps"] == 2
    resumed = H.finetune(cfg, text_encoder=text_encoder, progress=False)
    assert resumed["step"] == whole["step"] == 5
    a = load_checkpoint(tmp_path / "whole" / "run" / "last").state
    b = load_checkpoint(tmp_path / "cut" / "run" / "last").state
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rerunning_a_finished_run_keeps_its_wall_time_and_peak_memory(ckpts, tmp_path, text_encoder, monkeypatch):
    """The same command again (as a queue script does) resumes at the end: nothing is trained, and the summary
    still reports the whole run's wall time and the peak RSS of every session, not the no-op's."""
    cfg = _cfg(ckpts, tmp_path, trajectories=3, save_every=1, val_every=0)
    monkeypatch.setattr(H, "_rss_mib", lambda: 900.0)
    first = H.finetune(cfg, text_encoder=text_encoder, progress=False)
    monkeypatch.setattr(H, "_rss_mib", lambda: 100.0)
    again = H.finetune(cfg, text_encoder=text_encoder, progress=False)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert again["step"] == first["step"] == 3
    assert saved["peak_rss_mib"] == again["peak_rss_mib"] == 900.0
    assert saved["wall_s"] >= first["wall_s"] > 0


def test_time_budget_counts_trajectories_only_and_ends_with_a_held_out_check(ckpts, tmp_path, text_encoder):
    cfg = _cfg(ckpts, tmp_path, trajectories=1000, time_budget=1.0, val_every=0, save_every=1000)
    out = H.finetune(cfg, text_encoder=text_encoder, progress=False)
    assert out["stopped"] and out["budget_spent"] and 1 <= out["step"] < 1000
    assert out["train_s"] >= 1.0
    val = out["validation"]
    assert [v["step"] for v in val] == [0, out["step"]] and val[0]["train_s"] == 0.0
    assert val[-1]["train_s"] == pytest.approx(out["train_s"], abs=1e-3)
    # the validation passes are not on the budget's clock: the run's wall time (rounded to 0.1 s) covers train_s
    assert load_checkpoint(tmp_path / "run" / "last").meta["wall_s"] >= out["train_s"] - 0.05
    again = H.finetune(cfg, text_encoder=text_encoder, progress=False)  # resumed: the budget is already spent
    assert again["step"] == out["step"] and again["budget_spent"]


def test_timed_checks_fall_once_per_interval_of_training_time(ckpts, tmp_path, text_encoder):
    cfg = _cfg(ckpts, tmp_path, trajectories=1000, time_budget=1.0, val_every=0, val_every_s=0.25, save_every=1000)
    out = H.finetune(cfg, text_encoder=text_encoder, progress=False)
    times = [v["train_s"] for v in out["validation"]]
    assert times[0] == 0.0 and times == sorted(times) and len(times) >= 3
    # every check but the budget's last one opens a new 0.25 s interval: at most one check per interval
    buckets = [int(t // 0.25) for t in times[:-1]]
    assert buckets == sorted(set(buckets))
    assert len(out["validation"]) <= int(out["train_s"] // 0.25) + 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(ckpts, tmp_path, text_encoder, monkeypatch):
    cfg = _cfg(ckpts, tmp_path, trajectories=6, save_every=2, val_every=0)
    real = H.FinetuneRun.objective
    calls = []

    def poisoned(self, s, sampler, prep, **kw):
        terms = real(self, s, sampler, prep, **kw)
        calls.append(1)
        if len(calls) > 3 * 3:  # trajectory 4 (3 optimized steps per trajectory)
            terms["loss"] = terms["loss"] * float("nan")
        return terms
    monkeypatch.setattr(H.FinetuneRun, "objective", poisoned)
    with pytest.raises(NonFiniteError, match="kept its last saved checkpoint"):
        H.finetune(cfg, text_encoder=text_encoder, progress=False)
    last = load_checkpoint(tmp_path / "run" / "last")
    assert last.meta["steps"] == 2 and all(torch.isfinite(v).all() for v in last.state.values())


def test_bad_settings_and_mismatched_reward_are_refused(ckpts, tmp_path, text_encoder):
    with pytest.raises(UserError, match="batch_size must be an integer from 1"):
        H.setup(_cfg(ckpts, tmp_path, batch_size=0), text_encoder)
    with pytest.raises(UserError, match="lr must be in"):
        H.setup(_cfg(ckpts, tmp_path, lr=float("nan")), text_encoder)
    from easytune import reward as R
    other = tmp_path / "reward_other"
    R.save_reward_checkpoint(other, RewardModel(R.model_preset("tiny", True)), train_config=R.RewardTrainConfig(),
                             mean=torch.zeros(263), std=torch.ones(263), dataset_info={"stamp": "toy-v1"}, meta={})
    with pytest.raises(UserError, match="different feature normalizations"):
        H.setup(_cfg(ckpts, tmp_path, reward=str(other)), text_encoder)
    R.save_reward_checkpoint(other, RewardModel(R.model_preset("tiny", True)), train_config=R.RewardTrainConfig(),
                             dataset_info={"stamp": "other-v2"}, meta={})
    with pytest.raises(UserError, match="trained on dataset other-v2"):
        H.setup(_cfg(ckpts, tmp_path, reward=str(other)), text_encoder)


def test_reward_ensemble_is_the_mean_of_its_members_and_each_must_fit(ckpts, tmp_path, text_encoder):
    from easytune import reward as R
    second = tmp_path / "reward_b"
    torch.manual_seed(7)  # a second model trained apart: other weights, same dataset and normalization
    R.save_reward_checkpoint(second, RewardModel(R.model_preset("tiny", True)), train_config=R.RewardTrainConfig(),
                             mean=R.load_reward_model(str(ckpts / "reward"), "cpu")[1].state["mean"],
                             std=R.load_reward_model(str(ckpts / "reward"), "cpu")[1].state["std"],
                             dataset_info={"stamp": "toy-v1"}, meta={})
    run = H.setup(_cfg(ckpts, tmp_path, reward_ensemble=str(second)), text_encoder)
    assert isinstance(run.reward, R.MeanReward) and len(run.reward.members) == 2
    x = torch.randn(3, 30, 263, requires_grad=True)
    texts = PROMPTS[:3]
    a, b = (m(x, texts, None) for m in run.reward.members)
    assert not torch.allclose(a, b)  # two different models, so the mean is not either one
    torch.testing.assert_close(run.reward(x, texts, None), (a + b) / 2)
    run.reward(x, texts, None).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # differentiable through both members
    trajectory(run, 0)  # a whole EasyTune trajectory runs on the ensemble
    with pytest.raises(UserError, match="repeats a reward model"):
        H.setup(_cfg(ckpts, tmp_path, reward_ensemble=str(ckpts / "reward")), text_encoder)
    other = tmp_path / "reward_other"
    R.save_reward_checkpoint(other, RewardModel(R.model_preset("tiny", True)), train_config=R.RewardTrainConfig(),
                             dataset_info={"stamp": "other-v2"}, meta={})
    with pytest.raises(UserError, match="trained on dataset other-v2"):
        H.setup(_cfg(ckpts, tmp_path, reward_ensemble=f"{second},{other}"), text_encoder)


def test_selection_rule_keeps_realism_and_diversity_then_takes_alignment():
    from easytune.finetune.select import choose

    def row(step, r1, fid, mm, skate, mmdist=3.0):
        return {"step": step, "R-Precision top-1": r1, "FID": fid, "MultiModality": mm, "foot_skating": skate,
                "MM-Dist": mmdist, "jerk": 100.0}
    base = row(0, 0.80, 2.0, 1.0, 0.15)
    assert choose([base, row(50, 0.95, 2.5, 1.0, 0.1)], 0.9, 1.0) == 0  # worse FID: not eligible
    assert choose([base, row(50, 0.95, 1.0, 0.5, 0.1)], 0.9, 1.0) == 0  # diversity lost
    assert choose([base, row(50, 0.95, 1.0, 1.0, 0.3)], 0.9, 1.0) == 0  # feet slide more
    rows = [base, row(50, 0.85, 1.5, 0.95, 0.14), row(100, 0.90, 1.9, 0.92, 0.15, 2.9),
            row(150, 0.90, 1.2, 0.95, 0.1, 2.8)]
    assert choose(rows, 0.9, 1.0) == 3  # best R@1, tie broken by the lower MM-Dist
    for r, absent in zip(rows, (6.0, 5.5, 5.6, 5.9)):
        r["MM-Dist (absent)"] = absent
    rows.append(row(200, 0.895, 1.1, 0.95, 0.1))
    rows[-1]["MM-Dist (absent)"] = 5.7
    # composition: R@1 within 0.01 of the best qualifying (0.90): steps 100, 150, 200; the lowest absent MM-Dist
    assert choose(rows, 0.9, 1.0, "composition", 0.01) == 2
    assert choose(rows, 0.9, 1.0, "composition", 0.0) == 2  # 100 and 150 tie on R@1; 100 composes better
    assert choose(rows, 0.9, 1.0, "composition", 0.1) == 1  # step 50 (R@1 0.85) now close enough, and lowest
    assert choose([base, row(50, 0.95, 2.5, 1.0, 0.1)], 0.9, 1.0, "composition") == 0  # nothing qualifies: the base


def test_run_plot_and_selection_refuse_test_split(ckpts, tmp_path, text_encoder, monkeypatch):
    from easytune.finetune import select as S

    cfg = _cfg(ckpts, tmp_path, trajectories=2, val_every=1)
    H.finetune(cfg, text_encoder=text_encoder, progress=False)
    run = tmp_path / "run"
    assert [s for s, _ in S.snapshots(run)] == [0, 1, 2]
    assert len(S.read_log(run)) == 2
    png = S.plot_run(run, tmp_path / "run.png")
    assert png.stat().st_size > 5000
    with pytest.raises(UserError, match="test split"):
        S.main(S.SelectConfig(run=str(run), split="test"))
    # a dataset with no content-style combination lacking a motion: refused before any snapshot is evaluated
    import easytune.evaluate as E
    monkeypatch.setattr(E, "composition_set", lambda *a, **k: ([], [], []))
    monkeypatch.setattr(E, "main", lambda *a, **k: pytest.fail("evaluated a snapshot before refusing"))
    with pytest.raises(UserError, match=r"no content-style combination without a motion"):
        S.main(S.SelectConfig(run=str(run), rule="composition", device="cpu"))


def test_evaluate_reads_a_lora_checkpoint_and_reports_reward(ckpts, tmp_path, text_encoder):
    import numpy as np

    from easytune import evaluate as E
    from easytune.reward import RewardScorer, load_reward_model

    cfg = _cfg(ckpts, tmp_path, lora_rank=2, trajectories=1, val_prompts=0)
    H.finetune(cfg, text_encoder=text_encoder, progress=False)
    last = tmp_path / "run" / "last"
    assert load_checkpoint(last).kind == "lora"
    gen, path = E.checkpoint_generator(str(last), "cpu", None)
    motions = gen(["a person waves", "a person walks"], [24, 30], 0, None)
    assert [m.shape for m in motions] == [(24, 263), (30, 263)]
    assert E.cache_tag(last, None, None).endswith("_s3_g2_e0")
    model, _ = load_reward_model(str(ckpts / "reward"), "cpu")
    scorer = RewardScorer(model, text_encoder)
    fn = E.reward_mean(scorer, batch=1)
    want = np.mean([float(scorer(torch.from_numpy(m)[None], [t], None)) for m, t in
                    zip(motions, ["a person waves", "a person walks"])])
    assert fn(motions, ["a person waves", "a person walks"]) == pytest.approx(want, abs=1e-5)


def test_physical_rewards_match_the_metrics_and_carry_gradient(humanml3d_reference):
    import numpy as np

    from easytune import metrics as M
    from easytune.reward import available_rewards, get_reward

    assert {"foot_skating", "floor_penetration", "jerk"} <= set(available_rewards())
    feats = np.load(humanml3d_reference / "new_joint_vecs" / "012314.npy")
    mean = torch.tensor(np.load(humanml3d_reference / "Mean.npy")).float()
    std = torch.tensor(np.load(humanml3d_reference / "Std.npy")).float()
    x = ((torch.tensor(feats).float() - mean) / std)[None].requires_grad_(True)
    jerk = get_reward("jerk", mean=mean, std=std)(x, ["a person walks"], None)
    from easytune.plausibility import joints_of
    joints = joints_of(x, mean, std)[0].detach().numpy()
    assert -float(jerk) == pytest.approx(M.jerk(joints), rel=1e-4)
    skate = get_reward("foot_skating", mean=mean, std=std)(x, ["a person walks"], None)
    (skate + jerk * 1e-3).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # a motion that slides its feet along the floor scores worse than the same motion standing still
    still = torch.zeros(1, 20, 22, 3)
    still[..., 1] = 0.02
    slide = still.clone()
    slide[..., 0] = torch.arange(20.0)[None, :, None] * 0.1  # 2 m/s
    from easytune.plausibility import foot_skating
    assert float(foot_skating(slide)) == pytest.approx(2.0, rel=1e-3) and float(foot_skating(still)) < 0.01
    mask = torch.ones(1, 20, dtype=torch.bool)
    mask[:, 10:] = False
    assert float(foot_skating(slide, mask)) == pytest.approx(2.0, rel=1e-3)


def test_soup_is_the_weighted_mean_of_one_base_s_fine_tunes_and_refuses_strangers(ckpts, tmp_path, text_encoder):
    from easytune.finetune.soup import SoupConfig, make_soup

    runs = {}
    for name, kw in {"a": {"seed": 0}, "b": {"seed": 1, "lr": 3e-3}, "lora": {"lora_rank": 2, "lr": 5e-2}}.items():
        H.finetune(_cfg(ckpts, tmp_path / name, trajectories=1, val_prompts=0, **kw), text_encoder=text_encoder,
                   progress=False)
        runs[name] = str(tmp_path / name / "run" / "last")
    den = {k: load_base(p, text_encoder=text_encoder).denoiser.state_dict() for k, p in
           {**runs, "base": str(ckpts / "base")}.items()}
    assert not torch.equal(den["a"]["motion_out.weight"], den["b"]["motion_out.weight"])

    out = make_soup(SoupConfig(ingredients=[runs["a"], runs["b"]], weights=[3.0, 1.0], out=str(tmp_path / "s")),
                    text_encoder)
    soup = load_checkpoint(out)
    assert soup.kind == "finetune" and soup.meta["method"] == "soup"
    assert soup.meta["parent_hash"] == load_checkpoint(runs["a"]).meta["parent_hash"]
    assert [r["weight"] for r in soup.meta["ingredients"]] == [0.75, 0.25]
    assert "| 0.750 |" in (out / "README.md").read_text()
    mixed = load_base(out, text_encoder=text_encoder)  # loads like any fine-tune, with the base's sampler
    assert (mixed.steps, mixed.guidance) == (3, 2.0)
    for k, v in mixed.denoiser.state_dict().items():
        torch.testing.assert_close(v, 0.75 * den["a"][k] + 0.25 * den["b"][k], atol=1e-6, rtol=0)
    # WiSE-FT: the base itself and a LoRA adapter (merged into its parent first) are ingredients too
    out2 = make_soup(SoupConfig(ingredients=[str(ckpts / "base"), runs["lora"]], out=str(tmp_path / "w")),
                     text_encoder)
    assert load_checkpoint(out2).meta["parent"] == str(ckpts / "base")  # a base is its own parent, as named
    for k, v in load_base(out2, text_encoder=text_encoder).denoiser.state_dict().items():
        torch.testing.assert_close(v, 0.5 * den["base"][k] + 0.5 * den["lora"][k], atol=1e-6, rtol=0)

    other = load_checkpoint(ckpts / "base")  # another base: same layout, other weights
    save_checkpoint(tmp_path / "base2", {k: v + 0.01 for k, v in other.state.items()}, kind="base",
                    config=other.config, dataset=other.dataset)
    for cfg, msg in [
        (SoupConfig(ingredients=[runs["a"]]), "at least 2 ingredients"),
        (SoupConfig(ingredients=[runs["a"], runs["b"]], weights=[1.0]), "1 values for 2 ingredients"),
        (SoupConfig(ingredients=[runs["a"], runs["b"]], weights=[1.0, -1.0]), "positive finite"),
        (SoupConfig(ingredients=[runs["a"], str(ckpts / "reward")], out=str(tmp_path / "x")), "holds a 'reward'"),
        (SoupConfig(ingredients=[runs["a"], str(tmp_path / "base2")], out=str(tmp_path / "x")), "one base"),
        (SoupConfig(ingredients=[runs["a"], runs["b"]], out=runs["b"]), "one of the ingredients"),
        (SoupConfig(ingredients=[runs["a"], runs["b"]], out=str(ckpts / "base")), "not a soup"),
    ]:
        with pytest.raises(UserError, match=msg):
            make_soup(cfg, text_encoder)
    assert load_checkpoint(ckpts / "base").kind == "base"  # the refused --out kept its checkpoint
