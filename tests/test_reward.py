import hashlib
import math

import numpy as np
import pytest
import torch

from easytune import reward as R
from easytune.errors import UserError
from easytune.training import ITEMS, epoch_batch, step_rng
from models.reward import RewardModel


class HashTextEncoder:
    """Deterministic stand-in for the MiniLM wrapper (same API): one fixed random 384-d vector per
    word, so captions sharing words have similar features. Unit tests stay fast and offline."""

    dim = 384

    def _vec(self, word: str) -> torch.Tensor:
        seed = int(hashlib.md5(word.encode()).hexdigest()[:8], 16)
        return torch.from_numpy(np.random.default_rng(seed).normal(size=self.dim).astype(np.float32))

    def encode_tokens(self, texts):
        words = [t.lower().split() for t in texts]
        length = max(len(w) for w in words)
        out = torch.zeros(len(texts), length, self.dim)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                out[i, j] = self._vec(w)
                mask[i, j] = True
        return out, mask

    def encode_sentence(self, texts):
        tokens, mask = self.encode_tokens(texts)
        s = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(s, dim=-1)


CONTENTS = ["walk", "run", "kick", "punch", "bow", "wave", "dance", "jump"]
STYLES = ["happy", "sad", "angry", "proud"]


def synthetic_batches(n_labels=16, per_label=4, frames=24, seed=0):
    """A learnable toy set: each (content, style) label has a fixed random feature pattern plus
    noise; captions name the content and style. Returns a list of collated-like batches."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(len(CONTENTS), 263, generator=g)
    style_pat = torch.randn(len(STYLES), 263, generator=g)
    items = []
    for lab in range(n_labels):
        c, s = lab % len(CONTENTS), lab // len(CONTENTS) % len(STYLES)
        for k in range(per_label):
            motion = patterns[c] + 0.5 * style_pat[s] + 0.3 * torch.randn(frames, 263, generator=g)
            items.append({"motion": motion, "caption": f"a person does a {STYLES[s]} {CONTENTS[c]}" +
                          (" slowly" if k % 2 else ""), "label": (c, s)})
    return items


def collate(items):
    length = max(len(it["motion"]) for it in items)
    x = torch.zeros(len(items), length, 263)
    mask = torch.zeros(len(items), length, dtype=torch.bool)
    for i, it in enumerate(items):
        x[i, :len(it["motion"])] = it["motion"]
        mask[i, :len(it["motion"])] = True
    return {"motion": x, "mask": mask, "captions": [it["caption"] for it in items],
            "labels": [it["label"] for it in items], "lengths": torch.tensor([len(it["motion"]) for it in items])}


def tiny_model(step_aware=True, seed=0):
    torch.manual_seed(seed)
    return RewardModel(R.model_preset("tiny", step_aware)).eval()


def test_reward_is_cosine_and_differentiable_wrt_features():
    model = tiny_model()
    x = torch.randn(3, 10, 263, requires_grad=True)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 6:] = False
    tokens, tmask = HashTextEncoder().encode_tokens(["a person walks", "kick", "a sad bow"])
    sim = model(x, mask, tokens, tmask)
    assert sim.shape == (3,) and bool((sim.abs() <= 1 + 1e-6).all())
    sim.sum().backward()
    assert x.grad[1, :6].abs().sum() > 0
    assert x.grad[1, 6:].abs().sum() == 0  # padded frames do not influence the reward
    # same motion without its padding gives the same embedding
    e_pad = model.encode_motion(x[1:2].detach(), mask[1:2])
    e_cut = model.encode_motion(x[1:2, :6].detach(), None)
    torch.testing.assert_close(e_pad, e_cut, atol=1e-5, rtol=1e-5)


def test_step_aware_timestep_token():
    model = tiny_model()
    x = torch.randn(2, 8, 263)
    clean = model.encode_motion(x, None, None)
    torch.testing.assert_close(clean, model.encode_motion(x, None, torch.tensor([0, 0])))
    noisy = model.encode_motion(x, None, torch.tensor([0, 400]))
    torch.testing.assert_close(noisy[0], clean[0])
    assert not torch.allclose(noisy[1], clean[1])
    plain = tiny_model(step_aware=False)
    torch.testing.assert_close(plain.encode_motion(x, None, 400), plain.encode_motion(x, None, None))


def test_info_nce_hand_value_and_false_negative_mask():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    m = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    # logits / 0.1: rows [10, 6], [0, 8]; cols [10, 0], [6, 8]
    expected = (math.log(1 + math.exp(-4)) + math.log(1 + math.exp(-8)) +
                math.log(1 + math.exp(-10)) + math.log(1 + math.exp(-2))) / 4
    assert float(R.info_nce(t, m, 0.1)) == pytest.approx(expected, rel=1e-6)
    # masking the (0, 1) pair removes its term from row 0 and column 1
    excl = torch.tensor([[False, True], [False, False]])
    masked = (0.0 + math.log(1 + math.exp(-8)) + math.log(1 + math.exp(-10)) + 0.0) / 4
    assert float(R.info_nce(t, m, 0.1, excl)) == pytest.approx(masked, rel=1e-6)
    sent = torch.tensor([[1.0, 0.0], [0.95, 0.312], [0.0, 1.0]])
    bad = R.false_negative_mask([(0, 0), (1, 0), (0, 0)], sent, threshold=0.8)
    assert bad.tolist() == [[False, True, True], [True, False, False], [True, False, False]]


def test_noise_motions_formula():
    x0 = torch.randn(64, 5, 263)
    sched = R.default_scheduler(1000)
    alphas = sched.alphas_cumprod
    g = torch.Generator().manual_seed(0)
    x, t = R.noise_motions(x0, 0.5, 500, g, sched)
    clean = t == 0
    assert 10 < int(clean.sum()) < 54 and int(t.max()) < 500
    torch.testing.assert_close(x[clean], x0[clean])
    # the noised ones have the variance sqrt(a)^2 var(x0) + (1 - a)
    i = int(torch.nonzero(~clean)[0])
    a = alphas[t[i]]
    assert float(x[i].var()) == pytest.approx(float(a * x0[i].var() + (1 - a)), rel=0.15)


def test_registry_selects_by_name_and_plugs_in_a_custom_reward():
    assert {"reward_model", "smoothness"} <= set(R.available_rewards())
    x = torch.zeros(2, 4, 263)
    x[0, 1:] = 1.0  # one jump of 1.0 in every feature between frames 0 and 1
    smooth = R.get_reward("smoothness")
    torch.testing.assert_close(smooth(x, ["a", "b"], None), torch.tensor([-1 / 3, 0.0]))
    mask = torch.tensor([[True, True, False, False], [True] * 4])
    torch.testing.assert_close(smooth(x, ["a", "b"], None, mask=mask), torch.tensor([-1.0, 0.0]))

    @R.register_reward("test_height")
    def height(scale: float = 1.0):
        return lambda features, texts, timestep, *, mask=None: scale * features[..., 3].mean(1)

    assert float(R.get_reward("test_height", scale=2.0)(torch.ones(1, 3, 263), ["x"], None)) == 2.0
    with pytest.raises(UserError, match="unknown reward 'nope'; registered rewards: .*smoothness"):
        R.get_reward("nope")


def test_bad_inputs_are_user_errors():
    x = torch.zeros(1, 4, 263)
    with pytest.raises(UserError, match="prompt is empty"):
        R.check_inputs(x, ["  "])
    with pytest.raises(UserError, match=r"\(batch, frames, 263\)"):
        R.check_inputs(torch.zeros(1, 4, 100), ["walk"])
    bad = x.clone()
    bad[0, 2, 5] = float("nan")
    with pytest.raises(UserError, match="NaN"):
        R.check_inputs(bad, ["walk"])
    with pytest.raises(UserError, match="2 prompts for 1 motions"):
        R.check_inputs(x, ["walk", "run"])


def test_scorer_checkpoint_roundtrip_and_frozen_weights(tmp_path):
    model = tiny_model()
    cfg = R.RewardTrainConfig(preset="tiny")
    R.save_reward_checkpoint(tmp_path / "rw", model, train_config=cfg, dataset_info={"stamp": "s1"},
                             meta={"seed": 0}, mean=torch.zeros(263), std=torch.ones(263))
    scorer = R.get_reward("reward_model", checkpoint=str(tmp_path / "rw"), device="cpu",
                          text_encoder=HashTextEncoder())
    x = torch.randn(2, 12, 263, requires_grad=True)
    texts = ["a person walks", "a person bows"]
    sim = scorer(x, texts, None)
    tokens, tmask = HashTextEncoder().encode_tokens(texts)
    torch.testing.assert_close(sim, model(x, None, tokens, tmask))
    sim.sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in scorer.model.parameters())
    shown = scorer.score(x.detach(), texts)
    assert shown == pytest.approx((sim.detach() / 2 + 0.5).tolist(), abs=1e-6)
    with pytest.raises(UserError, match="holds a 'reward' model, expected 'evaluator'"):
        from easytune.evaluator import load_evaluator
        load_evaluator(str(tmp_path / "rw"))


def test_training_learns_the_toy_retrieval_task():
    torch.manual_seed(0)
    items = synthetic_batches()
    bank = R.TextBank(HashTextEncoder())
    model = RewardModel(R.model_preset("tiny", step_aware=False))

    def batch_fn(step):
        return collate([items[j] for j in epoch_batch(len(items), 32, 0, step)])

    # the toy captions differ by one or two words, so their hash-encoder cosines are ~0.8: a higher
    # threshold keeps the other-label captions as negatives
    loss_fn = R.retrieval_loss_fn(bank, temperature=0.1, fn_threshold=0.95)
    with torch.no_grad():
        first = float(loss_fn(model.eval(), collate(items[:32]), 0)["loss"])
    last = R.fit(model, batch_fn, loss_fn, schedule=R.lr_schedule(3e-3, 5, 60), log_every=20, progress=False).last
    assert last["loss"] < first - 0.5
    with torch.no_grad():
        b = collate(items)
        tokens, tmask = bank.tokens(b["captions"])
        sim = model.encode_text(tokens, tmask) @ model.encode_motion(b["motion"], b["mask"]).T
    from easytune.metrics import small_batch_retrieval
    r = small_batch_retrieval(model.encode_text(tokens, tmask).detach(),
                              model.encode_motion(b["motion"], b["mask"]).detach(), None, ks=(1, 5), seed=0)
    # 64 motions, 16 labels x 4: perfect label retrieval gives R@1 of about 1/4 per batch, R@5 high;
    # chance is R@1 = 3%, R@5 = 16%
    assert r["t2m_R@5"] > 60.0
    assert sim.shape == (64, 64)


def test_scorer_with_the_real_minilm_encoder():
    from easytune.text import load_text_encoder

    enc = load_text_encoder("cpu")
    scorer = R.RewardScorer(tiny_model(), enc)
    x = torch.randn(2, 10, 263, requires_grad=True)
    texts = ["a person waves with the right hand", "a person kicks angrily"]
    sim = scorer(x, texts, torch.tensor([0, 300]))
    tokens, mask = enc.encode_tokens(texts)
    torch.testing.assert_close(sim, scorer.model(x, None, tokens, mask, torch.tensor([0, 300])))
    sim.sum().backward()
    assert x.grad.abs().sum() > 0
    # the false-negative rule on real sentence embeddings: a paraphrase is filtered, another style is not
    sent = R.TextBank(enc).sentences(["a person walks happily", "someone walks in a cheerful way",
                                      "a person walks sadly"])
    assert R.false_negative_mask(None, sent, 0.8).tolist() == [[False, True, False], [True, False, False],
                                                               [False, False, False]]


def write_toy_dataset(root, seed=0):
    """A HumanML3D-layout folder (the layout `data build` writes) of learnable toy motions: 8 contents
    x 5 styles; style 4 is an unseen combination set (test only). Per label: 2 train motions, 1 test."""
    import json as _json
    from pathlib import Path

    root = Path(root)
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    rng = np.random.default_rng(seed)
    content_pat = rng.normal(size=(8, 263))
    style_pat = rng.normal(size=(5, 263))
    labels, splits = {}, {"train": [], "test": [], "test_seen": [], "test_unseen": []}
    for c in range(8):
        for s in range(5):
            for k in range(3):
                name = f"m{c}{s}{k}"
                frames = int(rng.integers(24, 40))
                x = content_pat[c] + 0.5 * style_pat[s] + 0.3 * rng.normal(size=(frames, 263))
                np.save(root / "new_joint_vecs" / f"{name}.npy", x.astype(np.float32))
                caps = [f"a person does a {STYLES[s % 4] if s < 4 else 'giant'} {CONTENTS[c]}",
                        f"someone performs a {CONTENTS[c]} in a {STYLES[s % 4] if s < 4 else 'giant'} way"]
                (root / "texts" / f"{name}.txt").write_text("".join(f"{t}#x#0.0#0.0\n" for t in caps))
                labels[name] = {"content": CONTENTS[c], "style": str(s)}
                split = "test" if (s == 4 or k == 2) else "train"
                splits[split].append(name)
                if split == "test":
                    splits["test_unseen" if s == 4 else "test_seen"].append(name)
    np.save(root / "Mean.npy", np.zeros(263, np.float32))
    np.save(root / "Std.npy", np.ones(263, np.float32))
    for split, names in splits.items():
        (root / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    (root / "labels.json").write_text(_json.dumps(labels))
    (root / "dataset.json").write_text(_json.dumps({"stamp": "toy-v1"}))
    return root


def test_train_reward_command_end_to_end_with_resume(tmp_path, caplog):
    import json as _json
    import logging

    data = write_toy_dataset(tmp_path / "data")
    cfg = R.RewardTrainConfig(data=str(data), out=str(tmp_path / "rw"), preset="tiny", steps=20, batch_size=16,
                              lr=2e-3, warmup=2, fn_threshold=0.95, log_every=10, save_every=10, eval_seeds=2)
    R.main(cfg, text_encoder=HashTextEncoder())
    out = tmp_path / "rw"
    assert {"model.safetensors", "config.json", "README.md", "retrieval.json", "train_config.json"} <= {
        p.name for p in out.iterdir()}
    report = _json.loads((out / "retrieval.json").read_text())
    assert set(report["groups"]) == {"test", "seen", "unseen"}
    assert report["groups"]["test"]["batch"] == 32 and report["groups"]["unseen"]["batch"] == 8
    mean, half = report["groups"]["test"]["t2m_R@10"]
    assert 0.0 <= mean <= 100.0 and half >= 0.0
    card = (out / "README.md").read_text()
    assert "CC BY-NC 4.0" in card and "python -m easytune train reward" in card and "distinct" in card
    # resume: a longer run continues from step 20 instead of starting over
    with caplog.at_level(logging.INFO):
        R.main(R.RewardTrainConfig(**{**cfg.__dict__, "steps": 30, "eval_seeds": 0}), text_encoder=HashTextEncoder())
    assert "resuming from step 20" in caplog.text
    assert _json.loads((out / "config.json").read_text())["meta"]["steps"] == 30
    model, ckpt = R.load_reward_model(str(out), "cpu")
    assert ckpt.dataset["stamp"] == "toy-v1" and model.cfg.step_aware


def test_reward_and_evaluator_train_on_disjoint_caption_shares(tmp_path):
    data = write_toy_dataset(tmp_path / "data")
    ds = R.open_dataset(str(data), "train")
    rng = np.random.default_rng(0)
    for i in range(5):
        caps = R.caption_choices(ds, i)
        assert len(caps) == 2
        assert R.share_caption(ds, i, "even", rng)["caption"] == caps[0]
        assert R.share_caption(ds, i, "odd", rng)["caption"] == caps[1]
    batch = R.batch_at(ds, 8, seed=0, step=0, share="odd")
    assert all(c.startswith("someone performs") for c in batch["captions"])
    assert R.RewardTrainConfig().caption_share == "even"
    from easytune.evaluator import EvaluatorTrainConfig
    assert EvaluatorTrainConfig().caption_share == "odd"


def assert_same_weights(a, b):
    """Two checkpoint folders hold bit-identical weights."""
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), k


def interrupted(at):
    """(on_step, should_stop) hooks that cancel a run after `at` steps, and the metrics they saw."""
    seen = []
    return seen.append, (lambda: len(seen) >= at), seen


def test_schedule_keeps_the_shipped_recipe():
    # the reward / SPL / evaluator recipe: linear warm-up, then a cosine to 0 (the demo checkpoints' curve)
    s = R.lr_schedule(1e-4, 100, 2000)
    for step in (0, 50, 99, 100, 700, 1999, 2000):
        old = 1e-4 * (step + 1) / 100 if step < 100 else 1e-4 * 0.5 * (1 + math.cos(math.pi * (step - 100) / 1900))
        assert s.at(step) == pytest.approx(old, rel=1e-12, abs=1e-20)
    assert R.lr_schedule(1e-5, 0, 10).at(0) == pytest.approx(1e-5)  # SPL: no warm-up


def test_batches_are_a_function_of_seed_and_step(tmp_path):
    data = write_toy_dataset(tmp_path / "data")
    ds = R.open_dataset(str(data), "train", max_frames=28)
    a, b = R.batch_at(ds, 16, 0, 3, "all"), R.batch_at(ds, 16, 0, 3, "all")
    assert a["names"] == b["names"] and a["captions"] == b["captions"] and torch.equal(a["motion"], b["motion"])
    assert a["names"] != R.batch_at(ds, 16, 1, 3, "all")["names"]  # another seed, another order
    # crops and captions are drawn, not fixed: over the batches of an epoch they vary
    epoch = [R.batch_at(ds, 16, 0, step, "all") for step in range(len(ds) // 16)]
    assert len(ds) == 64 and sorted(n for e in epoch for n in e["names"]) == sorted(ds.names)  # each once
    assert len({int(n) for e in epoch for n in e["lengths"]}) > 1
    assert len({c.split()[0] for e in epoch for c in e["captions"]}) == 2  # both paraphrases drawn
    # a drawn item is what the dataset gives for the same rng: the step's items come from (seed, step) only
    rng = step_rng(0, 3, ITEMS)
    first = ds.item(epoch_batch(len(ds), 16, 0, 3)[0], rng)
    assert torch.equal(first["motion"], a["motion"][0, :first["length"]]) and first["caption"] == a["captions"][0]


def test_reward_resume_after_a_cancel_is_exact(tmp_path):
    data = write_toy_dataset(tmp_path / "data")
    cfg = R.RewardTrainConfig(data=str(data), out=str(tmp_path / "full"), preset="tiny", steps=7, batch_size=16,
                              lr=2e-3, warmup=2, fn_threshold=0.95, save_every=3, eval_seeds=0, max_frames=28)
    seen = []
    R.main(cfg, text_encoder=HashTextEncoder(), on_step=seen.append, progress=False)
    assert [m["step"] for m in seen] == list(range(1, 8)) and {"loss", "lr", "n_excluded"} <= set(seen[0])
    on_step, stop, _ = interrupted(4)
    part = R.RewardTrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "part")})
    res = R.main(part, text_encoder=HashTextEncoder(), on_step=on_step, should_stop=stop, progress=False)
    assert res["stopped"] and res["step"] == 4 and not (tmp_path / "part" / "README.md").exists()
    res = R.main(part, text_encoder=HashTextEncoder(), progress=False)
    assert res["step"] == 7 and not res["stopped"]
    assert_same_weights(tmp_path / "full", tmp_path / "part")
    assert (tmp_path / "part" / "README.md").is_file() and (tmp_path / "part" / "train_config.json").is_file()
