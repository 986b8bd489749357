"""bench/bench_time_to_target.py keeps finished runs: one made with other flags is refused (nothing deleted)
unless --redo; the same flags reuse it without training."""

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_time_to_target", REPO / "bench" / "bench_time_to_target.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def _args(work: Path, **kw) -> argparse.Namespace:
    a = dict(base="base", reward="reward", data="datasets/bandai", max_seconds=4.0, seconds=4.0, held_out=8,
             every={}, budget=60.0, batch=4, steps=10, lr_row={}, lr=1e-5, base_penalty=1.0, device="cpu",
             work=str(work), redo=False)
    a.update(kw)
    return argparse.Namespace(**a)


def _finished_run(work: Path, args: argparse.Namespace) -> Path:
    out = work / "easytune_s0"
    out.mkdir(parents=True)
    (out / "bench_flags.json").write_text(json.dumps(bench.run_args("easytune", 0, args, work / "h.txt", out)))
    (out / "summary.json").write_text(json.dumps({"step": 3, "train_s": 12.0, "validation": [
        {"train_s": 0.0, "reward": 0.8}, {"train_s": 12.0, "reward": 0.85}]}))
    return out


def test_same_flags_reuse_other_flags_are_refused_and_kept(tmp_path):
    args = _args(tmp_path)
    out = _finished_run(tmp_path, args)
    run = bench.one_run("easytune", 0, args, tmp_path / "h.txt")
    assert run["points"] == [(0.0, 0.8), (12.0, 0.85)] and run["trajectories"] == 3
    with pytest.raises(SystemExit, match=r"other settings \(--lr differ\).*--redo"):
        bench.one_run("easytune", 0, _args(tmp_path, lr=3e-5), tmp_path / "h.txt")
    assert (out / "summary.json").is_file()  # nothing deleted


def test_flag_dict_reads_lone_flags():
    assert bench.flag_dict(["--a", "1", "--no-progress", "--k", "3"]) == {"--a": "1", "--no-progress": None, "--k": "3"}


def test_a_grid_row_runs_its_row_at_its_own_rate_in_its_own_folder(tmp_path):
    args = _args(tmp_path, every={"easytune": 3}, lr_row={"easytune": 2e-5})
    assert bench.parse_row("easytune@5e-6") == "easytune@5e-06" and bench.parse_row("refl") == "refl"
    grid = bench.flag_dict(bench.run_args("easytune@5e-06", 0, args, tmp_path / "h.txt", tmp_path / "g"))
    row = bench.flag_dict(bench.run_args("easytune", 0, args, tmp_path / "h.txt", tmp_path / "r"))
    assert grid["--lr"] == "5e-06" and row["--lr"] == "2e-05"  # the @ rate wins over --lr-row
    assert grid["--val-every"] == row["--val-every"] == "3" and grid["--k"] == row["--k"] == "0"
    for bad in ("easytune@fast", "easytune@0", "easytune@2", "nope@1e-5", "nope"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_row(bad)
