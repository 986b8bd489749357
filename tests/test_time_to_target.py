"""The time-to-target definition on hand-made curves: the target is the base plus half of DRaFT-50's mean
final gain, a run's time is its first check at or above it, and the speed-up is a ratio of mean times."""

from __future__ import annotations

import pytest

from easytune import time_to_target as T


def _run(row, seed, points):
    return {"row": row, "seed": seed, "trajectories": len(points), "points": points}


def test_target_times_and_speedup():
    runs = [_run("draft-50", 0, [(0, 0.80), (100, 0.82), (200, 0.84), (300, 0.90)]),
            _run("draft-50", 1, [(0, 0.80), (100, 0.81), (200, 0.86), (300, 0.90)]),
            _run("easytune", 0, [(0, 0.80), (10, 0.86), (20, 0.95)]),
            _run("easytune", 1, [(0, 0.80), (10, 0.84), (30, 0.86)])]
    res = T.analyse(runs, budget=300)
    assert res["target"] == pytest.approx(0.85)  # 0.80 + 0.5 * (0.90 - 0.80)
    assert res["rows"]["draft-50"]["times"] == [300, 200] and res["rows"]["draft-50"]["mean_s"] == 250
    assert res["rows"]["easytune"]["times"] == [10, 30] and res["rows"]["easytune"]["mean_s"] == 20
    assert res["speedup_vs_draft50"] == pytest.approx(12.5) and res["met_10x"]
    assert res["rows"]["easytune"]["speedup_vs_draft50"] == pytest.approx(12.5)
    assert res["rows"]["draft-50"]["speedup_vs_draft50"] == pytest.approx(1.0)
    text = T.table(runs, res)
    assert "12.5x sooner" in text and "goal >= 10x: met" in text
    assert "the same held-out prompts and noise for seeds 0, 1" in text and "target (the base + 50% of that gain): 0.8500" in text


def test_a_miss_gives_a_lower_bound_and_no_gain_no_target():
    runs = [_run("draft-50", 0, [(0, 0.80), (100, 0.90)]), _run("draft-50", 1, [(0, 0.80), (100, 0.84)]),
            _run("easytune", 0, [(0, 0.80), (50, 0.86)])]
    res = T.analyse(runs, budget=100)  # target 0.835: draft-50 seed 0 reaches it at 100, seed 1 at 100
    assert res["rows"]["draft-50"]["times"] == [100, 100] and res["speedup_vs_draft50"] == pytest.approx(2.0)
    assert not res["met_10x"] and "2.0x sooner" in T.table(runs, res)
    early = [_run("draft-50", s, [(0, 0.80), (25, 0.85), (100, 0.84 - 0.02 * s)]) for s in (0, 1)]
    slow = early + [_run("easytune", 0, [(0, 0.80), (50, 0.81), (100, 0.86)])]  # DRaFT-50 at 25 s, EasyTune at 100 s
    res = T.analyse(slow, budget=100)
    assert res["speedup_vs_draft50"] == pytest.approx(0.25)
    assert "takes 4.0x as long as DRaFT-50" in T.table(slow, res)
    runs[0]["points"][-1] = (100, 0.84)  # target 0.815: reached at 100 by both again
    runs[1]["points"][-1] = (100, 0.82)
    runs[2]["points"][-1] = (50, 0.79)
    res = T.analyse(runs, budget=100)
    assert res["rows"]["easytune"]["times"] == [None] and "speedup_vs_draft50" not in res
    assert res["met_10x"] is False and "missed the target within the budget on 1 of 1 seed(s)" in T.table(runs, res)
    assert res["rows"]["easytune"]["speedup_vs_draft50"] is None and "| n/a |" in T.table(runs, res)
    flat = [_run("draft-50", 0, [(0, 0.8), (100, 0.79)]), _run("easytune", 0, [(0, 0.8), (10, 0.9)])]
    res = T.analyse(flat, budget=100)
    assert res["target"] is None and "did not raise" in T.table(flat, res)


def test_each_seed_is_measured_from_its_own_base():
    """Each seed draws its own held-out prompts, so its base differs: the target is that seed's base plus half
    of DRaFT-50's mean gain (each run's gain over its own base), not seed 0's base plus it."""
    runs = [_run("draft-50", 0, [(0, 0.80), (100, 0.90)]), _run("draft-50", 1, [(0, 0.90), (100, 1.00)]),
            _run("easytune", 0, [(0, 0.80), (50, 0.86), (100, 0.88)]),
            _run("easytune", 1, [(0, 0.90), (50, 0.92), (100, 0.96)])]
    res = T.analyse(runs, budget=100)
    assert res["draft50_gain"] == pytest.approx(0.10)
    assert res["targets"] == {0: pytest.approx(0.85), 1: pytest.approx(0.95)}
    # seed 1 starts at 0.90: measured from seed 0's base (target 0.85) it would count as reached at step 0
    assert res["rows"]["easytune"]["times"] == [50, 100] and res["rows"]["draft-50"]["times"] == [100, 100]
    assert res["rows"]["easytune"]["final_gain"] == pytest.approx(0.07)
    text = T.table(runs, res)
    assert "0.8000 / 0.9000" in text and "0.8500 / 0.9500" in text and "+0.0700" in text
