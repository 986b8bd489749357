"""scripts/seed_spread.py: validation row, probe and the first N test replications of each seed, from the files the
project's commands write."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("seed_spread", REPO / "scripts" / "seed_spread.py")
seed_spread = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seed_spread)

TEST_KEYS = ["R-Precision top-1", "MM-Dist", "FID", "MM-Dist (seen)", "MM-Dist (unseen)", "FID (unseen)"]


def _write(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return path


def test_rows_from_selection_probe_table_and_test_replications(tmp_path, capsys):
    sel = _write(tmp_path / "s0" / "selection_composition.json", {"rows": [
        {"step": 0, "R-Precision top-1": 0.8, "FID": 4.0, "MultiModality": 0.9, "MM-Dist (absent)": 6.0},
        {"step": 250, "R-Precision top-1": 0.93, "FID": 0.3, "MultiModality": 0.8, "MM-Dist (absent)": 5.6}]})
    # five replications: the table must average only the first three
    _write(tmp_path / "s0_test" / "results.json", {"rows": {"generated": {k: [1.0, 2.0, 3.0, 100.0, 100.0]
                                                                           for k in TEST_KEYS}}})
    _write(tmp_path / "s3" / "val" / "results.json", {"rows": {"generated": {
        "R-Precision top-1": [0.92], "FID": [0.55], "MultiModality": [0.81]}}})
    probe = tmp_path / "s3" / "probe.md"
    probe.write_text("| checkpoint | R@1 | MM-Dist |\n|---|---|---|\n| runs/x/snapshots/step_00200 | 0.3 | 6.5 |\n"
                     "| runs/x/snapshots/step_00250 | 0.359 | 5.788 |\n")
    rows = [f"s0={sel}:250,{sel}:250,{tmp_path / 's0_test'}", f"s3={tmp_path / 's3' / 'val'},{probe}:step_00250"]
    assert seed_spread.main(["--replications", "3", "--rows", *rows]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2] == "| s0 | 0.930 | 0.300 | 0.800 | 5.600 | " + " | ".join(["2.000"] * 6) + " |"
    assert lines[3] == "| s3 | 0.920 | 0.550 | 0.810 | 5.788 | " + " | ".join([""] * 6) + " |"


def test_too_few_replications_and_missing_probe_row_are_refused(tmp_path):
    sel = _write(tmp_path / "sel.json", {"rows": [{"step": 250, "R-Precision top-1": 0.9, "FID": 0.4,
                                                   "MultiModality": 1.0, "MM-Dist (absent)": 5.7}]})
    _write(tmp_path / "t" / "results.json", {"rows": {"generated": {k: [1.0, 2.0] for k in TEST_KEYS}}})
    with pytest.raises(SystemExit, match="fewer than 3 replications"):
        seed_spread.main(["--rows", f"a={sel}:250,{sel}:250,{tmp_path / 't'}"])
    with pytest.raises(SystemExit, match="no step 300"):
        seed_spread.main(["--rows", f"a={sel}:300,{sel}:250"])
    probe = tmp_path / "probe.md"
    probe.write_text("| checkpoint | R@1 | MM-Dist |\n|---|---|---|\n| runs/y/step_00100 | 0.3 | 6.5 |\n")
    with pytest.raises(SystemExit, match="no probe row"):
        seed_spread.main(["--rows", f"a={sel}:250,{probe}:step_00250"])
