"""Studies, pairs, raters and votes in one SQLite file (stdlib sqlite3).

Every function takes the database path and opens its own connection, used only in the calling
thread and closed before returning: Gradio runs callbacks in worker threads, and a sqlite3
connection must not cross threads. WAL lets raters vote while results are read; synchronous=FULL
makes a vote durable once `record_vote` returns (it survives kill -9 and power loss); foreign keys
keep votes pointing at real pairs and raters.

Pairs hold two motions, "a" (from the study's first checkpoint) and "b" (from its second), each as
its generation recipe (checkpoint, checkpoint_hash, prompt, seed, seconds, steps, guidance, motion
file). `left` records which of them the video shows on the left; a vote stores the rater's choice
as "left" / "right" / "tie" together with what was shown on each side, so it reads the same forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from easytune.errors import UserError
from easytune.study.config import StudyConfig, canonical_json, config_from_json, config_hash

SCHEMA_VERSION = 1
CHOICES = ("left", "right", "tie")
CRITERIA = {"text": "text alignment", "realism": "realism"}  # vote field -> what the rater is asked
KINDS = ("normal", "repeat", "mismatch")
MAX_COMMENT = 500
MAX_RATER_NAME = 40
_CODE_CHARS = "abcdefghjkmnpqrstuvwxyz23456789"  # rater codes: no 0/o, 1/l/i to misread

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS studies (
    name        TEXT PRIMARY KEY,
    config      TEXT NOT NULL,               -- canonical JSON of the StudyConfig
    config_hash TEXT NOT NULL,               -- sha256 of it: the study's identity
    media       TEXT NOT NULL,               -- media root, videos are in media/<name>/
    created     TEXT NOT NULL
)""",
    """
CREATE TABLE IF NOT EXISTS pairs (
    study     TEXT NOT NULL REFERENCES studies(name),
    idx       INTEGER NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('normal', 'repeat', 'mismatch')),
    prompt    TEXT NOT NULL,                 -- what the rater reads
    seed      INTEGER NOT NULL,
    motion_a  TEXT NOT NULL,                 -- JSON recipe of motion a (first checkpoint)
    motion_b  TEXT NOT NULL,                 -- JSON recipe of motion b
    left_side TEXT NOT NULL CHECK (left_side IN ('a', 'b')),
    original  INTEGER,                       -- repeat: the pair it repeats with sides swapped
    video     TEXT,                          -- file name inside media/<study>/, NULL = motions only
    PRIMARY KEY (study, idx)
)""",
    """
CREATE TABLE IF NOT EXISTS raters (
    id      TEXT PRIMARY KEY,                -- the code a rater uses to continue later
    name    TEXT NOT NULL,
    created TEXT NOT NULL
)""",
    """
CREATE TABLE IF NOT EXISTS votes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    study          TEXT NOT NULL,
    pair           INTEGER NOT NULL,
    rater          TEXT NOT NULL REFERENCES raters(id),
    shown_left     TEXT NOT NULL CHECK (shown_left IN ('a', 'b')),
    shown_right    TEXT NOT NULL CHECK (shown_right IN ('a', 'b')),
    text_choice    TEXT NOT NULL CHECK (text_choice IN ('left', 'right', 'tie')),
    realism_choice TEXT NOT NULL CHECK (realism_choice IN ('left', 'right', 'tie')),
    comment        TEXT NOT NULL DEFAULT '' CHECK (length(comment) <= 500),
    time           TEXT NOT NULL,
    UNIQUE (study, pair, rater),
    FOREIGN KEY (study, pair) REFERENCES pairs(study, idx)
)""",
)


# --- records -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Study:
    name: str
    config: StudyConfig
    config_hash: str
    media: Path  # media root; this study's videos are in media / name
    created: str

    @property
    def folder(self) -> Path:
        return self.media / self.name


@dataclass(frozen=True, eq=True)
class Pair:
    index: int
    kind: Literal["normal", "repeat", "mismatch"]
    prompt: str
    seed: int
    a: dict[str, Any]  # recipe of motion a (the study's first checkpoint; for a mismatch, the true one)
    b: dict[str, Any]  # recipe of motion b
    left: Literal["a", "b"]  # which motion the video shows on the left
    original: int | None = None  # repeat: the pair it repeats
    video: str | None = None  # file name in the study's folder, None when prepared without video

    @property
    def right(self) -> str:
        return "b" if self.left == "a" else "a"

    def recipe(self, motion: str) -> dict[str, Any]:
        return self.a if motion == "a" else self.b

    @property
    def decoy(self) -> str | None:
        """Mismatch pairs: the motion made for another prompt (the wrong answer on text alignment)."""
        if self.kind != "mismatch":
            return None
        return "a" if self.a["prompt"] != self.prompt else "b"


@dataclass(frozen=True)
class Rater:
    id: str
    name: str
    created: str


@dataclass(frozen=True)
class Vote:
    id: int
    study: str
    pair: int
    rater: str
    shown_left: str  # motion ('a'/'b') that was on the left
    shown_right: str
    text: str  # 'left' | 'right' | 'tie'
    realism: str
    comment: str
    time: str

    def picked(self, criterion: str) -> str:
        """The motion chosen on a criterion ('text' or 'realism'): 'a', 'b' or 'tie'."""
        choice = getattr(self, criterion)
        return {"left": self.shown_left, "right": self.shown_right}.get(choice, "tie")


@dataclass(frozen=True)
class NextPair:
    """What a rater sees next: `pair` (None when every pair is voted) and the progress done/total."""

    pair: Pair | None
    done: int
    total: int


# --- connections -------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextlib.contextmanager
def connect(db: str | Path, *, create: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection for this call only, closed on exit. `create` makes the file (and its folder) if
    missing; otherwise a missing database is a UserError. Autocommit mode: writes use `_write`."""
    path = Path(db)
    if path.exists() and not path.is_file():
        raise UserError(f"study database {path} is not a file")
    if not path.exists():
        if not create:
            raise UserError(f"no study database at {path}; create a study first (python -m easytune study create)")
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise UserError(f"study database {path} has schema version {version}; this code reads "
                                f"version {SCHEMA_VERSION}")
            if version == 0:
                with _write(conn):
                    for statement in SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            raise UserError(f"{path} is not a readable study database ({e})") from None
        if str(mode).lower() != "wal":
            raise UserError(f"study database {path} cannot use write-ahead logging (journal mode {mode}); "
                            f"put it on a local disk")
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction, taking the write lock up front so checks and inserts see the same state."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# --- studies and pairs -------------------------------------------------------------------------

def _study(row: sqlite3.Row) -> Study:
    return Study(name=row["name"], config=config_from_json(row["config"]), config_hash=row["config_hash"],
                 media=Path(row["media"]), created=row["created"])


def _pair(row: sqlite3.Row) -> Pair:
    return Pair(index=row["idx"], kind=row["kind"], prompt=row["prompt"], seed=row["seed"],
                a=json.loads(row["motion_a"]), b=json.loads(row["motion_b"]), left=row["left_side"],
                original=row["original"], video=row["video"])


def _check_pairs(cfg: StudyConfig, pairs: Sequence[Pair]) -> None:
    if [p.index for p in pairs] != list(range(len(pairs))):
        raise ValueError("pairs must be numbered 0, 1, 2, ... in order")
    for p in pairs:
        if p.kind not in KINDS or p.left not in ("a", "b"):
            raise ValueError(f"pair {p.index}: bad kind {p.kind!r} or left side {p.left!r}")
        if p.kind == "repeat" and (p.original is None or not 0 <= p.original < len(pairs)
                                   or pairs[p.original].kind != "normal"):
            raise ValueError(f"pair {p.index}: a repeat must name the normal pair it repeats")
        if p.video is not None and Path(p.video).name != p.video:
            raise ValueError(f"pair {p.index}: video must be a plain file name, got {p.video!r}")


def config_changed(name: str) -> UserError:
    return UserError(f"study {name!r} already exists with another configuration; a study's configuration "
                     f"cannot change under its votes, so give the changed study another name")


def create_study(db: str | Path, cfg: StudyConfig, pairs: Sequence[Pair], media: str | Path) -> Study:
    """Store a study and its pairs in one transaction. Creating it again with the same config is a
    no-op that returns the stored study; a different config under the same name is refused."""
    _check_pairs(cfg, pairs)
    digest = config_hash(cfg)
    with connect(db, create=True) as conn, _write(conn):
        row = conn.execute("SELECT * FROM studies WHERE name = ?", (cfg.name,)).fetchone()
        if row is not None:
            if row["config_hash"] != digest:
                raise config_changed(cfg.name)
            return _study(row)
        conn.execute("INSERT INTO studies (name, config, config_hash, media, created) VALUES (?, ?, ?, ?, ?)",
                     (cfg.name, canonical_json(cfg), digest, str(Path(media).resolve()), _now()))
        conn.executemany(
            "INSERT INTO pairs (study, idx, kind, prompt, seed, motion_a, motion_b, left_side, original, video) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(cfg.name, p.index, p.kind, p.prompt, p.seed, json.dumps(p.a, sort_keys=True),
              json.dumps(p.b, sort_keys=True), p.left, p.original, p.video) for p in pairs])
        return _study(conn.execute("SELECT * FROM studies WHERE name = ?", (cfg.name,)).fetchone())


def find_study(db: str | Path, name: str) -> Study | None:
    """The stored study, or None if there is none by that name (or no database yet)."""
    if not Path(db).is_file():
        return None
    with connect(db) as conn:
        row = conn.execute("SELECT * FROM studies WHERE name = ?", (name,)).fetchone()
    return None if row is None else _study(row)


def get_study(db: str | Path, name: str) -> Study:
    """The stored study; UserError listing the known names if there is none by that name."""
    with connect(db) as conn:
        row = conn.execute("SELECT * FROM studies WHERE name = ?", (name,)).fetchone()
        known = [r[0] for r in conn.execute("SELECT name FROM studies ORDER BY name")]
    if row is None:
        raise UserError(f"no study named {name!r} in {db} (studies: {', '.join(known) or 'none'})")
    return _study(row)


def list_studies(db: str | Path) -> list[Study]:
    """Every study, oldest first; [] when the database does not exist yet."""
    if not Path(db).is_file():
        return []
    with connect(db) as conn:
        return [_study(r) for r in conn.execute("SELECT * FROM studies ORDER BY created, name")]


def get_pairs(db: str | Path, study: str) -> list[Pair]:
    get_study(db, study)
    with connect(db) as conn:
        return [_pair(r) for r in conn.execute("SELECT * FROM pairs WHERE study = ? ORDER BY idx", (study,))]


def get_pair(db: str | Path, study: str, index: int) -> Pair:
    with connect(db) as conn:
        row = conn.execute("SELECT * FROM pairs WHERE study = ? AND idx = ?", (study, index)).fetchone()
    if row is None:
        raise UserError(f"study {study!r} has no pair {index!r}")
    return _pair(row)


def set_videos(db: str | Path, study: str, videos: dict[int, str]) -> None:
    """Record rendered videos (pair index -> file name) for a study made without them; media only,
    the pairs' motions and sides do not change."""
    with connect(db) as conn, _write(conn):
        conn.executemany("UPDATE pairs SET video = ? WHERE study = ? AND idx = ?",
                         [(name, study, idx) for idx, name in videos.items()])


def video_path(study: Study, pair: Pair) -> Path | None:
    """Where a pair's video is on disk (None when the study was prepared without videos)."""
    return None if pair.video is None else study.folder / pair.video


# --- raters ------------------------------------------------------------------------------------

def register_rater(db: str | Path, name: str) -> Rater:
    """A new rater with a random 8-character code: the id votes are stored under, which the rater
    keeps to continue later (`get_rater`). Two people may share a display name, never a code."""
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= MAX_RATER_NAME:
        raise UserError(f"rater name must be 1 to {MAX_RATER_NAME} characters, got "
                        f"{len(name.strip()) if isinstance(name, str) else type(name).__name__}")
    name = " ".join(name.split())
    with connect(db) as conn, _write(conn):
        while True:
            code = "".join(secrets.choice(_CODE_CHARS) for _ in range(8))
            if conn.execute("SELECT 1 FROM raters WHERE id = ?", (code,)).fetchone() is None:
                break
        created = _now()
        conn.execute("INSERT INTO raters (id, name, created) VALUES (?, ?, ?)", (code, name, created))
    return Rater(code, name, created)


def get_rater(db: str | Path, rater: str) -> Rater:
    with connect(db) as conn:
        row = conn.execute("SELECT * FROM raters WHERE id = ?", (str(rater).strip().lower(),)).fetchone()
    if row is None:
        raise UserError(f"no rater with code {rater!r}; register first to get a code")
    return Rater(row["id"], row["name"], row["created"])


def list_raters(db: str | Path) -> list[Rater]:
    with connect(db) as conn:
        return [Rater(r["id"], r["name"], r["created"]) for r in conn.execute("SELECT * FROM raters ORDER BY created")]


# --- the order a rater sees, and votes ---------------------------------------------------------

def rater_order(pairs: Sequence[Pair], study: str, rater: str) -> list[int]:
    """Pair indices in this rater's order: a shuffle seeded by (study, rater), so it is the same
    every session, different between raters; a repeat check always comes after its original."""
    seed = int(hashlib.sha256(f"{study}\0{rater}".encode()).hexdigest()[:16], 16)
    order = [p.index for p in pairs]
    random.Random(seed).shuffle(order)
    pos = {idx: k for k, idx in enumerate(order)}
    for p in pairs:
        if p.kind == "repeat" and pos[p.index] < pos[p.original]:
            i, j = pos[p.index], pos[p.original]  # swap them: originals are distinct, so no fix undoes another
            order[i], order[j] = order[j], order[i]
            pos[p.index], pos[p.original] = j, i
    return order


def next_pair(db: str | Path, study: str, rater: str) -> NextPair:
    """The first pair in the rater's order they have not voted on, and how many they have done."""
    pairs = get_pairs(db, study)
    rater = get_rater(db, rater).id
    with connect(db) as conn:
        voted = {r[0] for r in conn.execute("SELECT pair FROM votes WHERE study = ? AND rater = ?", (study, rater))}
    by_index = {p.index: p for p in pairs}
    todo = [i for i in rater_order(pairs, study, rater) if i not in voted]
    return NextPair(by_index[todo[0]] if todo else None, len(voted), len(pairs))


def _choice(value: Any, what: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in CHOICES:
        raise UserError(f"the {what} choice must be 'left', 'right' or 'tie', got {value!r}")
    return value.strip().lower()


def record_vote(db: str | Path, study: str, pair: int, rater: str, text: str, realism: str,
                comment: str = "") -> Vote:
    """Store one vote in one transaction; once it returns, the vote is on disk. A second vote by the
    same rater on the same pair is refused ("you already voted on this pair")."""
    text, realism = _choice(text, "text alignment"), _choice(realism, "realism")
    if not isinstance(comment, str):
        raise UserError(f"the comment must be text, got {type(comment).__name__}")
    comment = comment.strip()
    if len(comment) > MAX_COMMENT:
        raise UserError(f"the comment has {len(comment)} characters; the limit is {MAX_COMMENT}")
    if isinstance(pair, bool) or not isinstance(pair, int):
        raise UserError(f"pair must be a pair number, got {pair!r}")
    rater = str(rater).strip().lower()
    with connect(db) as conn, _write(conn):
        row = conn.execute("SELECT left_side FROM pairs WHERE study = ? AND idx = ?", (study, pair)).fetchone()
        if row is None:
            raise UserError(f"study {study!r} has no pair {pair}")
        if conn.execute("SELECT 1 FROM raters WHERE id = ?", (rater,)).fetchone() is None:
            raise UserError(f"no rater with code {rater!r}; register first to get a code")
        left = row["left_side"]
        right = "b" if left == "a" else "a"
        try:
            cur = conn.execute(
                "INSERT INTO votes (study, pair, rater, shown_left, shown_right, text_choice, realism_choice, "
                "comment, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (study, pair, rater, left, right, text, realism, comment, _now()))
        except sqlite3.IntegrityError as e:
            if "UNIQUE" in str(e):
                raise UserError("you already voted on this pair") from None
            raise
        vote_id = cur.lastrowid
        got = conn.execute("SELECT * FROM votes WHERE id = ?", (vote_id,)).fetchone()
    return _vote(got)


def _vote(r: sqlite3.Row) -> Vote:
    return Vote(id=r["id"], study=r["study"], pair=r["pair"], rater=r["rater"], shown_left=r["shown_left"],
                shown_right=r["shown_right"], text=r["text_choice"], realism=r["realism_choice"],
                comment=r["comment"], time=r["time"])


def votes(db: str | Path, study: str) -> list[Vote]:
    """Every vote of a study, in the order they were cast."""
    get_study(db, study)
    with connect(db) as conn:
        return [_vote(r) for r in conn.execute("SELECT * FROM votes WHERE study = ? ORDER BY id", (study,))]
