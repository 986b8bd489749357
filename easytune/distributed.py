"""Multi-process training under torchrun: gloo on CPU, NCCL on GPUs.

    torchrun --standalone --nproc-per-node 2 -m easytune finetune --batch-size 16 ...
    torchrun --standalone --nproc-per-node 2 -m easytune train base --batch-size 64 ...

Batch sizes stay global: a step draws the whole batch from (seed, step) exactly as one process would,
and rank r keeps rows [r * B/world, (r + 1) * B/world). Gradients are averaged over ranks before the
optimizer step, so every replica takes the same step and the run equals a one-process run with the
same total batch (up to float summation order). Logging, validation and checkpoints happen on rank 0.

Base training wraps its denoiser in DistributedDataParallel (one forward, one backward per step).
The fine-tuners cannot: a trajectory calls the denoiser many times (guidance, the no-grad steps, the
frozen base for the guard, DRaFT's chain before one backward), which DDP's reducer refuses for reused
parameters. They all-reduce the gradients themselves in `FinetuneRun.clip_and_step`, which is the
arithmetic DDP's reducer performs (a sum divided by the world size).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from easytune.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's share of a global batch of n rows (n must divide evenly)."""
        if n % self.size:
            raise UserError(f"the batch size ({n}) must be a multiple of the number of processes ({self.size})")
        per = n // self.size
        return slice(self.rank * per, (self.rank + 1) * per)


SINGLE = World()


def world() -> World:
    """The current process group's rank and size (SINGLE outside torchrun)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return SINGLE
    return World(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                 int(os.environ.get("LOCAL_RANK", 0)))


def init(device: torch.device) -> World:
    """Join the process group torchrun describes (WORLD_SIZE > 1), once; SINGLE otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        torch.distributed.init_process_group(backend)
    return world()


def local_device(device: torch.device, w: World) -> torch.device:
    """cuda:<local rank> for a multi-process CUDA run; the device unchanged otherwise."""
    return torch.device("cuda", w.local_rank) if device.type == "cuda" and w.size > 1 else device


def average_gradients(params, w: World) -> None:
    """Replace every gradient with its mean over ranks (what DDP's reducer does)."""
    if w.size == 1:
        return
    for p in params:
        if p.grad is None:  # a parameter every rank left untouched (the same on all: same graph)
            continue
        torch.distributed.all_reduce(p.grad)
        p.grad.div_(w.size)


def broadcast_parameters(module: torch.nn.Module, w: World) -> None:
    """Give every replica rank 0's weights (a random LoRA init must not differ between ranks)."""
    if w.size == 1:
        return
    with torch.no_grad():
        for p in module.parameters():
            torch.distributed.broadcast(p.data, 0)


def total(value: float | torch.Tensor, w: World) -> torch.Tensor:
    """The sum over ranks of a scalar (a float64 tensor on every rank)."""
    t = torch.as_tensor(value, dtype=torch.float64).detach().clone().reshape(())
    if w.size > 1:
        dev = torch.device("cuda", w.local_rank) if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
        t = t.to(dev)
        torch.distributed.all_reduce(t)
    return t.cpu()


def any_rank(flag: bool, w: World) -> bool:
    """True on every rank when any rank says True (a cancel seen by rank 0 stops all)."""
    return bool(flag) if w.size == 1 else bool(total(float(flag), w) > 0)


def same_on_all_ranks(tensors, w: World) -> bool:
    """True when every rank holds bitwise the same tensors (replicas in sync); True in one process."""
    if w.size == 1:
        return True
    import hashlib

    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digests = [None] * w.size
    torch.distributed.all_gather_object(digests, h.hexdigest())
    return len(set(digests)) == 1


def shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(w: World) -> None:
    if w.size > 1:
        torch.distributed.barrier()
