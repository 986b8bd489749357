"""`python -m easytune results` on a toy world (toy dataset, tiny base and reward, a tiny trained
evaluator): the LR grid picks by val reward, seeds give the CI, every stage is reused on a re-run, and
RESULTS.md holds the base row first and every method's row with the numbers of its own evaluations."""

from __future__ import annotations

import json
import time

import pytest

from easytune import evaluator as V
from easytune import results as RS
from easytune.errors import UserError
from test_reward import HashTextEncoder, write_toy_dataset
from tiny_models import write_tiny_checkpoints


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    data = write_toy_dataset(root / "data")
    train = (data / "train.txt").read_text().split()
    (data / "val.txt").write_text("".join(n + "\n" for n in train[:8]))
    write_tiny_checkpoints(root)
    V.main(V.EvaluatorTrainConfig(data=str(data), out=str(root / "ev"), preset="tiny", embed_dim=16, steps=20,
                                  batch_size=16, lr=3e-3, warmup=2, margin=3.0, fn_threshold=0.95, log_every=20),
           text_encoder=HashTextEncoder())
    return root


def _cfg(world, tmp_path, **kw):
    return RS.ResultsConfig(**{**dict(methods="easytune,refl", seeds="0,1", lrs="1e-4,1e-3", budget=1.0, batch_size=2,
                                      max_seconds=2.0, val_prompts=4, base=str(world / "base"),
                                      reward=str(world / "reward"), evaluator=str(world / "ev"),
                                      data=str(world / "data"), work=str(tmp_path / "work"),
                                      cache=str(tmp_path / "cache"), rows=str(tmp_path / "rows"),
                                      out=str(tmp_path / "RESULTS.md"), device="cpu"), **kw})


def test_results_table_from_its_own_runs_and_reused_on_rerun(world, tmp_path):
    cfg = _cfg(world, tmp_path)
    rows = RS.main(cfg, text_encoder=HashTextEncoder())
    assert list(rows) == ["base", "easytune", "refl"]
    work = tmp_path / "work"
    for m in ("easytune", "refl"):
        r = rows[m]
        assert set(r["grid"]) == {1e-4, 1e-3} and r["lr"] == f"{max(r['grid'], key=r['grid'].get):g}"
        assert len(r["metrics"]["FID"]) == 2 and len(r["trajectories"]) == 2  # one evaluation per seed
        for s in (0, 1):
            summary = json.loads((work / m / f"lr{r['lr']}_s{s}" / "summary.json").read_text())
            assert summary["budget_spent"] and summary["train_s"] >= 1.0
            ev = json.loads((work / "eval" / f"{m}_lr{r['lr']}_s{s}" / "evaluate" / "results.json").read_text())
            assert ev["rows"]["generated"]["FID"][0] == r["metrics"]["FID"][s]
    assert len(rows["base"]["metrics"]["FID"]) == 2  # the base: as many replications as seeds
    text = (tmp_path / "RESULTS.md").read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("| base |") or ln.startswith("| easytune |")]
    assert lines[0].startswith("| base |") and "python -m easytune results" in text
    assert "needs the base, easytune and draft-50 rows" in text and "FID's real floor" in text
    assert "## Time to a held-out reward target" in text and "the target is undefined" in text
    assert (tmp_path / "RESULTS_reward_vs_time.png").stat().st_size > 1000
    curves = json.loads((work / "results.json").read_text())["curves"]
    assert len(curves) == 4 and all(len(c["points"]) >= 2 and c["points"][0][0] == 0.0 for c in curves)
    print(text)  # no draft-50 here: the goal is not claimed
    # a re-run reuses every stage: nothing is trained or evaluated again
    stamps = {p: p.stat().st_mtime for p in work.rglob("*.json")}
    time.sleep(0.05)
    again = RS.main(cfg, text_encoder=HashTextEncoder())
    assert again["easytune"]["metrics"] == rows["easytune"]["metrics"]
    changed = [p for p, t in stamps.items() if p != work / "results.json" and p.stat().st_mtime != t]
    assert changed == []
    # a fresh checkout (empty --work) rebuilds the same table from the kept rows alone
    fresh = RS.ResultsConfig(**{**cfg.__dict__, "work": str(tmp_path / "fresh"), "out": str(tmp_path / "again" / "RESULTS.md")})
    assert RS.main(fresh, text_encoder=HashTextEncoder()) == again
    assert (tmp_path / "again" / "RESULTS.md").read_text().split("\n", 3)[3] == text.split("\n", 3)[3]  # all but the command
    assert not (tmp_path / "fresh" / "easytune").exists() and not (tmp_path / "fresh" / "eval").exists()
    # a row kept under other settings is not reused
    steps = json.loads((tmp_path / "rows" / "refl.json").read_text())["settings"]["steps"]
    seeds, lrs = [0, 1], [1e-4, 1e-3]
    assert RS.kept_row(cfg, RS.row_settings(cfg, "refl", steps, seeds, lrs)) is not None
    for other in (dict(budget=2.0), dict(skate_weight=0.0), dict(reward=str(world / "base"))):
        changed_cfg = RS.ResultsConfig(**{**cfg.__dict__, **other})
        assert RS.kept_row(changed_cfg, RS.row_settings(changed_cfg, "refl", steps, seeds, lrs)) is None, other
    assert RS.kept_row(cfg, RS.row_settings(cfg, "refl", steps, [0], lrs)) is None
    (tmp_path / "rows" / "refl.json").write_text("{not json")
    with pytest.raises(UserError, match="is not a row file"):
        RS.kept_row(cfg, RS.row_settings(cfg, "refl", steps, seeds, lrs))


def test_results_refuses_bad_settings(world, tmp_path):
    for kw, msg in [(dict(methods="easytune,nope"), "unknown method"), (dict(lrs="fast"), "comma-separated"),
                    (dict(seeds=""), "at least one seed"), (dict(budget=0.0), "budget must be"),
                    (dict(checks=0), "checks must be")]:
        with pytest.raises(UserError, match=msg):
            _cfg(world, tmp_path, **kw).lists()


def test_committed_results_match_their_kept_rows():
    """RESULTS.md at the repository root and the README quote the goal line that results.py computes from
    the rows kept in docs/results (a hand edit or a stale copy fails here), and every row in RESULTS.md
    is a kept one."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    kept = {p.stem: json.loads(p.read_text()) for p in (root / "docs" / "results").glob("*.json")}
    line = RS.goal({name: k["row"] for name, k in kept.items()})
    assert line in (root / "RESULTS.md").read_text()
    percent = line.split(": ")[1].split("%")[0]  # e.g. "-31.3"
    assert f"{percent}%" in (root / "README.md").read_text()
    table = [ln.split(" | ")[0][2:] for ln in (root / "RESULTS.md").read_text().splitlines()
             if ln.startswith("| ") and " ± " in ln]
    assert table and set(table) <= set(kept), table


def test_draft_variants_clipped_to_the_chain_are_named_together():
    """At 10 steps DRaFT-10 and DRaFT-50 both backpropagate through all 10 steps: RESULTS.md says so instead of
    showing two rows of one method; at 50 steps only DRaFT-50 is full backpropagation, so there is nothing to say."""
    note = RS.clipped_draft(["base", "easytune", "draft-50", "draft-1"], 10)
    assert "draft-10 and draft-50 are one method" in note and note.endswith("as draft-50.")
    assert "draft-1," not in note
    assert RS.clipped_draft(["base", "draft-50"], 50) == ""
    assert RS.clipped_draft(["base", "easytune"], 10) == ""
