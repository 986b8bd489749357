"""The one device helper: `pick_device("auto" | "cpu" | "cuda[:i]")`.

"auto" is CUDA when available, else the CPU; nothing in the project assumes a GPU.
"""

from __future__ import annotations

import torch

from easytune.errors import UserError


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """A torch.device from a user's setting; a clear UserError for CUDA without a GPU or a bad name."""
    if isinstance(name, torch.device):
        return name
    name = "auto" if name is None else str(name).strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was asked for but CUDA is not available; use --device cpu or auto")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda[:index]") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r}; use auto, cpu or cuda[:index]")
    return device
