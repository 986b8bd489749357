"""Blind A/B studies (easytune.study): config checks, preparation on the demo checkpoints, votes in a
real SQLite file (duplicates, progress, kill -9 durability), attention checks, results against an
independent Wilson / Fleiss computation, CSV and SPL exports (trained on), and the CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from easytune import spl
from easytune.checkpoints import checkpoint_hash
from easytune.errors import UserError
from easytune.study import config as C
from easytune.study import prepare as P
from easytune.study import results as R
from easytune.study import store as S

REPO = Path(__file__).resolve().parent.parent
GOOD = {"name": "demo", "prompts": ["a person walks forward", "a person jumps twice"],
        "checkpoints": ["base", "easytune"], "seeds": [0], "seconds": 2, "attention_checks": 2}


# --- config ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    ({"colour": "red"}, "colour"),
    ({"name": "Has Spaces"}, "name"),
    ({"name": "x" * 41}, "name"),
    ({"prompts": "a person walks"}, "prompts"),
    ({"prompts": []}, "prompts"),
    ({"prompts": ["a person walks", "  "]}, "prompts"),
    ({"prompts": ["a" * 301]}, "prompts"),
    ({"prompts": ["a person walks", "a  person walks "]}, "prompts"),  # duplicate once spaces collapse
    ({"checkpoints": ["base"]}, "checkpoints"),
    ({"checkpoints": ["base", "base"]}, "checkpoints"),
    ({"checkpoints": ["base", "no_such_checkpoint"]}, "checkpoints"),
    ({"checkpoints": ["base", "reward"]}, "checkpoints"),  # a reward model generates nothing
    ({"seeds": [0, "1"]}, "seeds"),
    ({"seeds": [-1]}, "seeds"),
    ({"seeds": [3, 3]}, "seeds"),
    ({"seeds": []}, "seeds"),
    ({"seconds": 0.5}, "seconds"),
    ({"seconds": 11}, "seconds"),
    ({"seconds": "4"}, "seconds"),
    ({"steps": 0}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"guidance": -1}, "guidance"),
    ({"attention_checks": -1}, "attention_checks"),
    ({"attention_checks": True}, "attention_checks"),
    ({"attention_checks": 5}, "attention_checks"),  # 3 repeats need 3 normal pairs; there are 2
])
def test_each_bad_field_is_one_sentence_naming_it(change, field):
    with pytest.raises(UserError) as e:
        C.parse_config({**GOOD, **change})
    msg = str(e.value)
    assert f"'{field}'" in msg and "\n" not in msg, msg


def test_missing_field_and_yaml_file(tmp_path):
    with pytest.raises(UserError, match="'checkpoints' is missing"):
        C.parse_config({k: v for k, v in GOOD.items() if k != "checkpoints"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: demo\nprompts: [a, b\n")
    with pytest.raises(UserError, match="not valid YAML"):
        C.load_config(bad)
    good = tmp_path / "study.yaml"
    good.write_text("name: demo\nprompts:\n  - a person walks forward\n  - a person   jumps twice\n"
                    "checkpoints: [base, easytune]\nseconds: 2.0\n")
    cfg = C.load_config(good)
    assert cfg.prompts == ("a person walks forward", "a person jumps twice") and cfg.seeds == (0,)
    assert cfg.attention_checks == 2 and cfg.steps is None
    # the canonical form does not depend on spelling (2 vs 2.0, spaces); any real change moves the hash
    assert C.config_hash(cfg) == C.config_hash(C.parse_config(GOOD))
    assert C.config_hash(cfg) != C.config_hash(C.parse_config({**GOOD, "seeds": [1]}))
    assert C.config_from_json(C.canonical_json(cfg)) == cfg


# --- planning (no models) --------------------------------------------------------------------------

SETTINGS = {"base": {"checkpoint_hash": "h1", "steps": 10, "guidance": 2.5},
            "easytune": {"checkpoint_hash": "h2", "steps": 10, "guidance": 2.5}}


def test_plan_pairs_sides_checks_and_determinism():
    cfg = C.StudyConfig(name="plan", prompts=tuple(f"a person does move {i}" for i in range(20)),
                        checkpoints=("base", "easytune"), seeds=(0, 1), seconds=2.0, attention_checks=5)
    pairs = P.plan_pairs(cfg, SETTINGS)
    assert pairs == P.plan_pairs(cfg, SETTINGS)  # same config, same pairs
    kinds = [p.kind for p in pairs]
    assert kinds.count("normal") == 40 and kinds.count("repeat") == 3 and kinds.count("mismatch") == 2
    normal = [p for p in pairs if p.kind == "normal"]
    assert {p.left for p in normal} == {"a", "b"}  # randomized, not always the same side
    assert all(p.a["checkpoint"] == "base" and p.b["checkpoint"] == "easytune" for p in normal)
    for p in pairs:
        if p.kind == "repeat":
            orig = pairs[p.original]
            assert orig.kind == "normal" and (p.a, p.b, p.prompt) == (orig.a, orig.b, orig.prompt)
            assert p.left != orig.left
        if p.kind == "mismatch":
            assert p.a["checkpoint"] == p.b["checkpoint"] and p.a["prompt"] == p.prompt
            assert p.decoy == "b" and p.b["prompt"] in P.DECOY_PROMPTS and p.b["prompt"] != p.prompt
    assert len({p.original for p in pairs if p.kind == "repeat"}) == 3
    # the decoy shares no content word with a prompt about walking
    assert "walk" not in P.decoy_prompt("a man walks in a circle", random.Random(0))


def test_rater_order_is_stable_per_rater_and_puts_repeats_after_originals():
    cfg = C.StudyConfig(name="order", prompts=tuple(f"move {i}" for i in range(8)), checkpoints=("base", "easytune"),
                        attention_checks=8)
    pairs = P.plan_pairs(cfg, SETTINGS)
    orders = [S.rater_order(pairs, "order", r) for r in ("r1", "r2", "r3")]
    assert all(sorted(o) == list(range(len(pairs))) for o in orders)
    assert orders[0] == S.rater_order(pairs, "order", "r1") and len({tuple(o) for o in orders}) == 3
    for order in orders:
        for p in pairs:
            if p.kind == "repeat":
                assert order.index(p.original) < order.index(p.index)


# --- preparation on the demo checkpoints -----------------------------------------------------------

@pytest.fixture(scope="module")
def bundles():
    return P.loader(None, "cpu")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, bundles):
    root = tmp_path_factory.mktemp("study")
    cfg = C.parse_config(GOOD)
    seen = []
    study = P.prepare_study(cfg, root / "studies.sqlite", root / "media", render=False, bundles=bundles,
                            progress=lambda d, t, w: seen.append((d, t)))
    return {"db": root / "studies.sqlite", "media": root / "media", "cfg": cfg, "study": study, "progress": seen}


def copy_db(src: Path, dst_dir: Path) -> Path:
    """A private copy of a (closed) study database, so each test votes on a clean study."""
    dst = dst_dir / "studies.sqlite"
    shutil.copy(src, dst)
    return dst


def test_prepare_without_video_caches_motions_and_is_idempotent(prepared, bundles, tmp_path):
    db, media, cfg = prepared["db"], prepared["media"], prepared["cfg"]
    pairs = S.get_pairs(db, "demo")
    assert [p.kind for p in pairs] == ["normal", "normal", "repeat", "mismatch"]
    # 2 prompts x 2 checkpoints + 1 decoy motion (the mismatch's true motion is a normal pair's)
    assert prepared["progress"][0] == (0, 5) and prepared["progress"][-1] == (5, 5)
    assert all(p.video is None and S.video_path(prepared["study"], p) is None for p in pairs)
    for p in pairs:
        for motion in ("a", "b"):
            feats, joints = P.load_motion(media, p.recipe(motion))
            assert feats.shape == (40, 263) and joints.shape == (40, 22, 3) and np.isfinite(joints).all()
    # the cache holds what the recipe generates
    r = pairs[0].a
    again = P.generate_motion(bundles("base"), r["prompt"], r)
    np.testing.assert_allclose(again[0], P.load_motion(media, r)[0], atol=1e-5)
    assert r["steps"] == bundles("base").steps and r["checkpoint_hash"] == checkpoint_hash("base")
    # preparing again generates nothing and returns the same study
    seen = []
    again_study = P.prepare_study(cfg, db, media, render=False, bundles=bundles, progress=lambda d, t, w: seen.append(t))
    assert seen == [0] and again_study.created == prepared["study"].created
    # another study sharing a prompt reuses its cached motions: only the new prompt is generated
    other = C.parse_config({**GOOD, "name": "other", "prompts": ["a person walks forward", "a person sits down"],
                            "attention_checks": 0})
    seen = []
    P.prepare_study(other, copy_db(db, tmp_path), media, render=False, bundles=bundles,
                    progress=lambda d, t, w: seen.append(t))
    assert seen[0] == 2


def test_prepare_with_video_renders_recorded_sides(tmp_path, bundles, prepared):
    from easytune.render import gl_unavailable_reason

    reason = gl_unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs EGL rendering: {reason}")
        pytest.skip(reason)
    cfg = C.parse_config({**GOOD, "name": "video", "prompts": ["a person walks forward"], "attention_checks": 0})
    calls = []

    def in_render_thread(fn, *args):
        calls.append(args)
        return fn(*args)

    # the motion cache is shared with the prepared study: only the render runs here
    study = P.prepare_study(cfg, tmp_path / "db.sqlite", prepared["media"], bundles=bundles, render_size=128,
                            in_render_thread=in_render_thread)
    (pair,) = S.get_pairs(tmp_path / "db.sqlite", "video")
    video = S.video_path(study, pair)
    assert video is not None and video.is_file() and video.stat().st_size > 1000
    assert video.read_bytes()[4:8] == b"ftyp"  # an MP4 container
    render_calls = [c for c in calls if len(c) == 4]
    assert len(render_calls) == 1
    left, right, out, _ = render_calls[0]
    np.testing.assert_array_equal(left, P.pair_motions(study, pair)["left"])
    np.testing.assert_array_equal(left, P.load_motion(study.media, pair.recipe(pair.left))[1])
    np.testing.assert_array_equal(right, P.load_motion(study.media, pair.recipe(pair.right))[1])
    assert out == video


def test_render_unavailable_is_one_sentence_and_stores_nothing(tmp_path, bundles, monkeypatch, prepared):
    from easytune import render

    monkeypatch.setattr(render, "gl_unavailable_reason", lambda: "EGL: no display (test)")
    cfg = C.parse_config({**GOOD, "name": "nogl"})
    with pytest.raises(render.RenderUnavailable) as e:
        P.prepare_study(cfg, tmp_path / "db.sqlite", prepared["media"], bundles=bundles)
    assert "render=False" in str(e.value) and "\n" not in str(e.value)
    assert S.find_study(tmp_path / "db.sqlite", "nogl") is None


# --- votes -----------------------------------------------------------------------------------------

def side_of(pair: S.Pair, motion: str) -> str:
    return "tie" if motion == "tie" else ("left" if pair.left == motion else "right")


# What each rater means to choose per normal pair index: (text motion, realism motion).
PLANS = {
    "good1": {0: ("b", "tie"), 1: ("b", "a")},
    "good2": {0: ("b", "b"), 1: ("a", "tie")},
    "sloppy": {0: ("a", "a"), 1: ("b", "a")},  # flips on the repeat and picks the decoy on the mismatch
}


def cast_votes(db: Path, study: str) -> dict:
    """Three raters vote every pair through next_pair; returns their ids and the progress they saw."""
    pairs = S.get_pairs(db, study)
    raters, seen = {}, {}
    for who, plan in PLANS.items():
        rater = S.register_rater(db, f"  {who}  ")
        raters[who], seen[who] = rater.id, []
        while True:
            nxt = S.next_pair(db, study, rater.id)
            seen[who].append((nxt.done, nxt.total))
            if nxt.pair is None:
                break
            p = nxt.pair
            if p.kind == "normal":
                text, realism = plan[p.index]
            elif p.kind == "repeat":
                text, realism = plan[p.original]
                if who == "sloppy":
                    text = "a" if text == "b" else "b"
            else:
                truth = "a" if p.decoy == "b" else "b"
                text, realism = (p.decoy if who == "sloppy" else truth), "tie"
            S.record_vote(db, study, p.index, rater.id, side_of(p, text), side_of(p, realism), comment=f"{who} ok")
    return {"raters": raters, "seen": seen}


@pytest.fixture(scope="module")
def voted(prepared, tmp_path_factory):
    db = copy_db(prepared["db"], tmp_path_factory.mktemp("voted"))
    return {"db": db, **cast_votes(db, "demo")}


def test_voting_progress_duplicates_and_bad_values(prepared, tmp_path):
    db = copy_db(prepared["db"], tmp_path)
    out = cast_votes(db, "demo")
    for who in PLANS:
        assert out["seen"][who] == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    r1 = out["raters"]["good1"]
    assert len(r1) == 8 and S.get_rater(db, r1.upper()).name == "good1"  # codes are case-insensitive
    with pytest.raises(UserError, match="you already voted on this pair"):
        S.record_vote(db, "demo", 0, r1, "left", "left")
    with pytest.raises(UserError, match="'left', 'right' or 'tie'"):
        S.record_vote(db, "demo", 0, S.register_rater(db, "new").id, "both", "left")
    with pytest.raises(UserError, match="500"):
        S.record_vote(db, "demo", 0, S.register_rater(db, "new").id, "left", "left", comment="x" * 501)
    with pytest.raises(UserError, match="no rater"):
        S.record_vote(db, "demo", 0, "nobody00", "left", "left")
    with pytest.raises(UserError, match="no pair 99"):
        S.record_vote(db, "demo", 99, r1, "left", "left")
    with pytest.raises(UserError, match="rater name"):
        S.register_rater(db, " " * 3)
    with pytest.raises(UserError, match="rater name"):
        S.register_rater(db, "x" * 41)
    cast = S.votes(db, "demo")
    assert len(cast) == 12 and all(v.comment.endswith(" ok") for v in cast)
    # a vote keeps what was on each side
    pairs = {p.index: p for p in S.get_pairs(db, "demo")}
    assert all(v.shown_left == pairs[v.pair].left and v.shown_right == pairs[v.pair].right for v in cast)
    with S.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_votes_from_worker_threads_at_once(prepared, tmp_path):
    """Gradio calls from a thread pool: every call opens its own connection, writers wait for the lock."""
    from concurrent.futures import ThreadPoolExecutor

    db = copy_db(prepared["db"], tmp_path)
    raters = [S.register_rater(db, f"t{i}").id for i in range(4)]
    jobs = [(r, i) for r in raters for i in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(lambda job: S.record_vote(db, "demo", job[1], job[0], "left", "right"), jobs))
    assert sorted((v.rater, v.pair) for v in done) == sorted(jobs)
    assert len(S.votes(db, "demo")) == 16 and all(S.next_pair(db, "demo", r).pair is None for r in raters)


def wilson_by_formula(k: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    lo = (p + z**2 / (2 * n) - z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))) / (1 + z**2 / n)
    hi = (p + z**2 / (2 * n) + z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))) / (1 + z**2 / n)
    return lo, hi


def test_attention_checks_flag_the_sloppy_rater_and_results_match_the_formulas(voted):
    res = R.results(voted["db"], "demo")
    ids = voted["raters"]
    assert set(res.flagged) == {ids["sloppy"]} and len(res.flagged[ids["sloppy"]]) == 2
    assert any("repeats pair" in r for r in res.flagged[ids["sloppy"]])
    assert any("another prompt" in r for r in res.flagged[ids["sloppy"]])
    assert res.all.raters == 3 and res.unflagged.raters == 2 and res.all.votes == 6 and res.unflagged.votes == 4

    def expected(raters, criterion, motion):
        k = 0 if criterion == "text" else 1
        picks = [PLANS[r][i][k] for r in raters for i in (0, 1)]
        return picks.count(motion), picks.count("tie"), len(picks) - picks.count(motion) - picks.count("tie")

    for summary, raters in ((res.all, list(PLANS)), (res.unflagged, ["good1", "good2"])):
        for t in summary.tallies:
            motion = "a" if t.checkpoint == "base" else "b"
            w, ties, losses = expected(raters, t.criterion, motion)
            assert (t.wins, t.ties, t.losses) == (w, ties, losses)
            if w + losses:
                assert t.win_rate == pytest.approx(w / (w + losses))
                assert t.win_ci == pytest.approx(wilson_by_formula(w, w + losses), abs=1e-12)
            half_k, n = w + ties / 2, w + ties + losses
            assert t.half_rate == pytest.approx(half_k / n)
            assert t.half_ci == pytest.approx(wilson_by_formula(half_k, n), abs=1e-12)
    # hand-computed: easytune on text with all raters wins 4 of 6
    text_easytune = next(t for t in res.all.tallies if t.criterion == "text" and t.checkpoint == "easytune")
    assert (text_easytune.wins, text_easytune.losses) == (4, 2)
    assert text_easytune.win_ci == pytest.approx((0.3000, 0.9032), abs=5e-4)
    # agreement on text, all raters: both pairs split 2-1, so 1 of 3 rater pairs agree on each;
    # Fleiss: P_i = 1/3, p = (2/6, 4/6, 0), P_e = 5/9, kappa = (1/3 - 5/9) / (1 - 5/9) = -0.5
    text_agree = next(a for a in res.all.agreement if a.criterion == "text")
    assert (text_agree.pairs, text_agree.rater_pairs) == (2, 6)
    assert text_agree.agreement == pytest.approx(2 / 6) and text_agree.kappa == pytest.approx(-0.5)
    md = R.format_markdown(res)
    assert "| text alignment | easytune | 4 | 0 | 2 | 66.7% [30.0, 90.3]" in md
    assert "Without flagged raters (2 raters" in md and ids["sloppy"] in md


def test_fleiss_kappa_on_the_textbook_example():
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories -> kappa 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert R.fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)
    assert R.fleiss_kappa([[3, 0, 0], [3, 0, 0]]) is None  # one category only: undefined


def test_changed_config_is_refused_and_votes_survive_reopening(voted, prepared, bundles):
    db = voted["db"]
    changed = C.parse_config({**GOOD, "seeds": [0, 1]})
    with pytest.raises(UserError, match="cannot change under its votes"):
        P.prepare_study(changed, db, prepared["media"], render=False, bundles=bundles)
    with pytest.raises(UserError, match="cannot change under its votes"):
        S.create_study(db, changed, P.plan_pairs(changed, SETTINGS), prepared["media"])
    # the same config again is a no-op
    assert S.create_study(db, prepared["cfg"], S.get_pairs(db, "demo"), prepared["media"]) == S.get_study(db, "demo")
    # a fresh process opening the file sees every vote
    code = (f"from easytune.study import store; v = store.votes({str(db)!r}, 'demo'); "
            f"print(len(v), sorted({{x.rater for x in v}}) == sorted({sorted(voted['raters'].values())!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["12", "True"]


CHILD = textwrap.dedent("""
    import sys
    from easytune.study import store
    db, study = sys.argv[1], sys.argv[2]
    pairs = store.get_pairs(db, study)
    while True:  # never finishes: the parent kills it
        rater = store.register_rater(db, "loop")
        for p in pairs:
            vote = store.record_vote(db, study, p.index, rater.id, "left", "tie")
            print(vote.id, flush=True)
""")


def test_every_vote_reported_committed_survives_kill_9(tmp_path):
    cfg = C.StudyConfig(name="durable", prompts=("a person walks",), checkpoints=("x", "y"), attention_checks=0)
    recipe = {"checkpoint": "x", "prompt": "a person walks", "motion": "motions/none.npz"}
    pairs = [S.Pair(index=i, kind="normal", prompt="a person walks", seed=i, a=recipe, b=recipe, left="a")
             for i in range(50)]
    db = tmp_path / "votes.sqlite"
    S.create_study(db, cfg, pairs, tmp_path / "media")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), "durable"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    printed = []
    try:
        while len(printed) < 8:
            line = child.stdout.readline()
            assert line, f"child stopped early: {child.stderr.read()}"
            printed.append(int(line))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    printed += [int(x) for x in rest.split()]
    assert child.returncode == -signal.SIGKILL
    stored = {v.id for v in S.votes(db, "durable")}
    assert set(printed) <= stored and len(printed) >= 8


# --- exports ---------------------------------------------------------------------------------------

def test_csv_export_maps_sides_to_checkpoints(voted, tmp_path):
    out = tmp_path / "votes.csv"
    assert R.export_csv(voted["db"], "demo", out) == 12
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == R.CSV_COLUMNS and len(rows) == 12
    pairs = {p.index: p for p in S.get_pairs(voted["db"], "demo")}
    names = {v: k for k, v in voted["raters"].items()}
    for row in rows:
        p, who = pairs[int(row["pair"])], row["rater_name"]
        assert row["flagged"] == ("yes" if who == "sloppy" else "no")
        assert row["left_checkpoint"] == p.recipe(p.left)["checkpoint"]
        assert row["right_prompt"] == p.recipe(p.right)["prompt"]
        if p.kind == "normal":
            want = PLANS[who][p.index][0]
            assert row["text_winner"] == {"a": "base", "b": "easytune"}[want]
            assert row["text_choice"] == side_of(p, want)
        if p.kind == "mismatch":
            assert row["text_winner"] == ("decoy" if who == "sloppy" else p.a["checkpoint"])
        assert names[row["rater"]] == who


def test_pairs_export_reads_back_for_spl(voted, tmp_path):
    out = tmp_path / "pairs.jsonl"
    assert R.export_pairs(voted["db"], "demo", out) == 4  # 2 normal pairs x 2 unflagged raters
    back = spl.read_pairs(out)
    ids = {v: k for k, v in voted["raters"].items()}
    assert len(back) == 4 and all(p.criterion == "text_match" for p in back)
    for p in back:
        assert set(p.a.regenerate) == set(spl.REGENERATE_KEYS) == set(p.b.regenerate)
        assert (p.a.regenerate["checkpoint"], p.b.regenerate["checkpoint"]) == ("base", "easytune")
        assert p.preferred == PLANS[ids[p.extra["rater"]]][p.extra["pair"]][0]
    assert R.export_pairs(voted["db"], "demo", out, include_flagged=True) == 6
    assert R.export_pairs(voted["db"], "demo", out, features=True) == 4
    feats = spl.read_pairs(out)
    assert feats[0].a.features.shape == (40, 263) and feats[0].a.regenerate is None


def test_exported_votes_train_spl(voted, bundles, tmp_path, capsys):
    """Real SPL training on the exported votes: the recipes regenerated from the demo checkpoints
    (hash-checked) and, through `python -m easytune train spl`, the inlined-features export. The
    reward model is a tiny one trained here on the toy dataset test_spl uses (no real dataset in CI)."""
    from easytune import cli
    from easytune import reward as RW
    from test_reward import HashTextEncoder, write_toy_dataset

    data = write_toy_dataset(tmp_path / "data")
    RW.main(RW.RewardTrainConfig(data=str(data), out=str(tmp_path / "rw"), preset="tiny", steps=2, batch_size=16,
                                 fn_threshold=0.95, eval_seeds=0), text_encoder=HashTextEncoder(), progress=False)
    recipes = tmp_path / "pairs.jsonl"
    R.export_pairs(voted["db"], "demo", recipes)
    regen = P.regenerator(bundles)
    pair = spl.read_pairs(recipes)[0]
    voted_pair = S.get_pairs(voted["db"], "demo")[pair.extra["pair"]]
    np.testing.assert_allclose(regen(pair.prompt, pair.b.regenerate),
                               P.load_motion(S.get_study(voted["db"], "demo").media, voted_pair.b)[0], atol=1e-5)
    with pytest.raises(UserError, match="cannot be regenerated"):
        regen(pair.prompt, {**pair.a.regenerate, "checkpoint_hash": "0" * 16})
    steps = []
    cfg = spl.SPLTrainConfig(data=str(data), init=str(tmp_path / "rw"), out=str(tmp_path / "spl"), steps=2,
                             batch_size=16, fn_threshold=0.95, human_pairs=str(recipes), human_batch=2, eval_seeds=0)
    report = spl.main(cfg, text_encoder=HashTextEncoder(), regenerate=regen, on_step=steps.append, progress=False)
    assert report["step"] == 2 and not report["stopped"]
    assert all(math.isfinite(m["human"]) for m in steps) and len(steps) == 2
    # the CLI regenerates the recipes itself (no features in the file)
    code = cli.main(["train", "spl", "--data", str(data), "--init", str(tmp_path / "rw"), "--out",
                     str(tmp_path / "spl_cli"), "--steps", "1", "--batch-size", "16", "--human-pairs", str(recipes),
                     "--human-batch", "2", "--eval-seeds", "0", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "spl_cli" / "config.json").read_text())["meta"]["steps"] == 1


# --- CLI -------------------------------------------------------------------------------------------

def test_cli_create_results_export(tmp_path, capsys, voted, prepared):
    from easytune import cli

    spec = tmp_path / "study.yaml"
    spec.write_text("name: cli\nprompts: [a person walks forward]\ncheckpoints: [base, easytune]\nseconds: 2\n"
                    "attention_checks: 1\n")
    db, media = tmp_path / "s.sqlite", prepared["media"]
    assert cli.main(["study", "create", str(spec), "--db", str(db), "--media", str(media), "--no-video",
                     "--device", "cpu"]) == 0
    assert "study cli: 2 pairs (1 normal, 1 repeat, 0 mismatch)" in capsys.readouterr().out
    assert cli.main(["study", "list", "--db", str(db)]) == 0
    assert capsys.readouterr().out.startswith("cli  base vs easytune")
    assert cli.main(["study", "results", "demo", "--db", str(voted["db"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Study `demo`: base vs easytune") and "| realism | base |" in out
    csv_out, pairs_out = tmp_path / "v.csv", tmp_path / "p.jsonl"
    assert cli.main(["study", "export", "demo", "--db", str(voted["db"]), "--csv", str(csv_out),
                     "--pairs", str(pairs_out)]) == 0
    assert "(12 votes)" in capsys.readouterr().out and len(spl.read_pairs(pairs_out)) == 4
    assert cli.main(["study", "export", "demo", "--db", str(voted["db"])]) == 2
    assert "needs --csv FILE, --pairs FILE or both" in capsys.readouterr().err
    assert cli.main(["study", "results", "nope", "--db", str(voted["db"])]) == 2
    assert "no study named 'nope'" in capsys.readouterr().err


def test_cli_bad_study_file_is_one_error_line(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nprompts: [a person walks]\ncheckpoints: [base, easytune]\nseconds: 40\n")
    proc = subprocess.run([sys.executable, "-m", "easytune", "study", "create", str(spec), "--db",
                           str(tmp_path / "s.sqlite")], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: study 'seconds' must be a number from 1 to 9.8, got 40")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "s.sqlite").exists()
