import json
import math

import numpy as np
import pytest
import torch

from easytune import evaluate as E
from easytune import evaluator as V
from easytune import metrics
from easytune import reward as R
from easytune.errors import UserError
from easytune.training import epoch_batch
from models.evaluator import EvaluatorModel
from test_reward import HashTextEncoder, collate, synthetic_batches


def tiny_evaluator(seed=0):
    torch.manual_seed(seed)
    return EvaluatorModel(V.model_preset("tiny", embed_dim=16)).eval()


def test_shapes_downsampling_and_padding_invariance():
    model = tiny_evaluator()
    x = torch.randn(2, 40, 263)
    codes = model.movement(x[..., :259], torch.tensor([40, 22]))
    assert codes.shape == (2, 10, 32)  # 4x temporal downsampling
    emb = model.encode_motion(x, torch.tensor([40, 22]))
    assert emb.shape == (2, 16)
    # the 22-frame motion embeds the same alone as padded to 40 frames with junk after its end
    alone = model.encode_motion(x[1:2, :22], torch.tensor([22]))
    torch.testing.assert_close(emb[1:2], alone, atol=1e-5, rtol=1e-5)
    # the contact dims (259:263) are ignored
    y = x.clone()
    y[..., 259:] = 5.0
    torch.testing.assert_close(model.encode_motion(y, torch.tensor([40, 22])), emb)
    tokens, mask = HashTextEncoder().encode_tokens(["a person walks", "kick"])
    assert model.encode_text(tokens, mask).shape == (2, 16)


def test_margin_loss_hand_value():
    t = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    m = torch.tensor([[0.0, 1.0], [3.0, 4.0]], dtype=torch.float64)
    # d = [[1, 5], [sqrt(9 + 9) = 4.243, 0]]; positives 1 and 0; negatives 5 and 4.243, margin 6
    out = V.margin_loss(t, m, margin=6.0)
    assert float(out["positive"]) == pytest.approx(0.5)
    assert float(out["negative"]) == pytest.approx(((6 - 5) ** 2 + (6 - math.sqrt(18)) ** 2) / 2)
    excl = torch.tensor([[False, True], [False, False]])
    assert float(V.margin_loss(t, m, 6.0, excl)["negative"]) == pytest.approx((6 - math.sqrt(18)) ** 2)


def test_embedder_rejects_bad_motions_and_texts():
    emb = V.Embedder(tiny_evaluator(), HashTextEncoder())
    with pytest.raises(UserError, match=r"shape \(frames, 263\)"):
        emb.motions([np.zeros((10, 262))])
    with pytest.raises(UserError, match="at least 4"):
        emb.motions([np.zeros((3, 263))])
    bad = np.zeros((10, 263))
    bad[2, 2] = np.nan
    with pytest.raises(UserError, match="NaN"):
        emb.motions([bad])
    with pytest.raises(UserError, match="empty"):
        emb.texts(["walk", ""])
    # batching does not change embeddings
    rng = np.random.default_rng(0)
    ms = [rng.normal(size=(n, 263)).astype(np.float32) for n in (8, 30, 17, 12)]
    one = np.concatenate([emb.motions([m]) for m in ms])
    np.testing.assert_allclose(emb.motions(ms), one, atol=1e-5)


def test_evaluator_training_separates_the_toy_labels(tmp_path):
    torch.manual_seed(0)
    items = synthetic_batches(n_labels=32, per_label=2, frames=24)
    bank = R.TextBank(HashTextEncoder())
    model = EvaluatorModel(V.model_preset("tiny", embed_dim=16))
    cfg = V.EvaluatorTrainConfig(margin=3.0, fn_threshold=0.95)

    def batch_fn(step):
        return collate([items[j] for j in epoch_batch(len(items), 32, 0, step)])

    R.fit(model, batch_fn, V.evaluator_loss_fn(bank, cfg), schedule=R.lr_schedule(3e-3, 5, 80), log_every=40,
          progress=False)
    emb = V.Embedder(model, HashTextEncoder())
    t = emb.texts([it["caption"] for it in items])
    m = emb.motions([it["motion"].numpy() for it in items])
    top = metrics.r_precision(t, m, [it["label"] for it in items], seed=0)
    assert top[2] > 0.5  # chance: 3/32 = 0.09
    # checkpoint round trip through the registry loader
    from easytune.checkpoints import save_checkpoint
    import dataclasses
    save_checkpoint(tmp_path / "ev", {f"model.{k}": v for k, v in model.state_dict().items()}, kind="evaluator",
                    config={"model": dataclasses.asdict(model.cfg)})
    loaded, ckpt = V.load_evaluator(str(tmp_path / "ev"), "cpu")
    np.testing.assert_allclose(V.Embedder(loaded, HashTextEncoder()).motions([m_ for m_ in
                               [it["motion"].numpy() for it in items[:3]]]), m[:3], atol=1e-5)


def _toy_test_set(n_labels=40, seed=0):
    rng = np.random.default_rng(seed)
    motions, captions, labels = [], [], []
    for lab in range(n_labels):
        base = rng.normal(size=263)
        for k in range(2):
            length = int(rng.integers(12, 30))
            motions.append((base + 0.2 * rng.normal(size=(length, 263))).astype(np.float32) * 0.1)
            captions.append([f"motion number {lab} take {k} version a", f"motion number {lab} take {k} version b"])
            labels.append((lab, 0))
    return E.TestSet(motions, captions, labels, np.zeros(263), np.ones(263))


def test_evaluate_oracle_generator_matches_the_real_row_and_caches(tmp_path):
    test = _toy_test_set()
    emb = V.Embedder(tiny_evaluator(), HashTextEncoder())
    protocol = E.Protocol("t", replications=2, steps=None, mm_texts=4, mm_repeats=3, mm_pairs=3)
    calls = []

    def oracle(texts, lengths, seed, steps):
        calls.append(len(texts))
        by_caption = {c: m for caps, m in zip(test.captions, test.motions) for c in caps}
        return [by_caption[t][:n] for t, n in zip(texts, lengths)]

    cache = E.MotionCache(tmp_path, "hash123", protocol.name)
    res = E.evaluate_sets(test, emb, protocol, seed=3, generate=oracle, cache=cache)
    real, gen = res["rows"]["real"], res["rows"]["generated"]
    assert len(real["FID"]) == 2 and gen["FID"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert gen["R-Precision top-1"] == pytest.approx(real["R-Precision top-1"])
    assert gen["MM-Dist"] == pytest.approx(real["MM-Dist"])
    assert gen["MultiModality"] == pytest.approx([0.0, 0.0], abs=1e-6)  # the oracle repeats itself
    assert gen["jerk"] == pytest.approx(real["jerk"])
    assert real["FID"][0] > 0  # half vs half of a finite set is not 0: the metric's floor
    assert calls == [80, 12, 80, 12]
    again = E.evaluate_sets(test, emb, protocol, seed=3, generate=oracle, cache=cache)
    assert calls == [80, 12, 80, 12]  # served from the cache
    assert again["rows"]["generated"]["FID"] == pytest.approx(gen["FID"], abs=1e-6)
    table = E.format_table(res)
    assert table.startswith("Protocol: protocol 't': 2 replications") and "±" in table and "| real |" in table
    summary = E.summarize(res)
    assert summary["generated"]["FID"][0] == pytest.approx(0.0, abs=1e-6)


def test_evaluate_splits_mm_dist_fid_and_reward_by_seen_and_unseen_combinations():
    test = _toy_test_set()
    test.groups = ["unseen" if lab[0] % 4 == 0 else "seen" for lab in test.labels]  # 20 unseen motions of 80
    emb = V.Embedder(tiny_evaluator(), HashTextEncoder())
    protocol = E.Protocol("t", replications=1, steps=None, mm_texts=2, mm_repeats=2, mm_pairs=2)
    by_caption = {c: m for caps, m in zip(test.captions, test.motions) for c in caps}
    unseen_texts = {c for caps, g in zip(test.captions, test.groups) if g == "unseen" for c in caps}

    def worse_when_unseen(texts, lengths, seed, steps):  # exact on seen combinations, off on unseen ones
        return [by_caption[t][:n] + (0.5 if t in unseen_texts else 0.0) for t, n in zip(texts, lengths)]

    def mean_length(motions, texts):  # a stand-in reward: the mean length of the motions it is given
        return float(np.mean([len(m) for m in motions]))

    res = E.evaluate_sets(test, emb, protocol, seed=1, generate=worse_when_unseen, reward=mean_length)
    gen, real = res["rows"]["generated"], res["rows"]["real"]
    texts = test.draw_captions(1)
    t_emb, m_emb = emb.texts(texts), emb.motions(worse_when_unseen(texts, [len(m) for m in test.motions], 1, None))
    for g in E.GROUPS:
        idx = [i for i, gg in enumerate(test.groups) if gg == g]
        assert gen[f"MM-Dist ({g})"][0] == pytest.approx(np.linalg.norm(t_emb[idx] - m_emb[idx], axis=1).mean(),
                                                          rel=1e-5)
        assert gen[f"reward ({g})"][0] == pytest.approx(np.mean([len(test.motions[i]) for i in idx]))
        assert f"FID ({g})" in real and f"MM-Dist ({g})" in real
    assert gen["reward"][0] == pytest.approx(np.mean([len(m) for m in test.motions]))  # weighted from the groups
    assert gen["FID (seen)"][0] == pytest.approx(0.0, abs=1e-6) and gen["FID (unseen)"][0] > 0.01
    assert gen["MM-Dist (seen)"][0] == pytest.approx(real["MM-Dist (seen)"][0], rel=1e-5)
    n_u = test.groups.count("unseen")
    assert gen["MM-Dist"][0] == pytest.approx(((80 - n_u) * gen["MM-Dist (seen)"][0] + n_u * gen["MM-Dist (unseen)"][0])
                                              / 80, rel=1e-5)
    table = E.format_table(res)
    assert "| MM-Dist (seen) | MM-Dist (unseen) | FID (seen) | FID (unseen) | reward (seen) | reward (unseen) |" in table
    test.groups = ["seen"] * len(test.motions)  # one group only: nothing to split
    assert "MM-Dist (seen)" not in E.evaluate_sets(test, emb, protocol, generate=worse_when_unseen)["rows"]["generated"]
    unseen_only = E.TestSet(test.motions, test.captions, [(lab[0] % 21, 0) for lab in test.labels], test.mean, test.std)
    with pytest.raises(UserError, match="21 distinct .* seen and unseen combinations separately"):
        E.evaluate_sets(unseen_only, emb, E.PROTOCOLS["cpu"])  # like the test split's 21 unseen combinations alone


def test_motion_cache_keeps_two_splits_side_by_side(tmp_path):
    cache = E.MotionCache(tmp_path, "hash123", "cpu")
    made = []

    def maker(n):
        return lambda: made.append(n) or [np.full((n, 263), float(n), np.float32)]

    test_a = cache.get_or_make("test", 0, ["a test caption"], [5], maker(5))
    val_a = cache.get_or_make("test", 0, ["a validation caption"], [7], maker(7))  # same part and seed, other request
    assert cache.get_or_make("test", 0, ["a test caption"], [5], maker(99))[0] == pytest.approx(test_a[0])
    assert cache.get_or_make("test", 0, ["a validation caption"], [7], maker(99))[0] == pytest.approx(val_a[0])
    assert made == [5, 7]  # neither evicted the other
    cache.get_or_make("test", 2, ["a test caption"], [5], maker(5))
    [entry] = cache.dir.glob("test_seed2_*.npz")
    entry.rename(cache.dir / "test_seed2.npz")  # the name caches had before the request was in it
    assert cache.get_or_make("test", 2, ["a test caption"], [5], maker(99))[0] == pytest.approx(test_a[0])
    assert made == [5, 7, 5]  # still read, not made again


def test_evaluate_shuffled_generator_scores_worse():
    test = _toy_test_set()
    emb = V.Embedder(tiny_evaluator(), HashTextEncoder())
    protocol = E.Protocol("t", replications=1, steps=None, mm_texts=2, mm_repeats=2, mm_pairs=2)
    rng = np.random.default_rng(0)

    def wrong(texts, lengths, seed, steps):
        return [test.motions[int(rng.integers(len(test.motions)))][:4] + 1.0 for _ in texts]

    res = E.evaluate_sets(test, emb, protocol, generate=wrong)
    assert res["rows"]["generated"]["FID"][0] > res["rows"]["real"]["FID"][0]


def test_protocols_and_bad_generator():
    assert (E.PROTOCOLS["paper"].replications, E.PROTOCOLS["paper"].steps, E.PROTOCOLS["paper"].mm_texts,
            E.PROTOCOLS["paper"].mm_repeats) == (20, 50, 100, 30)
    assert (E.PROTOCOLS["cpu"].replications, E.PROTOCOLS["cpu"].mm_texts, E.PROTOCOLS["cpu"].mm_repeats) == (5, 30, 10)
    test = _toy_test_set()
    emb = V.Embedder(tiny_evaluator(), HashTextEncoder())
    nan_gen = lambda texts, lengths, seed, steps: [np.full((n, 263), np.nan, np.float32) for n in lengths]  # noqa
    with pytest.raises(UserError, match="NaN"):
        E.evaluate_sets(test, emb, E.PROTOCOLS["cpu"], generate=nan_gen)
    few = E.TestSet(test.motions[:20], test.captions[:20], test.labels[:20], test.mean, test.std)
    with pytest.raises(UserError, match="at least 32"):
        E.evaluate_sets(few, emb, E.PROTOCOLS["cpu"])


def test_train_evaluator_and_evaluate_commands_end_to_end(tmp_path):
    from test_reward import write_toy_dataset

    data = write_toy_dataset(tmp_path / "data")
    cfg = V.EvaluatorTrainConfig(data=str(data), out=str(tmp_path / "ev"), preset="tiny", embed_dim=16, steps=40,
                                 batch_size=16, lr=3e-3, warmup=2, margin=3.0, fn_threshold=0.95, log_every=20)
    rep = V.main(cfg, text_encoder=HashTextEncoder())
    assert rep["test_motions"] == 56 and len(rep["r_precision_top123"]) == 3
    info = json.loads((tmp_path / "ev" / "config.json").read_text())
    assert info["kind"] == "evaluator" and info["config"]["train"]["seed"] == 1234
    assert "never a reward" in (tmp_path / "ev" / "README.md").read_text()

    from easytune.motion.dataset import MotionDataset
    ds = MotionDataset(data, "test", random_crop=False)
    real = [ds[i]["motion"].numpy() for i in range(len(ds))]
    truth = {c: real[i] for i in range(len(ds)) for c in ds.captions(i)}

    def oracle(texts, lengths, seed, steps):
        if len(texts) == len(real):  # the test pass: motions in test order (captions repeat across takes)
            return [m[:n] for m, n in zip(real, lengths)]
        return [truth[t][:n] for t, n in zip(texts, lengths)]  # the MultiModality pass
    ecfg = E.EvaluateConfig(evaluator=str(tmp_path / "ev"), data=str(data), out=str(tmp_path / "eval"),
                            protocol="cpu", device="cpu")
    res = E.main(ecfg, text_encoder=HashTextEncoder(), generate=oracle)
    assert res["test_motions"] == 56 and len(res["rows"]["generated"]["FID"]) == 5
    assert res["summary"]["generated"]["FID"][0] == pytest.approx(0.0, abs=1e-4)
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["summary"]["real"]["R-Precision top-1"][0] == pytest.approx(
        res["summary"]["generated"]["R-Precision top-1"][0])
    table = (tmp_path / "eval" / "table.md").read_text()
    assert "protocol 'cpu': 5 replications" in table and "| real test set |" in table


def test_cache_tag_follows_the_effective_sampler(tmp_path):
    import dataclasses

    from easytune.checkpoints import save_checkpoint
    from easytune.train_base import base_checkpoint_config, preset_tiny

    cfg = dataclasses.replace(preset_tiny(), sample_steps=10, guidance=2.5)
    folder = save_checkpoint(tmp_path / "ck", {"mean": torch.zeros(263), "std": torch.ones(263)}, kind="base",
                             config=base_checkpoint_config(cfg), dataset={"stamp": "x"})
    default = E.cache_tag(folder, None, None)
    assert default.endswith("_s10_g2.5_e0") and default == E.cache_tag(folder, 2.5, 10)
    assert E.cache_tag(folder, None, 20) != default and E.cache_tag(folder, 3.0, None) != default
    # a new default schedule in the checkpoint's config must not be served the old default's motions
    info = json.loads((folder / "config.json").read_text())
    info["config"]["sampling"]["steps"] = 20
    (folder / "config.json").write_text(json.dumps(info))
    assert E.cache_tag(folder, None, None) == E.cache_tag(folder, None, 20) != default


def test_evaluator_resume_after_a_cancel_is_exact(tmp_path):
    from test_reward import assert_same_weights, interrupted, write_toy_dataset

    data = write_toy_dataset(tmp_path / "data")
    cfg = V.EvaluatorTrainConfig(data=str(data), out=str(tmp_path / "full"), preset="tiny", embed_dim=16, steps=7,
                                 batch_size=16, lr=3e-3, warmup=2, margin=3.0, fn_threshold=0.95, save_every=3,
                                 max_frames=28)
    seen = []
    V.main(cfg, text_encoder=HashTextEncoder(), on_step=seen.append, progress=False)
    assert [m["step"] for m in seen] == list(range(1, 8)) and {"loss", "positive", "negative", "lr"} <= set(seen[0])
    on_step, stop, _ = interrupted(5)
    part = V.EvaluatorTrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "part")})
    res = V.main(part, text_encoder=HashTextEncoder(), on_step=on_step, should_stop=stop, progress=False)
    assert res == {"step": 5, "stopped": True} and not (tmp_path / "part" / "evaluator_report.json").exists()
    res = V.main(part, text_encoder=HashTextEncoder(), progress=False)
    assert res["step"] == 7 and not res["stopped"] and res["test_motions"] == 56
    assert_same_weights(tmp_path / "full", tmp_path / "part")


def test_fid_floor_extrapolates_to_two_independent_sets_of_the_full_size():
    """On Gaussian embeddings the floor at n matches the mean FID of two fresh independent sets of n,
    which half-vs-half at n/2 overstates (FID's small-sample bias)."""
    rng = np.random.default_rng(0)
    n, dim = 800, 16
    cov = np.diag(np.linspace(0.5, 2.0, dim))
    floor = E.fid_floor(rng.multivariate_normal(np.zeros(dim), cov, n), seed=1, splits=20)
    fresh = np.mean([metrics.fid(rng.multivariate_normal(np.zeros(dim), cov, n),
                                 rng.multivariate_normal(np.zeros(dim), cov, n)) for _ in range(20)])
    half = floor["half_vs_half_by_size"][n // 2]
    assert abs(floor["FID"] - fresh) < 0.25 * fresh, (floor, fresh)
    assert half > 1.5 * fresh  # the real row's half-vs-half reads about twice the floor
    assert abs(floor["intercept"]) < 0.5 * fresh


def test_composition_metrics_score_generated_motions_against_their_captions_only(tmp_path):
    test = _toy_test_set()
    emb = V.Embedder(tiny_evaluator(), HashTextEncoder())
    protocol = E.Protocol("t", replications=1, steps=None, mm_texts=4, mm_repeats=3, mm_pairs=3)
    captions = [caps[0] for caps in test.captions]
    keys, lengths = test.labels, [len(m) for m in test.motions]
    calls = []

    def matching(texts, lengths, seed, steps):  # each caption's own motion
        calls.append(len(texts))
        by_caption = {caps[0]: m for caps, m in zip(test.captions, test.motions)}
        return [by_caption[t][:n] for t, n in zip(texts, lengths)]

    cache = E.MotionCache(tmp_path, "hash123", protocol.name)
    good = E.composition_metrics(emb, captions, keys, lengths, matching, cache, protocol)
    again = E.composition_metrics(emb, captions, keys, lengths, matching, cache, protocol)
    assert calls == [80] and again == good  # served from the cache the second time
    t, m = emb.texts(captions), emb.motions(test.motions)
    assert good["MM-Dist (absent)"] == pytest.approx(metrics.mm_dist(t, m))
    assert good["R-Precision top-1 (absent)"] == pytest.approx(metrics.r_precision(t, m, keys, 1, protocol.r_batch, 0)[0])
    shifted = lambda texts, lengths, seed, steps: matching(texts[1:] + texts[:1], lengths[1:] + lengths[:1], seed, steps)  # noqa: E731
    worse = E.composition_metrics(emb, captions, keys, lengths, shifted, None, protocol)
    m_shifted = emb.motions(test.motions[1:] + test.motions[:1])
    assert worse["MM-Dist (absent)"] == pytest.approx(metrics.mm_dist(t, m_shifted))  # caption i against motion i
    assert worse["MM-Dist (absent)"] != pytest.approx(good["MM-Dist (absent)"])
    few = E.composition_metrics(emb, captions[:10], keys[:10], lengths[:10], matching, None, protocol)
    assert set(few) == {"MM-Dist (absent)"}  # fewer combinations than an R-Precision batch: MM-Dist only
