"""`python -m easytune <command>`: the one place commands are registered.

A command is a module with two functions:

    def add_arguments(parser: argparse.ArgumentParser) -> None   # flags, with defaults in --help
    def run(args: argparse.Namespace) -> int | None               # 0/None = success

Register it by adding one line to COMMANDS. Modules are imported only when their command runs,
so `--help` stays fast and heavy dependencies (torch, pyrender) load late.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from easytune.errors import UserError
from easytune.inputs import check_seed

# (command words, module, one-line help). Keep sorted by command.
COMMANDS: list[tuple[str, str, str]] = [
    ("body", "easytune.body", "Fit the body to a joints .npy (analytic IK) and time the IK and the mesh."),
    ("checkpoints", "easytune.checkpoints", "List the named checkpoints in the registry."),
    ("data", "easytune.motion.build", "Build a motion dataset from BVH (data build bandai|folder) or print its stats (data stats DIR)."),
    ("evaluate", "easytune.evaluate", "Judge a checkpoint with the evaluator: R-Precision, FID, MM-Dist, Diversity, MultiModality."),
    ("export", "easytune.export", "Export a joint-position motion as BVH, animated GLB, SMPL npz or joints npy."),
    ("finetune", "easytune.finetune.harness", "Reward fine-tuning of a base checkpoint: EasyTune (full weights or LoRA), resumable."),
    ("finetune select", "easytune.finetune.select", "Pick a fine-tune's snapshot on the validation split with the evaluator (never the test split)."),
    ("finetune soup", "easytune.finetune.soup", "Average the weights of fine-tunes of one base (a model soup) into one checkpoint."),
    ("recognize", "easytune.recognize", "Action and side recognition of generated motions, seen vs unseen combos (evaluator)."),
    ("results", "easytune.results", "RESULTS.md: every fine-tuning method under one budget, LR grid and seeds, judged by the evaluator."),
    ("render", "easytune.render_cli", "Render one or two motions as body meshes side by side to MP4 or GIF."),
    ("sample", "easytune.generate", "Generate motions from text prompts with a base checkpoint (npy + MP4 preview)."),
    ("study", "easytune.study.cli", "Blind A/B preference studies: create (generate + render), list, results, export."),
    ("train base", "easytune.train_base", "Train the text-to-motion diffusion denoiser (resumable)."),
    ("train evaluator", "easytune.evaluator", "Train the Guo-style evaluator (never used as a reward)."),
    ("train reward", "easytune.reward", "Train the TMR-style text-motion reward model (InfoNCE)."),
    ("train spl", "easytune.spl", "Refine a reward model with Self-refining Preference Learning."),
]


def _usage() -> str:
    width = max(len(c) for c, _, _ in COMMANDS)
    lines = ["usage: python -m easytune <command> [options]", "", "commands:"]
    lines += [f"  {c.ljust(width)}  {h}" for c, _, h in COMMANDS]
    lines += ["", "Run `python -m easytune <command> --help` for a command's options and defaults."]
    return "\n".join(lines)


def _match(argv: list[str]) -> tuple[tuple[str, str, str] | None, list[str]]:
    """Longest registered command that prefixes argv, and the remaining arguments."""
    best, rest = None, argv
    for entry in COMMANDS:
        words = entry[0].split()
        if argv[: len(words)] == words and (best is None or len(words) > len(best[0].split())):
            best, rest = entry, argv[len(words):]
    return best, rest


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error: `error: <prog>: <problem> (see --help)`, exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in --help, except beside on/off switches: `--no-video ... (default: True)` reads as if
    videos were off by default, when True is the value of the `video` setting the switch turns off."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return action.help or ""
        return super()._get_help_string(action)


# What Ctrl-C leaves behind, per command prefix (the first match wins).
_INTERRUPTED = [
    ("train", "interrupted; the run folder keeps its last saved checkpoint"),
    ("", "interrupted; files already written are complete (each is written atomically), the rest are not written"),
]


def build_parser(entry: tuple[str, str, str]) -> tuple[argparse.ArgumentParser, object]:
    name, module_name, help_text = entry
    module = importlib.import_module(module_name)
    parser = ArgumentParser(
        prog=f"python -m easytune {name}", description=help_text, formatter_class=HelpFormatter)
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    entry, rest = _match(argv)
    if entry is None:
        print(f"error: unknown command {' '.join(argv[:2])!r}; `python -m easytune --help` lists the commands",
              file=sys.stderr)
        return 2
    parser, module = build_parser(entry)
    args = parser.parse_args(rest)
    # under torchrun only rank 0 talks (easytune.distributed)
    quiet = int(os.environ.get("RANK", "0")) > 0
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    try:
        if isinstance(getattr(args, "seed", None), int):  # every command's --seed, checked once
            check_seed(args.seed)
        try:
            code = module.run(args)
        finally:
            from easytune.distributed import shutdown

            shutdown()
    except (UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        note = next(text for prefix, text in _INTERRUPTED if entry[0].startswith(prefix))
        print(note, file=sys.stderr)
        return 130
    return int(code or 0)
