"""`python -m easytune finetune soup --ingredients A,B[,C] [--weights 1,1] --out DIR`: a weight average.

A model soup (Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models improves
accuracy without increasing inference time"; WiSE-FT, Wortsman et al. 2022, is the case where one ingredient
is the base itself): fine-tunes of one base that took different settings land in one basin, and the weighted
mean of their weights keeps what they share (here: the reward's alignment) while each run's own drift (one
run trades variety for FID, another FID for variety) partly cancels. Sampling costs what one model costs.

Ingredients are base, full fine-tune or LoRA checkpoints (a LoRA adapter is merged into its parent first),
by registry name or path, and must share one parent (the same weights hash), one dataset and one default
sampler. The soup is a full fine-tune checkpoint (kind "finetune") whose meta names the parent like any
fine-tune and lists every ingredient with its weights hash and weight, with a model card beside it. Which
ingredients and weights to use is a validation-split question (`evaluate --split val`), never a test one.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from easytune.errors import UserError


@dataclass
class SoupConfig:
    ingredients: list[str] = field(default_factory=list, metadata={
        "help": "comma-separated checkpoints (names or folders) of one base: fine-tunes, LoRA adapters, the base"})
    weights: list[float] = field(default_factory=list, metadata={
        "help": "comma-separated positive weights, one per ingredient (empty = equal); normalized to sum 1"})
    out: str = field(default="runs/soup", metadata={"help": "folder for the soup checkpoint"})

    def validate(self) -> None:
        if len(self.ingredients) < 2:
            raise UserError(f"a soup needs at least 2 ingredients, got {len(self.ingredients)}")
        if self.weights and len(self.weights) != len(self.ingredients):
            raise UserError(f"--weights has {len(self.weights)} values for {len(self.ingredients)} ingredients")
        if any(not math.isfinite(w) or w <= 0 for w in self.weights):
            raise UserError(f"--weights must be positive finite numbers, got {self.weights}")


def _family(name: str, path: Path, kind: str, meta: dict[str, Any]) -> tuple[str, str]:
    """(parent name, parent weights hash) of an ingredient; a base is its own parent, by the name given."""
    from easytune.checkpoints import checkpoint_hash

    if kind == "base":
        return name, checkpoint_hash(path)
    if not meta.get("parent") or not meta.get("parent_hash"):
        raise UserError(f"{path} does not record its parent and the parent's weights hash, so it cannot be "
                        f"shown to share a base with the other ingredients")
    return str(meta["parent"]), str(meta["parent_hash"])


def make_soup(cfg: SoupConfig, text_encoder: Any = None) -> Path:
    from easytune.checkpoints import file_hash, load_checkpoint, resolve, same_dataset, save_checkpoint, write_model_card
    from easytune.config import command_for
    from easytune.generate import load_base
    from easytune.inputs import check_output_path

    cfg.validate()
    out = check_output_path(cfg.out, kind="dir")
    paths = [resolve(name) for name in cfg.ingredients]
    if out.resolve() in {p.resolve() for p in paths}:
        raise UserError(f"--out {out} is one of the ingredients; give a new folder")
    if (out / "config.json").is_file() and load_checkpoint(out).meta.get("method") != "soup":
        raise UserError(f"--out {out} already holds a checkpoint that is not a soup; give a new folder")
    weights = cfg.weights or [1.0] * len(cfg.ingredients)
    total = sum(weights)
    rows, mix, ref = [], None, None
    for name, path, w in zip(cfg.ingredients, paths, weights):
        info = load_checkpoint(path)
        if info.kind not in ("base", "finetune", "lora"):
            raise UserError(f"{path} holds a {info.kind!r} model; a soup mixes base, finetune or lora checkpoints")
        parent, parent_hash = _family(name, path, info.kind, info.meta)
        bundle = load_base(path, "cpu", text_encoder=text_encoder)
        text_encoder = bundle.text_encoder
        sampler = {"steps": bundle.steps, "guidance": bundle.guidance, "eta": bundle.eta}
        state = {k: v.float() for k, v in bundle.denoiser.state_dict().items()}
        if ref is None:
            config = info.config if "model" in info.config else load_checkpoint(parent).config  # lora: its parent's
            ref = {"parent": parent, "parent_hash": parent_hash, "sampler": sampler, "bundle": bundle, "config": config}
            mix = {k: torch.zeros_like(v) for k, v in state.items()}
        elif parent_hash != ref["parent_hash"]:
            raise UserError(f"{name} comes from {parent!r} (weights {parent_hash}) but {cfg.ingredients[0]} from "
                            f"{ref['parent']!r} (weights {ref['parent_hash']}): a soup averages fine-tunes of one base")
        elif not same_dataset(bundle.dataset, ref["bundle"].dataset) or not (
                torch.equal(bundle.mean, ref["bundle"].mean) and torch.equal(bundle.std, ref["bundle"].std)):
            raise UserError(f"{name} was trained on another dataset or normalization than {cfg.ingredients[0]}")
        elif sampler != ref["sampler"]:
            raise UserError(f"{name} samples with {sampler} but {cfg.ingredients[0]} with {ref['sampler']}; "
                            f"promote them with one default sampler first (checkpoints --promote --sampling)")
        if {k: v.shape for k, v in state.items()} != {k: v.shape for k, v in mix.items()}:
            raise UserError(f"{name}'s denoiser does not have the same tensors as {cfg.ingredients[0]}'s")
        for k, v in state.items():
            mix[k] += (w / total) * v
        rows.append({"checkpoint": name, "path": str(path), "kind": info.kind, "weight": w / total,
                     "weights_hash": file_hash(path / "model.safetensors"),
                     "method": info.meta.get("method", info.kind), "steps": info.meta.get("steps")})
    bundle = ref["bundle"]
    tensors = {f"denoiser.{k}": v for k, v in mix.items()} | {"mean": bundle.mean.cpu(), "std": bundle.std.cpu()}
    config = {"model": ref["config"]["model"], "diffusion": ref["config"]["diffusion"],
              "sampling": ref["sampler"], "soup": asdict(cfg)}
    command = command_for("python -m easytune finetune soup", cfg)
    meta = {"parent": ref["parent"], "parent_hash": ref["parent_hash"], "method": "soup",
            "ingredients": rows, "command": command}
    save_checkpoint(out, tensors, kind="finetune", config=config, dataset=bundle.dataset, meta=meta)
    table = ["| ingredient | kind | method | trajectories | weight | weights hash |", "|---|---|---|---|---|---|"]
    table += [f"| {r['checkpoint']} | {r['kind']} | {r['method']} | {r['steps'] if r['steps'] is not None else ''} "
              f"| {r['weight']:.3f} | {r['weights_hash']} |" for r in rows]
    write_model_card(out, "EasyTune soup: a weighted mean of fine-tunes of one base", {
        "What it is": __doc__.split("\n\n")[1],
        "Ingredients": "\n".join(table),
        "Parent": f"{ref['parent']} (weights {ref['parent_hash']}); default sampler {ref['sampler']}",
        "Command": f"`{command}`",
    })
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from easytune.config import add_config_args

    add_config_args(parser, SoupConfig)


def run(args: argparse.Namespace) -> int:
    from easytune.config import config_from_args

    out = make_soup(config_from_args(SoupConfig, args))
    print(f"soup written to {out}")
    return 0
