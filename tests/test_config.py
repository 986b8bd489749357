import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from easytune.config import (ConfigError, add_config_args, apply_overrides, config_from_args,
                             config_from_dict, config_to_dict, save_config)


@dataclass
class Cfg:
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    steps: int = field(default=10, metadata={"help": "optimizer steps"})
    ema: bool = field(default=True, metadata={"help": "keep EMA weights"})
    schedule: Literal["cosine", "linear"] = field(default="cosine", metadata={"help": "noise schedule"})
    name: str | None = field(default=None, metadata={"help": "run name"})
    dims: tuple[int, ...] = field(default=(1, 2), metadata={"help": "widths"})

    def validate(self):
        if self.steps <= 0:
            raise ConfigError(f"steps must be positive, got {self.steps}")


def _parse(argv, tmp_path=None):
    p = argparse.ArgumentParser()
    add_config_args(p, Cfg)
    return p, p.parse_args(argv)


def test_flags_override_and_are_type_checked():
    _, args = _parse(["--lr", "3e-4", "--steps", "7", "--ema", "false", "--dims", "4,8,16"])
    cfg = config_from_args(Cfg, args)
    assert cfg == Cfg(lr=3e-4, steps=7, ema=False, dims=(4, 8, 16))
    _, args = _parse(["--steps", "seven"])
    with pytest.raises(ConfigError, match="'steps' expects an integer"):
        config_from_args(Cfg, args)


def test_bool_strings_are_parsed_not_truthy():
    # MDM's type=bool makes "False" true; ours must not.
    assert apply_overrides(Cfg(), {"ema": "False"}).ema is False
    with pytest.raises(ConfigError):
        apply_overrides(Cfg(), {"ema": "maybe"})


def test_unknown_keys_literals_and_validate_are_rejected():
    with pytest.raises(ConfigError, match="unknown config key 'lrr'"):
        apply_overrides(Cfg(), {"lrr": 1})
    with pytest.raises(ConfigError, match=r"one of \['cosine', 'linear'\]"):
        apply_overrides(Cfg(), {"schedule": "sigmoid"})
    with pytest.raises(ConfigError, match="steps must be positive"):
        apply_overrides(Cfg(), {"steps": 0})


def test_file_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.5\nsteps: 3\n")
    _, args = _parse(["--config", str(f), "--steps", "4"])
    cfg = config_from_args(Cfg, args)
    assert (cfg.lr, cfg.steps) == (0.5, 4)


def test_save_and_reload_round_trip(tmp_path):
    cfg = Cfg(lr=2e-3, name="run", dims=(3,))
    save_config(cfg, tmp_path / "config.json")
    import json
    assert config_from_dict(Cfg, json.loads((tmp_path / "config.json").read_text())) == cfg
    assert config_to_dict(cfg)["dims"] == (3,)


def test_help_shows_defaults():
    p, _ = _parse([])
    text = " ".join(p.format_help().split())
    assert "--lr" in text and "default: 0.0001" in text and "one of ['cosine', 'linear']" in text


def test_command_for_lists_every_changed_field():
    from easytune.config import command_for

    assert command_for("train", Cfg()) == "train"
    assert command_for("train", Cfg(lr=0.5, dims=(4, 8), name="r")) == "train --lr 0.5 --name r --dims 4,8"
    _, args = _parse(["--lr", "0.5", "--name", "r", "--dims", "4,8"])
    assert config_from_args(Cfg, args) == Cfg(lr=0.5, dims=(4, 8), name="r")  # the command round-trips
