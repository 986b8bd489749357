"""scripts/composition_probe.py refuses out-of-range settings, naming the range, before it loads anything."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("composition_probe", REPO / "scripts" / "composition_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


@pytest.mark.parametrize("argv, message", [
    (["--guidance", "-1"], "guidance must be in [0.0, 20.0]"),
    (["--steps", "5000"], "steps must be an integer from 1 to 1000"),
    (["--replications", "0"], "--replications must be an integer in [1,"),
    (["--per-combination", "0"], "--per-combination must be an integer in [1,"),
])
def test_out_of_range_settings_are_refused_before_loading(argv, message, tmp_path, capsys):
    missing = tmp_path / "no_data"  # never read: the settings are checked first
    assert probe.main(argv + ["--data", str(missing), "--evaluator", str(tmp_path / "no_evaluator")]) == 2
    assert message in capsys.readouterr().err


def test_a_dataset_without_absent_combinations_is_a_clear_error(tmp_path, capsys):
    from test_reward import write_toy_dataset

    data = write_toy_dataset(tmp_path / "data")
    assert probe.main(["--data", str(data), "--evaluator", str(tmp_path / "no_evaluator")]) == 2
    assert "no labels or no content-style combination without a motion" in capsys.readouterr().err
