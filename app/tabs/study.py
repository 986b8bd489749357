"""Study tab: blind A/B preference studies (easytune.study) for raters, and their administration.

Raters pick a study, give a name once (their code is kept in the browser's storage, so a reload or a
later visit continues where they stopped) and vote on pre-rendered side-by-side videos: which motion
matches the prompt better, which looks more natural (left, right or tie), with an optional comment.
They never learn which checkpoint is on which side. Admins (not in public mode; the admin token when
EASYTUNE_ADMIN_TOKEN is set) create a study from its YAML configuration (motions generated and
rendered ahead of time), read its results and export CSV and SPL preference pairs."""

from __future__ import annotations

from pathlib import Path

from easytune.errors import UserError

CHOICES = {"Left": "left", "Right": "right", "Tie": "tie"}
EXAMPLE_YAML = """name: demo-study
prompts:
  - a person waves the right hand
  - a person walks forward happily
checkpoints: [base, easytune]
seeds: [0]
seconds: 4
attention_checks: 2
"""


def paths(res) -> tuple[Path, Path]:
    folder = res.data_dir / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "studies.sqlite", folder / "media"


def study_names(res) -> list[str]:
    from easytune.study import store

    db, _ = paths(res)
    return [s.name for s in store.list_studies(db)] if db.is_file() else []


def _study(res, name):
    from easytune.study import store

    if not name:
        raise UserError("choose a study")
    db, _ = paths(res)
    if not db.is_file():
        raise UserError("there is no study on this server yet")
    found = store.find_study(db, str(name))
    if found is None:  # the library's message names the database path; the page need not
        raise UserError(f"there is no study named {str(name)[:60]!r}; studies: {', '.join(study_names(res)) or 'none'}")
    return found


def join(res, study_name, rater_name, code) -> tuple[str, str]:
    """(rater code, greeting): a returning rater by code, else a new one by name."""
    from easytune.study import store

    _study(res, study_name)
    db, _ = paths(res)
    code = str(code or "").strip()
    rater = store.get_rater(db, code) if code else store.register_rater(db, str(rater_name or ""))
    return rater.id, f"Rating as **{rater.name}** (your code: `{rater.id}`; keep it to continue from another browser)."


def current(res, study_name, code) -> tuple[str | None, str, int]:
    """(video path, prompt and progress markdown, pair index or -1 when done) for this rater."""
    from easytune.study import store

    if not code:
        raise UserError("enter your name and press Start first")
    study = _study(res, study_name)
    db, _ = paths(res)
    nxt = store.next_pair(db, study.name, str(code))
    if nxt.pair is None:
        return None, f"**Done: you rated all {nxt.total} pairs of this study.** Thank you.", -1
    video = store.video_path(study, nxt.pair)
    if video is None or not video.is_file():
        raise UserError("this study's videos are missing on the server; ask its admin to prepare it again")
    text = (f"Pair {nxt.done + 1} of {nxt.total}. Prompt: **{nxt.pair.prompt}**\n\n"
            f"Which motion matches the prompt better, and which looks more natural?")
    return str(video), text, nxt.pair.index


def vote(res, study_name, code, pair_index, text_choice, realism_choice, comment):
    from easytune.study import store

    if pair_index is None or int(pair_index) < 0:
        raise UserError("there is no pair to vote on; press Start")
    for label, value in (("text alignment", text_choice), ("realism", realism_choice)):
        if value not in CHOICES:
            raise UserError(f"choose Left, Right or Tie for {label}")
    study = _study(res, study_name)
    db, _ = paths(res)
    store.record_vote(db, study.name, int(pair_index), str(code or ""), CHOICES[text_choice], CHOICES[realism_choice],
                      str(comment or ""))
    return current(res, study_name, code)


def create(res, token, yaml_text, progress=None) -> str:
    import yaml

    from app.access import check_admin
    from easytune.study import config, prepare

    check_admin(res, token, "creating a study")
    try:
        raw = yaml.safe_load(str(yaml_text or ""))
    except yaml.YAMLError as e:
        raise UserError(f"the study configuration is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError("the study configuration must be a YAML mapping (name, prompts, checkpoints, ...)")
    cfg = config.parse_config(raw)
    for name in cfg.checkpoints:
        res.bundle(name)  # only checkpoints this server has loaded
    db, media = paths(res)

    def report(done, total, what):
        if progress is not None:
            progress(done / max(1, total), desc=what)

    study = prepare.prepare_study(cfg, db, media, render=True, bundles=res.bundle, render_size=res.limits.render_size,
                                  progress=report,
                                  in_render_thread=lambda fn, *a: res.render_pool.submit(fn, *a).result())
    from easytune.study import store

    n = len(store.get_pairs(db, study.name))
    return f"Study **{study.name}** is ready: {n} pairs (attention checks included), videos rendered."


def results_view(res, token, study_name) -> tuple[str, list[str]]:
    from app.access import check_admin
    from easytune.study import results

    check_admin(res, token, "reading study results")
    study = _study(res, study_name)
    db, _ = paths(res)
    out = res.data_dir / "studies" / "exports"
    out.mkdir(parents=True, exist_ok=True)
    csv_path, pairs_path = out / f"{study.name}_votes.csv", out / f"{study.name}_spl_pairs.jsonl"
    rows = results.export_csv(db, study.name, csv_path)
    files = [str(csv_path)]
    try:
        results.export_pairs(db, study.name, pairs_path)
        files.append(str(pairs_path))
    except UserError:
        pass  # no text-alignment vote yet from an unflagged rater: nothing to export as pairs
    text = results.format_markdown(results.results(db, study.name))
    return f"{text}\n\n{rows} votes exported.", files


def build(res) -> None:
    import gradio as gr

    from app.access import token_required
    from app.ui import guarded

    gr.Markdown("Blind A/B preference study: two motions for one prompt, sides shuffled per pair. Your votes are "
                "saved as you go; they can also train the reward model (SPL).")
    code = gr.BrowserState("", storage_key="easytune_rater_code")
    pair = gr.State(-1)
    with gr.Row():
        study = gr.Dropdown(study_names(res), label="Study", allow_custom_value=True)
        name = gr.Textbox(label="Your name (first visit)", max_length=40)
        typed_code = gr.Textbox(label="Or your rater code (to continue)", max_length=8)
        start = gr.Button("Start", variant="primary")
    who = gr.Markdown()
    prompt = gr.Markdown()
    video = gr.Video(label="Left | Right", autoplay=True, loop=True, interactive=False)
    with gr.Row():
        text_choice = gr.Radio(list(CHOICES), label="Matches the prompt better")
        realism_choice = gr.Radio(list(CHOICES), label="Looks more natural")
    comment = gr.Textbox(label="Comment (optional)", max_length=500)
    send = gr.Button("Submit vote", variant="primary")

    def started(study_name, rater_name, rater_code, stored_code):
        rater, greeting = join(res, study_name, rater_name, rater_code or (stored_code if not rater_name else ""))
        clip, text, index = current(res, study_name, rater)
        return rater, greeting, clip, text, index

    start.click(guarded(started), [study, name, typed_code, code], [code, who, video, prompt, pair], api_name="study_start")
    def cast(study_name, rater_code, pair_index, text_alignment, realism, comment):
        return vote(res, study_name, rater_code, pair_index, text_alignment, realism, comment)

    def create_study(admin_token, yaml_config, progress=gr.Progress()):
        return create(res, admin_token, yaml_config, progress)

    def show_results(admin_token, study_name):
        return results_view(res, admin_token, study_name)

    send.click(guarded(cast),
               [study, code, pair, text_choice, realism_choice, comment], [video, prompt, pair], api_name="study_vote") \
        .success(lambda: (None, None, ""), None, [text_choice, realism_choice, comment], api_name=False)
    study.focus(lambda: gr.update(choices=study_names(res)), None, study, api_name=False, queue=False)

    with gr.Accordion("Admin: create a study, results and exports", open=False):
        if res.cfg.public:
            gr.Markdown("Study administration is **off in this public demo**.")
        token = gr.Textbox(label="Admin token", type="password", visible=token_required())
        config_text = gr.Code(EXAMPLE_YAML, language="yaml", label="Study configuration (YAML)")
        make = gr.Button("Create study (generates and renders every pair)")
        made = gr.Markdown()
        report = gr.Markdown()
        exports = gr.File(label="Exports: votes CSV, SPL preference pairs", file_count="multiple", interactive=False)
        show = gr.Button("Results and exports")

    make.click(guarded(create_study), [token, config_text], made,
               api_name="study_create") \
        .success(lambda: gr.update(choices=study_names(res)), None, study, api_name=False)
    show.click(guarded(show_results), [token, study], [report, exports], api_name="study_results")
