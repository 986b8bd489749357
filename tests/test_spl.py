import json
import math

import numpy as np
import pytest
import torch

from easytune import reward as R
from easytune import spl as S
from easytune.errors import UserError
from test_reward import HashTextEncoder, collate, synthetic_batches, tiny_model

# texts 0..3 (rows) x motions 0..3 (columns); labels: text/motion 0 and 2 share label (0, 0)
SIM = torch.tensor([[0.50, 0.60, 0.70, 0.10],   # 0.70 is a paraphrase (same label): not a mistake;
                    [0.20, 0.40, 0.30, 0.35],   # truth first: correct
                    [0.10, 0.90, 0.30, 0.20],   # truth second, but 0.90 > 0.8: counted as correct
                    [0.45, 0.10, 0.50, 0.40]],  # truth third: a mistake
                   dtype=torch.float64)
LABELS = [(0, 0), (1, 0), (0, 0), (2, 1)]


def _kl_pref(s_rej, s_pref, p, tau=0.1):
    q_pref = 1 / (1 + math.exp(-(s_pref - s_rej) / tau))
    terms = [(p, q_pref), (1 - p, 1 - q_pref)]
    return sum(t * math.log(t / q) for t, q in terms if t > 0)


def test_spl_pairs_on_hand_built_matrix():
    pairs = S.spl_pairs(SIM, LABELS, k=1, threshold=0.8)
    assert pairs.retrieved.tolist() == [1, 3, 1, 2]
    assert pairs.rank.tolist() == [1, 0, 1, 2]
    assert pairs.mistake.tolist() == [True, False, False, True]
    assert pairs.valid.all()
    # k = 2 forgives row 0; a threshold above every similarity makes row 2 a mistake
    assert S.spl_pairs(SIM, LABELS, k=2, threshold=0.8).mistake.tolist() == [False, False, False, True]
    assert S.spl_pairs(SIM, LABELS, k=1, threshold=0.95).mistake.tolist() == [True, False, True, True]


def test_spl_loss_value_on_hand_built_matrix():
    loss, _ = S.spl_loss(SIM, LABELS, k=1, threshold=0.8, tau=0.1)
    expected = (_kl_pref(0.60, 0.50, 1.0) + _kl_pref(0.35, 0.40, 0.5) + _kl_pref(0.90, 0.30, 0.5)
                + _kl_pref(0.50, 0.40, 1.0)) / 4
    assert float(loss) == pytest.approx(expected, rel=1e-9)
    assert float(loss) == pytest.approx(1.241696, abs=1e-5)
    # the paper code's double division = one tau of 0.01
    loss01, _ = S.spl_loss(SIM, LABELS, tau=0.01)
    assert float(loss01) == pytest.approx((_kl_pref(0.6, 0.5, 1, 0.01) + _kl_pref(0.35, 0.4, 0.5, 0.01) +
                                           _kl_pref(0.9, 0.3, 0.5, 0.01) + _kl_pref(0.5, 0.4, 1, 0.01)) / 4,
                                          rel=1e-9)


def test_spl_gradient_pushes_truth_above_retrieved():
    sim = SIM.clone().requires_grad_(True)
    loss, _ = S.spl_loss(sim, LABELS)
    loss.backward()
    assert sim.grad[0, 0] < 0 and sim.grad[0, 1] > 0  # mistake: raise truth, lower the retrieved one
    assert sim.grad[0, 2] == 0  # the same-label paraphrase is untouched
    # the "correct" row 2 (truth 0.3, retrieved 0.9) is pulled towards equal similarities
    assert sim.grad[2, 2] < 0 and sim.grad[2, 1] > 0
    # row 1 (truth 0.40 above retrieved 0.35) is pulled together too: truth down, retrieved up
    assert sim.grad[1, 1] > 0 and sim.grad[1, 3] < 0


def test_rows_without_other_labels_are_left_out():
    loss, pairs = S.spl_loss(SIM[:1, :1], [(0, 0)])
    assert float(loss) == 0.0 and pairs.valid.tolist() == [False]


def _pair(pref="a"):
    rng = np.random.default_rng(0)
    return S.HumanPair(prompt="a person waves", a=S.MotionRef(rng.normal(size=(6, 263)).astype(np.float32)),
                       b=S.MotionRef(regenerate={"checkpoint": "base", "checkpoint_hash": "abc", "seed": 7,
                                                 "steps": 50, "guidance": 2.5, "seconds": 4.0}),
                       preferred=pref, criterion="text_match", extra={"study": "s1", "rater": "r9"})


def test_human_pairs_file_roundtrip_and_errors(tmp_path):
    path = tmp_path / "votes.jsonl"
    S.write_pairs(path, [_pair("a"), _pair("tie")])
    back = S.read_pairs(path)
    assert [p.preferred for p in back] == ["a", "tie"]
    np.testing.assert_allclose(back[0].a.features, _pair().a.features, atol=1e-5)
    assert back[0].b.regenerate["seed"] == 7 and back[0].extra == {"study": "s1", "rater": "r9"}
    np.save(tmp_path / "m.npy", np.zeros((5, 263), dtype=np.float32))
    line = {"format": "easytune-pairs/1", "prompt": "kick", "preferred": "b", "a": {"features_file": "m.npy"},
            "b": {"features": np.ones((3, 263)).tolist()}}
    (tmp_path / "f.jsonl").write_text(json.dumps(line) + "\n")
    assert S.read_pairs(tmp_path / "f.jsonl")[0].a.features.shape == (5, 263)
    bad = [({**line, "preferred": "c"}, "'preferred' must be 'a', 'b' or 'tie'"),
           ({**line, "prompt": " "}, "'prompt' is empty"),
           ({**line, "a": {"features": [[1.0, 2.0]]}}, r"shape \(frames, 263\)"),
           ({**line, "b": {"regenerate": {"seed": 1}}}, "missing checkpoint, checkpoint_hash"),
           ({**line, "format": "v0"}, "'format' must be")]
    for obj, msg in bad:
        (tmp_path / "bad.jsonl").write_text(json.dumps(obj) + "\n")
        with pytest.raises(UserError, match=msg):
            S.read_pairs(tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match="regeneration recipes; pass a generator"):
        S.materialize(back)
    filled = S.materialize(back, lambda prompt, spec: np.full((spec["seed"], 263), 0.5))
    assert filled[0].b.features.shape == (7, 263)


def test_training_on_human_pairs_moves_the_preference():
    torch.manual_seed(0)
    model = tiny_model(step_aware=False).train()
    bank = R.TextBank(HashTextEncoder())
    rng = np.random.default_rng(1)
    pairs = [S.HumanPair(f"a person {w}", S.MotionRef(rng.normal(size=(8, 263)).astype(np.float32)),
                         S.MotionRef(rng.normal(size=(8, 263)).astype(np.float32)), "b")
             for w in ("waves", "kicks", "bows", "runs")]

    def margin():
        with torch.no_grad():
            t = model.encode_text(*bank.tokens([p.prompt for p in pairs]))
            a = model.encode_motion(torch.tensor(np.stack([p.a.features for p in pairs])))
            b = model.encode_motion(torch.tensor(np.stack([p.b.features for p in pairs])))
            return float(((t * b).sum(-1) - (t * a).sum(-1)).mean())

    before = margin()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(20):
        loss = S.human_pair_loss(model, pairs, bank, tau=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert margin() > before + 0.2


def test_spl_loss_fn_combines_named_terms():
    items = synthetic_batches(n_labels=8, per_label=2)
    bank = R.TextBank(HashTextEncoder())
    cfg = S.SPLTrainConfig(noise_prob=0.0, w_spl=0.5)
    model = tiny_model(step_aware=False)
    fn = S.spl_loss_fn(cfg, bank, None, pairs=())
    with torch.no_grad():
        out = fn(model, collate(items), 0)
    assert set(out) == {"loss", "retrieval", "spl", "mistakes"}
    assert float(out["loss"]) == pytest.approx(float(out["retrieval"] + 0.5 * out["spl"]), rel=1e-6)
    assert 0.0 <= float(out["mistakes"]) <= 1.0


def test_train_spl_command_end_to_end(tmp_path):
    from test_reward import write_toy_dataset

    data = write_toy_dataset(tmp_path / "data")
    R.main(R.RewardTrainConfig(data=str(data), out=str(tmp_path / "rw"), preset="tiny", steps=10, batch_size=16,
                               lr=2e-3, warmup=2, fn_threshold=0.95, eval_seeds=0), text_encoder=HashTextEncoder())
    votes = tmp_path / "votes.jsonl"
    S.write_pairs(votes, [_pair("a"), _pair("tie")])
    cfg = S.SPLTrainConfig(data=str(data), init=str(tmp_path / "rw"), out=str(tmp_path / "spl"), steps=6,
                           batch_size=16, fn_threshold=0.95, human_pairs=str(votes), human_batch=2, eval_seeds=2,
                           log_every=3)
    regenerated = []

    def regen(prompt, spec):
        regenerated.append(spec["seed"])
        return np.zeros((10, 263), np.float32)

    report = S.main(cfg, text_encoder=HashTextEncoder(), regenerate=regen)
    assert regenerated == [7, 7]  # both pairs' motion b is a recipe
    saved = json.loads((tmp_path / "spl" / "spl_report.json").read_text())
    assert set(saved["before"]["groups"]) == set(saved["after"]["groups"]) == {"test", "seen", "unseen"}
    info = json.loads((tmp_path / "spl" / "config.json").read_text())
    assert info["kind"] == "reward" and info["meta"]["parent"].endswith("rw") and info["meta"]["steps"] == 6
    assert info["config"]["train"]["spl_tau"] == 0.1
    card = (tmp_path / "spl" / "README.md").read_text()
    assert "Before SPL" in card and "After SPL" in card and "applied once" in card
    assert report["after"]["protocol"].startswith("batches of 32 motions with distinct")
    # the refined model differs from its parent
    a, _ = R.load_reward_model(str(tmp_path / "rw"), "cpu")
    b, _ = R.load_reward_model(str(tmp_path / "spl"), "cpu")
    assert any(not torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_spl_resume_after_a_cancel_is_exact(tmp_path):
    from test_reward import assert_same_weights, interrupted, write_toy_dataset

    data = write_toy_dataset(tmp_path / "data")
    R.main(R.RewardTrainConfig(data=str(data), out=str(tmp_path / "rw"), preset="tiny", steps=4, batch_size=16,
                               lr=2e-3, warmup=2, fn_threshold=0.95, eval_seeds=0, max_frames=28),
           text_encoder=HashTextEncoder(), progress=False)
    votes = tmp_path / "votes.jsonl"
    S.write_pairs(votes, [_pair("a"), _pair("tie"), _pair("b")])
    regen = lambda prompt, spec: np.zeros((10, 263), np.float32)  # noqa: E731
    cfg = S.SPLTrainConfig(data=str(data), init=str(tmp_path / "rw"), out=str(tmp_path / "full"), steps=6,
                           batch_size=16, lr=1e-3, warmup=1, fn_threshold=0.95, human_pairs=str(votes),
                           human_batch=2, eval_seeds=0, save_every=2, max_frames=28)
    seen = []
    S.main(cfg, text_encoder=HashTextEncoder(), regenerate=regen, on_step=seen.append, progress=False)
    assert [m["step"] for m in seen] == list(range(1, 7)) and {"spl", "human", "retrieval", "lr"} <= set(seen[0])
    on_step, stop, _ = interrupted(3)
    part = S.SPLTrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "part")})
    res = S.main(part, text_encoder=HashTextEncoder(), regenerate=regen, on_step=on_step, should_stop=stop,
                 progress=False)
    assert res["stopped"] and res["step"] == 3
    assert json.loads((tmp_path / "part" / "config.json").read_text())["meta"]["steps"] == 3
    res = S.main(part, text_encoder=HashTextEncoder(), regenerate=regen, progress=False)
    assert res["step"] == 6 and not res["stopped"]
    assert_same_weights(tmp_path / "full", tmp_path / "part")
    # --no-resume starts again from the parent and, with the same seed, ends in the same place too
    S.main(S.SPLTrainConfig(**{**part.__dict__, "resume": False}), text_encoder=HashTextEncoder(), regenerate=regen,
           progress=False)
    assert_same_weights(tmp_path / "full", tmp_path / "part")
