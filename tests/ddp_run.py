"""Run under torchrun by tests/test_distributed.py: `python ddp_run.py OUT_DIR <easytune CLI args...>`
runs the command (`finetune ...` or `train base ...`), then every rank saves the trained weights it
holds to OUT_DIR/rank<r>.pt, so the test can compare the replicas with each other and with a
one-process run."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from easytune import cli, train_base
    from easytune.finetune import harness

    out, argv = Path(sys.argv[1]), sys.argv[2:]
    held = {}
    setup, make_optimizer = harness.setup, train_base.make_optimizer

    def keep_run(*a, **k):
        held["model"] = (run := setup(*a, **k)).model
        return run

    def keep_model(model, cfg):
        held["model"] = model
        return make_optimizer(model, cfg)

    harness.setup, train_base.make_optimizer = keep_run, keep_model
    code = cli.main(argv)
    rank = int(__import__("os").environ.get("RANK", "0"))
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in held["model"].state_dict().items()}, out / f"rank{rank}.pt")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
