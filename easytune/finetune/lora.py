"""LoRA adapters on the denoiser through peft: add, save/load their tensors, merge into plain weights.

Targets are nn.Linear layers by name. The default leaves attention alone: nn.MultiheadAttention reads
its projection weights directly (a LoRA on `out_proj` would never run), and torch's fused inference
path of nn.TransformerEncoderLayer reads `linear1.weight` / `linear2.weight` directly too, so an
*unmerged* adapter is silently skipped in eval mode without gradients. Hence: fine-tune in train mode
(the fine-tuning denoiser is built with dropout 0), and sample from `merged(model)`, a plain
MotionDenoiser whose weights include the adapter (what `load_base` returns for a LoRA checkpoint).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from easytune.errors import UserError

DEFAULT_TARGETS = ("linear1", "linear2", "motion_in", "motion_out")


@dataclass
class LoraSettings:
    rank: int = field(default=8, metadata={"help": "adapter rank r"})
    alpha: float = field(default=16.0, metadata={"help": "scale numerator: the update is (alpha / r) B A"})
    targets: tuple[str, ...] = field(default=DEFAULT_TARGETS, metadata={"help": "nn.Linear module names"})

    def validate(self) -> None:
        if not 1 <= int(self.rank) <= 256:
            raise UserError(f"LoRA rank must be from 1 to 256, got {self.rank}")
        if not 0 < float(self.alpha) <= 4096:
            raise UserError(f"LoRA alpha must be in (0, 4096], got {self.alpha}")
        if not self.targets:
            raise UserError("LoRA needs at least one target layer name (e.g. linear1,linear2,motion_in,motion_out)")


def add_lora(denoiser: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """Inject fresh adapters in place (B = 0: the model's function is unchanged); only the adapters
    require grad afterwards. Returns the same module."""
    from peft import LoraConfig, inject_adapter_in_model

    settings.validate()
    names = {n.rsplit(".", 1)[-1] for n, m in denoiser.named_modules() if isinstance(m, torch.nn.Linear)}
    unknown = sorted(set(settings.targets) - names)
    if unknown:
        raise UserError(f"LoRA target(s) {unknown} are not linear layers of the denoiser; choose from {sorted(names)}")
    cfg = LoraConfig(r=int(settings.rank), lora_alpha=float(settings.alpha), target_modules=list(settings.targets),
                     lora_dropout=0.0, bias="none")
    denoiser.requires_grad_(False)
    inject_adapter_in_model(cfg, denoiser)
    for name, p in denoiser.named_parameters():
        p.requires_grad_("lora_" in name)
    return denoiser


def lora_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors only (a few hundred KB), keys without peft's adapter name."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_lora_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "adapter") -> None:
    """Load adapter tensors into a model that `add_lora` prepared with the same settings."""
    from peft import set_peft_model_state_dict

    own = lora_state(model)
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or extra or bad:
        raise UserError(f"{source} does not fit this denoiser (missing {missing[:3]}, unexpected {extra[:3]}, "
                        f"mis-shaped {bad[:3]}); was it trained with other LoRA settings or another base?")
    set_peft_model_state_dict(model, state)


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """A copy with every adapter merged into its layer's weight and the peft wrappers removed."""
    from peft.tuners.lora import LoraLayer

    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent = out.get_submodule(name.rsplit(".", 1)[0]) if "." in name else out
            setattr(parent, name.rsplit(".", 1)[-1], module.get_base_layer())
    return out


def has_lora(model: torch.nn.Module) -> bool:
    return any("lora_" in n for n, _ in model.named_parameters())
