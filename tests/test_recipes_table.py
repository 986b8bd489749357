"""scripts/recipes_table.py --selections: validation rows from `finetune select` outputs."""

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("recipes_table", REPO / "scripts" / "recipes_table.py")
recipes_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipes_table)


def _snapshot(step, r1):
    return {"step": step, "R-Precision top-1": r1, "FID": 1.0 / (step + 1), "MM-Dist": 3.0, "MultiModality": 0.9,
            "foot_skating": 0.01, "jerk": 100.0, "checkpoint": f"snapshots/step_{step:05d}"}


def test_selection_rows_give_the_last_and_the_chosen_snapshot(tmp_path, capsys):
    run = tmp_path / "lora"
    run.mkdir()
    (run / "selection.json").write_text(json.dumps({"chosen": 1, "rows": [
        _snapshot(0, 0.80), _snapshot(50, 0.91), _snapshot(100, 0.88)]}))
    (run / "summary.json").write_text(json.dumps({"wall_s": 1800.0, "seconds": 0.1, "held_out_gain": {"gain": 0.05, "ci": 0.02}}))
    assert recipes_table.main(["--selections", str(run), str(tmp_path / "missing")]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines.pop(2) == "| base (step 0) | 0.800 | 1.000 | 3.000 | 0.900 | 0.010 | 100.0 | | |"
    assert lines[2] == "| lora (last, step 100) | 0.880 | 0.010 | 3.000 | 0.900 | 0.010 | 100.0 | +0.0500 ± 0.0200 | 30.0 min |"
    assert lines[3].startswith("| lora (chosen, step 50) | 0.910 | 0.020 |")
    assert len(lines) == 4
    assert "no selection.json" in err and "missing" in err


def test_the_easytune_card_quotes_the_kept_recipe_runs(capsys):
    """The card's "One change at a time" table is the script's output on docs/recipes, row for row."""
    runs = [REPO / "docs" / "recipes" / v for v in ("ref", "rts", "chain", "lora", "k3", "k3r", "pen1", "pen4", "light")]
    assert recipes_table.main(["--selections"] + [str(r) for r in runs]) == 0
    out, err = capsys.readouterr()
    rows = out.strip().splitlines()
    assert not err and len(rows) == 2 + 1 + 13  # header, base, last (+ chosen where it differs) per run
    card = (REPO / "demo_checkpoints" / "easytune" / "README.md").read_text(encoding="utf-8")
    table = "\n".join(rows[2:])
    assert table in card
