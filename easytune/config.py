"""Dataclass configs: defaults that work on a 2-core CPU, overridden by a YAML/JSON file, then by flags.

Every field of a config dataclass becomes a `--field-name` flag whose help is the field's
`metadata["help"]` plus its default. Overrides are type-checked and unknown keys are rejected
(nanoGPT's configurator, without `exec`): integers must fit in 64 bits (a `seed` in [0, 2**32 - 1]),
floats must be finite. `save_config` writes the resolved config as JSON.

    @dataclass
    class TrainConfig:
        lr: float = field(default=1e-4, metadata={"help": "AdamW peak learning rate"})

    add_config_args(parser, TrainConfig)
    cfg = config_from_args(TrainConfig, args)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from pathlib import Path
from typing import Any, TypeVar

from easytune.errors import UserError
from easytune.fileio import write_json
from easytune.inputs import SEED_MAX, read_config_file

T = TypeVar("T")


class ConfigError(UserError):
    """A bad config key or value; the message names the key and what is allowed."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(underlying type, optional?) for `X`, `X | None`, `Optional[X]`."""
    args = typing.get_args(tp)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else rest[0]), True
    return tp, False


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check (and gently convert) one override against the field's annotated type."""
    base, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key {key!r} may not be null")
    origin = typing.get_origin(base)
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return _parse_bool(value)
            except argparse.ArgumentTypeError as e:
                raise ConfigError(f"config key {key!r}: {e}") from None
        raise ConfigError(f"config key {key!r} expects true/false, got {value!r}")
    if base is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"config key {key!r} expects an integer, got {value!r}")
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"config key {key!r} expects an integer, got {value!r}") from None
        low, high = (0, SEED_MAX) if key == "seed" else (-2**63, 2**63 - 1)  # beyond: C overflow
        if not low <= number <= high:
            raise ConfigError(f"config key {key!r} must be an integer in [{low}, {high}], got {value!r}")
        return number
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"config key {key!r} expects a number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"config key {key!r} expects a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"config key {key!r} expects a finite number, got {value!r}")
        return number
    if base is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} expects a string, got {value!r}")
        return value
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(base) or (str,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        items = [_coerce(key, v, item_tp) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        allowed = typing.get_args(base)
        if value not in allowed:
            raise ConfigError(f"config key {key!r} must be one of {list(allowed)}, got {value!r}")
        return value
    return value


def _choices(tp: Any) -> list | None:
    base, _ = _base_type(tp)
    if typing.get_origin(base) is typing.Literal:
        return list(typing.get_args(base))
    return None


def add_config_args(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """Add `--config FILE` and one flag per dataclass field (default None = "not overridden")."""
    hints = _field_types(cls)
    group = parser.add_argument_group(f"{cls.__name__} (override with flags or --config FILE)")
    if not any(a.dest == "config" for a in parser._actions):
        group.add_argument("--config", type=Path, default=None, help="YAML or JSON file of overrides")
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        help_text = f.metadata.get("help", "")
        choices = _choices(hints[f.name])
        suffix = f" (default: {default!r}" + (f"; one of {choices}" if choices else "") + ")"
        # "%(default).0s" prints nothing; it stops ArgumentDefaultsHelpFormatter from appending the
        # flag's own default (None = "not overridden"), since the suffix already gives the real one.
        group.add_argument(_flag(f.name), dest=f"cfg__{f.name}", default=None, metavar=f.name.upper(),
                           help=(help_text + suffix).replace("%", "%%") + "%(default).0s")


def load_overrides(path: str | Path) -> dict[str, Any]:
    """The key: value mapping of a --config file (JSON or YAML), read by the one config-file reader."""
    try:
        return read_config_file(path)
    except ConfigError:
        raise
    except UserError as e:
        raise ConfigError(str(e)) from None


def apply_overrides(cfg: T, overrides: dict[str, Any]) -> T:
    """Return a copy of `cfg` with `overrides` applied; unknown keys and wrong types raise ConfigError."""
    hints = _field_types(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for key, value in overrides.items():
        k = key.replace("-", "_")
        if k not in names:
            raise ConfigError(f"unknown config key {key!r} for {type(cfg).__name__}; known keys: {sorted(names)}")
        changes[k] = _coerce(k, value, hints[k])
    new = dataclasses.replace(cfg, **changes)
    validate = getattr(new, "validate", None)
    if callable(validate):
        validate()
    return new


def config_from_args(cls: type[T], args: argparse.Namespace, base: T | None = None) -> T:
    """Defaults (or `base`), then the --config file, then flags."""
    cfg = base if base is not None else cls()
    if getattr(args, "config", None) is not None:
        cfg = apply_overrides(cfg, load_overrides(args.config))
    flags = {k[len("cfg__"):]: v for k, v in vars(args).items() if k.startswith("cfg__") and v is not None}
    return apply_overrides(cfg, flags)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config saved by `save_config`, type-checked like any override."""
    return apply_overrides(cls(), data)


def command_for(prog: str, cfg: Any) -> str:
    """The command that reproduces `cfg`: `prog` plus a flag for every field that differs from its
    default (so a model card's command is the one that ran, not a hand-written subset)."""
    default = type(cfg)()
    parts = [prog]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.init and value != getattr(default, f.name):
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            parts.append(f"{_flag(f.name)} {text}")
    return " ".join(parts)


def save_config(cfg: Any, path: str | Path) -> None:
    write_json(path, config_to_dict(cfg))
