"""A study's results: win/tie/loss per checkpoint and criterion, attention checks, rater agreement,
and exports (a CSV of every vote; human preference pairs for `train spl --human-pairs`).

Only normal pairs count toward results and agreement; attention-check pairs only flag raters.
Two win rates, each with a 95% Wilson score interval:
- win rate = wins / (wins + losses): ties left out, n = wins + losses;
- ties as half = (wins + ties / 2) / (wins + ties + losses): the Wilson formula applied to that
  fraction with n = all votes (an approximation: a half-win is not a Bernoulli outcome).
A rater is flagged when they fail an attention check: on a repeat pair they chose the other motion
than on its original, on text alignment or on realism, once sides are mapped back (a tie on either
vote is not a contradiction); on a mismatch pair they chose the wrong-prompt motion on text
alignment. Every number is given with all raters and without the flagged ones.
Agreement, on normal pairs voted by at least two raters, per criterion, over the categories motion
a / motion b / tie: the fraction of rater pairs (pooled over pairs) that chose the same, and Fleiss'
kappa (with P_i averaged over pairs, which allows a different number of raters per pair).
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from easytune.errors import UserError
from easytune.study import store
from easytune.study.store import CRITERIA, Pair, Vote

Z95 = 1.959963984540054  # two-sided 95% normal quantile
CATEGORIES = ("a", "b", "tie")


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of successes / n (None when n = 0)."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class Tally:
    criterion: str  # 'text' | 'realism'
    checkpoint: str
    wins: int
    ties: int
    losses: int

    @property
    def votes(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def win_rate(self) -> float | None:
        decided = self.wins + self.losses
        return self.wins / decided if decided else None

    @property
    def win_ci(self) -> tuple[float, float] | None:
        return wilson(self.wins, self.wins + self.losses)

    @property
    def half_rate(self) -> float | None:
        return (self.wins + self.ties / 2) / self.votes if self.votes else None

    @property
    def half_ci(self) -> tuple[float, float] | None:
        return wilson(self.wins + self.ties / 2, self.votes)


@dataclass(frozen=True)
class Agreement:
    criterion: str
    pairs: int  # normal pairs with >= 2 raters
    rater_pairs: int  # pairs of raters on the same pair, pooled
    agreement: float | None  # fraction of those rater pairs that chose the same category
    kappa: float | None  # Fleiss' kappa; None when undefined (fewer than 2 ratings or one category only)


@dataclass(frozen=True)
class Summary:
    raters: int
    votes: int  # votes on normal pairs
    tallies: list[Tally]
    agreement: list[Agreement]


@dataclass(frozen=True)
class StudyResults:
    study: str
    checkpoints: tuple[str, str]
    rater_names: dict[str, str]  # rater id -> display name, of every rater who voted
    flagged: dict[str, list[str]]  # rater id -> the attention checks they failed
    all: Summary
    unflagged: Summary


# --- attention checks ------------------------------------------------------------------------------

def flag_raters(pairs: Sequence[Pair], votes: Iterable[Vote]) -> dict[str, list[str]]:
    """rater id -> a sentence per failed attention check (raters who failed none are absent)."""
    by_index = {p.index: p for p in pairs}
    cast = {(v.rater, v.pair): v for v in votes}
    flagged: dict[str, list[str]] = defaultdict(list)
    for (rater, idx), vote in sorted(cast.items()):
        pair = by_index[idx]
        if pair.kind == "repeat" and (rater, pair.original) in cast:
            first = cast[(rater, pair.original)]
            for crit, label in CRITERIA.items():
                if {first.picked(crit), vote.picked(crit)} == {"a", "b"}:
                    flagged[rater].append(f"pair {idx} repeats pair {pair.original} with sides swapped, and the "
                                          f"{label} choice went to the other motion")
        elif pair.kind == "mismatch" and vote.picked("text") == pair.decoy:
            flagged[rater].append(f"pair {idx} shows one motion made for another prompt, and text alignment "
                                  f"chose it")
    return dict(flagged)


# --- tallies and agreement -------------------------------------------------------------------------

def tally(pairs: Sequence[Pair], votes: Iterable[Vote], checkpoints: Sequence[str]) -> list[Tally]:
    """Per criterion, per checkpoint: wins, ties and losses over votes on normal pairs."""
    normal = {p.index: p for p in pairs if p.kind == "normal"}
    counts: Counter = Counter()
    for v in votes:
        if v.pair not in normal:
            continue
        pair = normal[v.pair]
        for crit in CRITERIA:
            picked = v.picked(crit)
            for checkpoint in checkpoints:
                mine = "a" if pair.a["checkpoint"] == checkpoint else "b"
                outcome = "tie" if picked == "tie" else ("win" if picked == mine else "loss")
                counts[(crit, checkpoint, outcome)] += 1
    return [Tally(crit, c, counts[(crit, c, "win")], counts[(crit, c, "tie")], counts[(crit, c, "loss")])
            for crit in CRITERIA for c in checkpoints]


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa of an items x categories count table (rows with fewer than 2 ratings ignored)."""
    rows = [r for r in table if sum(r) >= 2]
    if not rows:
        return None
    p_items = [(sum(c * c for c in r) - sum(r)) / (sum(r) * (sum(r) - 1)) for r in rows]
    total = sum(sum(r) for r in rows)
    p_cats = [sum(r[k] for r in rows) / total for k in range(len(rows[0]))]
    p_bar, p_e = sum(p_items) / len(rows), sum(p * p for p in p_cats)
    return None if p_e >= 1 else (p_bar - p_e) / (1 - p_e)


def agreement(pairs: Sequence[Pair], votes: Iterable[Vote]) -> list[Agreement]:
    """Per criterion: agreement and Fleiss' kappa on normal pairs voted by >= 2 raters."""
    normal = {p.index for p in pairs if p.kind == "normal"}
    votes = [v for v in votes if v.pair in normal]
    out = []
    for crit in CRITERIA:
        per_pair: dict[int, Counter] = defaultdict(Counter)
        for v in votes:
            per_pair[v.pair][v.picked(crit)] += 1
        table = [[c[k] for k in CATEGORIES] for c in per_pair.values() if sum(c.values()) >= 2]
        same = sum(n * (n - 1) // 2 for row in table for n in row)
        rater_pairs = sum(sum(row) * (sum(row) - 1) // 2 for row in table)
        out.append(Agreement(crit, len(table), rater_pairs, same / rater_pairs if rater_pairs else None,
                             fleiss_kappa(table)))
    return out


def summarize(pairs: Sequence[Pair], votes: Sequence[Vote], checkpoints: Sequence[str]) -> Summary:
    normal = {p.index for p in pairs if p.kind == "normal"}
    return Summary(raters=len({v.rater for v in votes}), votes=sum(v.pair in normal for v in votes),
                   tallies=tally(pairs, votes, checkpoints), agreement=agreement(pairs, votes))


def results(db: str | Path, study: str) -> StudyResults:
    """Everything about a study's votes, with all raters and without the flagged ones."""
    info = store.get_study(db, study)
    pairs, cast = store.get_pairs(db, study), store.votes(db, study)
    flagged = flag_raters(pairs, cast)
    names = {r.id: r.name for r in store.list_raters(db) if any(v.rater == r.id for v in cast)}
    kept = [v for v in cast if v.rater not in flagged]
    return StudyResults(study=study, checkpoints=info.config.checkpoints, rater_names=names, flagged=flagged,
                        all=summarize(pairs, cast, info.config.checkpoints),
                        unflagged=summarize(pairs, kept, info.config.checkpoints))


# --- markdown --------------------------------------------------------------------------------------

def _pct(rate: float | None, ci: tuple[float, float] | None) -> str:
    if rate is None or ci is None:
        return "–"
    return f"{100 * rate:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _summary_md(title: str, s: Summary) -> list[str]:
    lines = [f"## {title} ({s.raters} rater{'s' * (s.raters != 1)}, {s.votes} votes on normal pairs)", "",
             "| criterion | checkpoint | wins | ties | losses | win rate (95% CI) | ties as half (95% CI) |",
             "|---|---|---:|---:|---:|---|---|"]
    lines += [f"| {CRITERIA[t.criterion]} | {t.checkpoint} | {t.wins} | {t.ties} | {t.losses} | "
              f"{_pct(t.win_rate, t.win_ci)} | {_pct(t.half_rate, t.half_ci)} |" for t in s.tallies]
    lines += ["", "| criterion | pairs with >= 2 raters | rater pairs | agreement | Fleiss' kappa |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {CRITERIA[a.criterion]} | {a.pairs} | {a.rater_pairs} | {_num(a.agreement, '.3f')} | "
              f"{_num(a.kappa, '.3f')} |" for a in s.agreement]
    return lines + [""]


def format_markdown(res: StudyResults) -> str:
    first, second = res.checkpoints
    lines = [f"# Study `{res.study}`: {first} vs {second}", "",
             "Win rate = wins / (wins + losses), ties left out; ties as half = (wins + ties / 2) / votes. "
             "Brackets: 95% Wilson score intervals. Attention-check pairs are not counted.", ""]
    lines += _summary_md("All raters", res.all)
    lines += _summary_md("Without flagged raters", res.unflagged)
    lines += [f"## Flagged raters ({len(res.flagged)})", ""]
    if not res.flagged:
        lines.append("None: every rater passed every attention check they answered.")
    for rater, reasons in sorted(res.flagged.items()):
        lines.append(f"- `{rater}` ({res.rater_names.get(rater, '?')}): " + "; ".join(reasons))
    return "\n".join(lines) + "\n"


# --- exports ---------------------------------------------------------------------------------------

CSV_COLUMNS = ("vote_id", "study", "pair", "kind", "prompt", "seed", "rater", "rater_name", "flagged",
               "left_checkpoint", "right_checkpoint", "left_prompt", "right_prompt", "text_choice", "text_winner",
               "realism_choice", "realism_winner", "comment", "time")


def _winner(pair: Pair, picked: str) -> str:
    """The checkpoint name of the chosen motion, 'tie', or 'decoy' (a mismatch pair's wrong motion)."""
    if picked == "tie":
        return "tie"
    return "decoy" if picked == pair.decoy else pair.recipe(picked)["checkpoint"]


def export_csv(db: str | Path, study: str, path: str | Path) -> int:
    """One row per vote (CSV_COLUMNS), sides mapped to checkpoint names; written atomically.
    Returns the number of rows."""
    from easytune.fileio import write_text

    pairs = {p.index: p for p in store.get_pairs(db, study)}
    cast = store.votes(db, study)
    flagged = flag_raters(list(pairs.values()), cast)
    names = {r.id: r.name for r in store.list_raters(db)}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for v in cast:
        p = pairs[v.pair]
        left, right = p.recipe(v.shown_left), p.recipe(v.shown_right)
        writer.writerow([v.id, study, p.index, p.kind, p.prompt, p.seed, v.rater, names.get(v.rater, ""),
                         "yes" if v.rater in flagged else "no", left["checkpoint"], right["checkpoint"],
                         left["prompt"], right["prompt"], v.text, _winner(p, v.picked("text")), v.realism,
                         _winner(p, v.picked("realism")), v.comment, v.time])
    write_text(path, buf.getvalue())
    return len(cast)


def export_pairs(db: str | Path, study: str, path: str | Path, include_flagged: bool = False, *,
                 features: bool = False) -> int:
    """Text-alignment votes on normal pairs as easytune.spl HumanPairs (criterion "text_match";
    "a"/"b" are the pair's motions, ties kept as "tie"), written with spl.write_pairs. Each motion
    is a `regenerate` recipe (spl.REGENERATE_KEYS), to be materialized with
    easytune.study.prepare.regenerator(); `features=True` inlines the prepared motions' normalized
    features instead, which `python -m easytune train spl --human-pairs` reads with no generator.
    Flagged raters' votes are left out unless include_flagged. Returns the number of pairs."""
    from easytune import spl
    from easytune.study.prepare import load_motion

    info = store.get_study(db, study)
    pairs = {p.index: p for p in store.get_pairs(db, study)}
    cast = store.votes(db, study)
    flagged = flag_raters(list(pairs.values()), cast)

    def ref(recipe: dict) -> spl.MotionRef:
        if features:
            return spl.MotionRef(features=load_motion(info.media, recipe)[0])
        return spl.MotionRef(regenerate={k: recipe[k] for k in spl.REGENERATE_KEYS})

    out = []
    for v in cast:
        p = pairs[v.pair]
        if p.kind != "normal" or (v.rater in flagged and not include_flagged):
            continue
        out.append(spl.HumanPair(prompt=p.prompt, a=ref(p.a), b=ref(p.b), preferred=v.picked("text"),
                                 criterion="text_match",
                                 extra={"study": study, "pair": p.index, "rater": v.rater, "vote": v.id,
                                        "time": v.time}))
    if not out:
        which = "" if include_flagged or not flagged else " from raters who passed the attention checks"
        raise UserError(f"study {study!r} has no text-alignment votes on normal pairs{which} to export yet")
    spl.write_pairs(path, out)
    return len(out)
