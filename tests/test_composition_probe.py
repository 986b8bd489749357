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


def _probe_with_fakes(tmp_path, monkeypatch, evaluator_dataset):
    """The probe on a real tiny base, with the evaluator, text encoder and metrics faked: what is checked is
    which dataset record the base is loaded against."""
    import json

    from easytune import evaluate as E
    from easytune import evaluator as EV
    from easytune import text as T
    from easytune.checkpoints import Checkpoint
    from tiny_models import write_tiny_checkpoints

    root = write_tiny_checkpoints(tmp_path / "ckpts")
    cfg = json.loads((root / "base" / "config.json").read_text())
    cfg["dataset"] = {"stamp": "build-on-this-cpu", "content_stamp": "same-content"}
    (root / "base" / "config.json").write_text(json.dumps(cfg))
    evaluator_ckpt = Checkpoint(path=tmp_path / "evaluator", info={"kind": "evaluator", "dataset": evaluator_dataset},
                                state={})
    monkeypatch.setattr(E, "composition_set", lambda data, per: (["a person bows happily"], [("bow", "happy")], [40]))
    monkeypatch.setattr(EV, "load_evaluator", lambda name, device: (None, evaluator_ckpt))
    monkeypatch.setattr(EV, "Embedder", lambda model, text: None)
    monkeypatch.setattr(T, "load_text_encoder", lambda device: None)
    monkeypatch.setattr(E, "composition_metrics",
                        lambda *a: {"R-Precision top-1 (absent)": 0.5, "MM-Dist (absent)": 4.25})
    return probe.main(["--checkpoints", str(root / "base"), "--cache", str(tmp_path / "cache")])


def test_a_base_on_a_rebuilt_dataset_is_probed_by_its_content_stamp(tmp_path, monkeypatch, capsys):
    # A base trained on this machine's build of the dataset records another byte stamp than the evaluator's
    # (float files differ in their last bits between CPUs) and the same content stamp: the probe must run it.
    rc = _probe_with_fakes(tmp_path, monkeypatch, {"stamp": "build-elsewhere", "content_stamp": "same-content"})
    assert rc == 0
    assert "| 0.500 | 4.250 |" in capsys.readouterr().out


def test_a_base_on_another_dataset_is_refused_with_a_clear_message(tmp_path, monkeypatch, capsys):
    rc = _probe_with_fakes(tmp_path, monkeypatch, {"stamp": "build-elsewhere", "content_stamp": "other-content"})
    assert rc == 2
    assert "was trained on dataset build-on-this-cpu" in capsys.readouterr().err
