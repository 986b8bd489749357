"""Blind A/B preference studies: two checkpoints, the same prompts and noise, raters pick a side.

Modules (each importable on its own; only `prepare` and the exports load torch):
    config   StudyConfig, load_config(path), parse_config(dict), canonical_json(cfg), config_hash(cfg)
    store    the SQLite database: studies, pairs, raters, votes
    prepare  plan pairs, generate motions (cached), render one side-by-side MP4 per pair
    results  win/tie/loss with Wilson intervals, attention checks, agreement, CSV and SPL exports
    cli      `python -m easytune study create|list|results|export`

The API a UI calls (every `db` is a path; each call opens and closes its own connection, so any
thread may call any function; every user mistake raises UserError with one sentence):

    from easytune.study import config, prepare, results, store

    cfg = config.load_config("study.yaml")                     # or config.parse_config(dict)
    study = prepare.prepare_study(cfg, db, media, render=True,  # idempotent; refuses a changed config
                                  bundles=res.bundle,           # name -> loaded BaseBundle (optional)
                                  progress=lambda done, total, what: ...,
                                  in_render_thread=lambda fn, *a: res.render_pool.submit(fn, *a).result())
    store.list_studies(db) -> list[Study];  store.get_study(db, name) -> Study
    rater = store.register_rater(db, "Ada")                    # Rater(id=8-char code, name, created)
    store.get_rater(db, code) -> Rater                         # a returning rater, by code
    nxt = store.next_pair(db, study.name, rater.id)            # NextPair(pair | None, done, total)
    store.video_path(study, nxt.pair) -> Path | None           # the side-by-side MP4 (left lane = "Left")
    prepare.pair_motions(study, nxt.pair) -> {"left": joints, "right": joints}
    store.record_vote(db, study.name, nxt.pair.index, rater.id,
                      text="left" | "right" | "tie", realism="left" | "right" | "tie", comment="") -> Vote
    res = results.results(db, study.name) -> StudyResults      # .all / .unflagged Summary, .flagged
    results.format_markdown(res) -> str
    results.export_csv(db, study.name, path) -> int
    results.export_pairs(db, study.name, path, include_flagged=False, features=False) -> int

A rater never learns which checkpoint is on which side: the video's lanes are labelled Left and
Right, and the pair records which motion is where. Raters' choices are stored as left/right/tie
with what was shown on each side, and mapped to checkpoints only in results and exports.
"""
