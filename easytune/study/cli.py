"""`python -m easytune study ...`: create a blind A/B study, print its results, export its votes.

    python -m easytune study create study.yaml [--db runs/studies/studies.sqlite] [--media runs/studies/media]
    python -m easytune study list
    python -m easytune study results NAME
    python -m easytune study export NAME --csv votes.csv --pairs human_pairs.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

from easytune.errors import UserError

DATA_DIR = Path("runs/studies")
DEFAULT_DB = DATA_DIR / "studies.sqlite"
DEFAULT_MEDIA = DATA_DIR / "media"


def _db_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help="the studies database (SQLite)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{create,list,results,export}")
    fmt = parser.formatter_class

    create = sub.add_parser("create", formatter_class=fmt, help="generate and render a study from a YAML file",
                            description="Generate every pair's motions and videos, then store the study. "
                                        "Running it again with the same file only fills in what is missing.")
    create.add_argument("file", type=Path, help="study YAML: name, prompts, checkpoints, seeds, seconds, ...")
    _db_flag(create)
    create.add_argument("--media", type=Path, default=DEFAULT_MEDIA,
                        help="media root: motion cache (motions/) and each study's videos (<name>/)")
    create.add_argument("--no-video", dest="video", action="store_false",
                        help="store the motions only (no EGL needed); run again without it to render")
    create.add_argument("--render-size", type=int, default=320, help="video height in pixels (even, 64 to 2048)")
    create.add_argument("--device", default="auto", help="auto, cpu or cuda")

    lst = sub.add_parser("list", formatter_class=fmt, help="list the studies in a database")
    _db_flag(lst)

    res = sub.add_parser("results", formatter_class=fmt, help="print win rates, checks and agreement (markdown)")
    res.add_argument("name", help="study name")
    _db_flag(res)

    exp = sub.add_parser("export", formatter_class=fmt, help="write the votes as CSV and/or SPL human pairs")
    exp.add_argument("name", help="study name")
    _db_flag(exp)
    exp.add_argument("--csv", type=Path, default=None, help="CSV file: one row per vote")
    exp.add_argument("--pairs", type=Path, default=None,
                     help="JSON-lines human pairs for `python -m easytune train spl --human-pairs`")
    exp.add_argument("--include-flagged", action="store_true", help="also export raters who failed a check")
    exp.add_argument("--features", action="store_true",
                     help="inline the motions' features instead of regeneration recipes")


def run(args: argparse.Namespace) -> int:
    from easytune.inputs import check_output_path
    from easytune.study import results, store

    if args.action == "create":
        return _create(args)
    if args.action == "list":
        studies = store.list_studies(args.db)
        if not studies:
            print(f"no studies in {args.db}")
        for s in studies:
            print(f"{s.name}  {' vs '.join(s.config.checkpoints)}  {len(s.config.prompts)} prompts x "
                  f"{len(s.config.seeds)} seeds + {s.config.attention_checks} checks  created {s.created}")
        return 0
    if args.action == "results":
        print(results.format_markdown(results.results(args.db, args.name)), end="")
        return 0
    if args.csv is None and args.pairs is None:
        raise UserError("study export needs --csv FILE, --pairs FILE or both")
    csv_path = check_output_path(args.csv, flag="--csv", suffixes=(".csv",)) if args.csv else None
    pairs_path = check_output_path(args.pairs, flag="--pairs", suffixes=(".jsonl", ".json")) if args.pairs else None
    store.get_study(args.db, args.name)
    if csv_path:
        n = results.export_csv(args.db, args.name, csv_path)
        print(f"wrote {csv_path} ({n} votes)")
    if pairs_path:
        n = results.export_pairs(args.db, args.name, pairs_path, args.include_flagged, features=args.features)
        print(f"wrote {pairs_path} ({n} human pairs)")
    return 0


def _create(args: argparse.Namespace) -> int:
    from easytune.device import pick_device
    from easytune.inputs import check_output_path
    from easytune.study import store
    from easytune.study.config import load_config
    from easytune.study.prepare import prepare_study

    cfg = load_config(args.file)
    check_output_path(args.db, flag="--db")
    check_output_path(args.media, kind="dir", flag="--media")
    if args.video:
        from easytune.render import RenderConfig

        RenderConfig(size=args.render_size).validate()
    bar = None

    def progress(done: int, total: int, what: str) -> None:
        nonlocal bar
        from tqdm import tqdm

        if total == 0:
            return  # nothing to make: the study is complete
        if bar is None:
            bar = tqdm(total=total, desc=f"study {cfg.name}", unit="item")
        bar.set_postfix_str(what[:60])
        bar.n = done
        bar.refresh()

    try:
        study = prepare_study(cfg, args.db, args.media, render=args.video, device=str(pick_device(args.device)),
                              render_size=args.render_size, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    pairs = store.get_pairs(args.db, study.name)
    kinds = ", ".join(f"{sum(p.kind == k for p in pairs)} {k}" for k in store.KINDS)
    print(f"study {study.name}: {len(pairs)} pairs ({kinds}) in {args.db}; media in {study.folder}")
    return 0
