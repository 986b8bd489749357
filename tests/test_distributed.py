"""torchrun with gloo on 2 CPU processes (easytune.distributed): fine-tuning and base training keep the
replicas identical, and equal a one-process run with the same total batch within float tolerance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from easytune.checkpoints import load_checkpoint
from tiny_models import synthetic_clips, write_dataset, write_tiny_checkpoints

ROOT = Path(__file__).resolve().parent.parent
HELPER = Path(__file__).with_name("ddp_run.py")
PROMPTS = ["a person walks forward", "a person waves the right hand", "someone kicks", "a person bows",
           "a person runs", "a person jumps", "a person turns left", "someone punches"]


def _run(out: Path, args: list[str], processes: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] \
        if processes > 1 else [sys.executable]
    proc = subprocess.run([*launch, str(HELPER), str(out), *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _weights(folder: Path, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(folder / f"rank{rank}.pt", weights_only=True)


def _compare(two: Path, one: Path) -> None:
    a, b, single = _weights(two, 0), _weights(two, 1), _weights(one, 0)
    for k in a:
        assert torch.equal(a[k], b[k]), f"replicas differ at {k}"  # bitwise: same averaged gradient on both
    for k in a:
        torch.testing.assert_close(a[k], single[k], rtol=1e-4, atol=2e-6, msg=lambda m: f"{k}: {m}")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = write_tiny_checkpoints(tmp_path_factory.mktemp("ddp"))
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return root


def test_two_process_finetune_equals_one_process_with_the_same_total_batch(ckpts, tmp_path):
    common = ["finetune", "--method", "easytune", "--base", str(ckpts / "base"), "--reward", str(ckpts / "reward"),
              "--prompts", str(ckpts / "prompts.txt"), "--seconds", "1.5", "--batch-size", "4",
              "--trajectories", "3", "--warmup", "1", "--lr", "1e-3", "--optimizer", "sgd", "--val-prompts", "0",
              "--save-every", "2", "--base-penalty", "1", "--diversity-weight", "1", "--device", "cpu",
              "--no-progress"]
    _run(tmp_path / "two", [*common, "--out", str(tmp_path / "two" / "run")], 2)
    _run(tmp_path / "one", [*common, "--out", str(tmp_path / "one" / "run")], 1)
    _compare(tmp_path / "two", tmp_path / "one")
    base = load_checkpoint(ckpts / "base").state
    assert any(not torch.equal(v, base[f"denoiser.{k}"]) for k, v in _weights(tmp_path / "one", 0).items())
    # rank 0 wrote the run (checkpoint, log); the checkpoint holds the replicas' weights
    saved = load_checkpoint(tmp_path / "two" / "run" / "last").state
    for k, v in _weights(tmp_path / "two", 1).items():
        assert torch.equal(saved[f"denoiser.{k}"], v)
    assert len((tmp_path / "two" / "run" / "log.jsonl").read_text().splitlines()) == 3


def test_two_process_base_training_equals_one_process_with_the_same_total_batch(tmp_path):
    data = write_dataset(tmp_path / "data", synthetic_clips(8, "motion {i}"), np.zeros(263), np.ones(263), val=True)
    common = ["train", "base", "--data", str(data), "--preset", "tiny", "--d-model", "32", "--batch-size", "4",
              "--max-steps", "3", "--warmup-steps", "1", "--val-every", "0", "--ckpt-every", "2", "--device", "cpu",
              "--no-progress"]
    _run(tmp_path / "two", [*common, "--run-dir", str(tmp_path / "two" / "run")], 2)
    _run(tmp_path / "one", [*common, "--run-dir", str(tmp_path / "one" / "run")], 1)
    _compare(tmp_path / "two", tmp_path / "one")
    one = load_checkpoint(tmp_path / "one" / "run" / "last")
    two = load_checkpoint(tmp_path / "two" / "run" / "last")
    assert two.meta["step"] == 3
    for k, v in one.state.items():  # the EMA weights rank 0 saved match the one-process run's
        torch.testing.assert_close(two.state[k], v, rtol=1e-4, atol=2e-6)


def test_a_batch_that_does_not_split_evenly_is_refused():
    from easytune.distributed import World
    from easytune.errors import UserError

    assert World(1, 2).rows(8) == slice(4, 8)
    with pytest.raises(UserError, match="multiple of the number of processes"):
        World(0, 3).rows(8)
