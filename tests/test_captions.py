"""Captions from labels: coverage of the lexicon, tokens, the left/right swap, text-file lines."""

from __future__ import annotations

import itertools

import pytest

from easytune.errors import UserError
from easytune.motion.captions import (
    CONTENT_PHRASES,
    LEXICON,
    STYLE_WORDS,
    TEMPLATES,
    mirror_content,
    parse_text_line,
    pretty,
    render,
    sample_captions,
    swap_left_right,
    text_line,
    tokens,
)

BANDAI_CONTENTS = ["walk", "run", "dash", "walk-back", "walk-left", "walk-right", "walk-turn-left",
                   "walk-turn-right", "bow", "bye", "byebye", "guide", "respond", "call", "punch", "kick",
                   "slash", "dance-long", "dance-short", "wave-both-hands", "wave-left-hand",
                   "wave-right-hand", "raise-up-both-hands", "raise-up-left-hand", "raise-up-right-hand"]
BANDAI_STYLES = ["normal", "happy", "sad", "angry", "proud", "not-confident", "masculine", "feminine",
                 "childish", "elderly", "tired", "active", "musical", "giant", "chimpira", "youthful"]


def test_every_bandai_label_has_captions():
    assert set(BANDAI_CONTENTS) == set(CONTENT_PHRASES)
    assert set(BANDAI_STYLES) == set(STYLE_WORDS)


def test_every_caption_word_is_in_the_lexicon():
    """Tokens need no tagger because every word we can write has a lemma/POS of our own."""
    n = 0
    for content, style, t in itertools.product(CONTENT_PHRASES, STYLE_WORDS, range(len(TEMPLATES))):
        for variant in range(3):
            cap = render(t, content, style, variant, variant, variant, variant)
            toks = tokens(cap).split()
            assert len(toks) == len([w for w in cap.split() if w != ","])
            assert all(tok.split("/")[1].isupper() for tok in toks)
            n += 1
    assert n == 25 * 16 * 8 * 3
    assert "swagger" in LEXICON


def test_pinned_captions_and_tokens():
    assert render(0, "wave-left-hand", "happy") == "a happy person waves their left hand"
    assert render(2, "walk-back", "tired") == "someone tired walks backwards"
    assert render(0, "raise-up-both-hands", "elderly") == "an elderly person raises both hands"
    assert tokens("a happy person waves their left hand") == \
        "a/DET happy/ADJ person/NOUN wave/VERB their/PRON left/ADJ hand/NOUN"
    assert tokens("someone walks forward and turns to the right") == \
        "someone/PRON walk/VERB forward/ADV and/CCONJ turn/VERB to/ADP the/DET right/NOUN"
    assert tokens("a person walks and turns left") == \
        "a/DET person/NOUN walk/VERB and/CCONJ turn/VERB left/ADV"
    assert render(5, "bow", "tired", 1) == "wearily , someone bows"
    assert pretty("wearily , someone bows") == "Wearily, someone bows"
    assert text_line("wearily , someone bows") == "wearily, someone bows#wearily/ADV someone/PRON bow/VERB#0.0#0.0"


def test_swap_left_right_and_mirror_content():
    assert swap_left_right("waves their left hand, then turns right") == "waves their right hand, then turns left"
    assert swap_left_right("leftover rights") == "leftover rights"  # whole words only
    pairs = {"walk-left": "walk-right", "walk-turn-left": "walk-turn-right", "wave-left-hand": "wave-right-hand",
             "raise-up-left-hand": "raise-up-right-hand"}
    for a, b in pairs.items():
        assert mirror_content(a) == b and mirror_content(b) == a
    for c in ("walk", "bow", "wave-both-hands", "walk-back"):
        assert mirror_content(c) == c
    for c, phrases in CONTENT_PHRASES.items():  # captions of the mirror say the other side
        assert [swap_left_right(p) for p in phrases] == CONTENT_PHRASES[mirror_content(c)]
    assert all("right" in p and "left" not in p for p in CONTENT_PHRASES["wave-right-hand"])


def test_sample_captions_reproducible_distinct_and_restricted():
    a = sample_captions("kick", "angry", [0, 1, 2, 3], 3, "M000123")
    assert a == sample_captions("kick", "angry", [0, 1, 2, 3], 3, "M000123")
    assert len({c for _, c in a}) == 3 and {t for t, _ in a} <= {0, 1, 2, 3}
    assert sample_captions("kick", "angry", [0, 1, 2, 3], 3, "other") != a
    assert all("kick" in c for _, c in a)


def test_unknown_labels():
    with pytest.raises(UserError, match="no captions for content 'moonwalk'"):
        render(0, "moonwalk", "happy")
    with pytest.raises(UserError, match="no captions for style 'sleepy'"):
        render(0, "walk", "sleepy")


def test_parse_text_line_reads_humanml3d_lines():
    line = "a man kicks something or someone with his left leg.#a/DET man/NOUN kick/VERB#0.0#0.0"
    assert parse_text_line(line) == ("a man kicks something or someone with his left leg.",
                                     "a/DET man/NOUN kick/VERB", 0.0, 0.0)
    assert parse_text_line("jumps#jump/VERB#1.5#nan")[2:] == (1.5, 0.0)
    cap = render(1, "bye", "happy")
    assert parse_text_line(text_line(cap))[0] == cap.replace(" ,", ",")
    with pytest.raises(UserError, match="caption#tokens#start#end"):
        parse_text_line("just a caption")


def test_absent_combination_prompts_cover_only_combinations_no_motion_has(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    from easytune.motion import dataset as D
    from easytune.motion.captions import TEMPLATES

    path = Path(__file__).resolve().parents[1] / "scripts" / "absent_combination_prompts.py"
    spec = importlib.util.spec_from_file_location("absent_combination_prompts", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    labels = {"m1": {"content": "walk", "style": "happy"}, "m2": {"content": "bow", "style": "sad"},
              "m3": {"content": "walk", "style": "sad"}}  # m3 may be a held-out test combination: it has motions
    assert mod.absent_combinations(labels) == [("bow", "happy")]
    info = {"labels": labels, "info": {"heldout_templates": list(range(2, len(TEMPLATES)))}}
    monkeypatch.setattr(D, "load_dataset_info", lambda data: info)
    caps = mod.prompts("toy", per_combination=2)
    assert len(caps) == 2 and len(set(caps)) == 2
    assert all("bow" in c for c in caps)
    assert not any(w in c for c in caps for w in ("who is", "figure", "looking", " , "))  # held-out templates 2-7
    assert caps == mod.prompts("toy", per_combination=2)  # reproducible
    assert mod.main(["--data", "toy", "--per-combination", "0", "--out", str(tmp_path / "p.txt")]) == 2
    assert mod.main(["--data", "toy", "--per-combination", "2", "--out", str(tmp_path / "p.txt")]) == 0
    assert (tmp_path / "p.txt").read_text().splitlines() == caps


def test_composition_set_captions_absent_combinations_with_held_out_templates(monkeypatch):
    from easytune.evaluate import composition_set
    from easytune.motion import dataset as D
    from easytune.motion.captions import sample_captions

    labels = {"m1": {"content": "walk", "style": "happy", "split": "train", "frames": 80},
              "m2": {"content": "walk", "style": "sad", "split": "train", "frames": 120},
              "m4": {"content": "walk", "style": "elderly", "split": "val", "frames": 500},  # not a training length
              "m3": {"content": "bow", "style": "sad", "split": "test", "frames": 60}}  # no training motion of bow
    held_out = [2, 3]
    info = {"labels": labels, "info": {"heldout_templates": held_out}}
    monkeypatch.setattr(D, "load_dataset_info", lambda data: info)
    captions, keys, lengths = composition_set("toy", per_combination=2)
    # walk x {happy, sad, elderly} and bow x sad have motions; bow x happy and bow x elderly do not
    assert sorted(set(keys)) == [("bow", "elderly"), ("bow", "happy")] and len(captions) == 4
    assert lengths == [120] * 4  # no training motion of bow: the default 6 s
    assert all(c in {cap for _, cap in sample_captions(k[0], k[1], held_out, 8, f"probe0:{k[0]}:{k[1]}")}
               for c, k in zip(captions, keys))  # held-out templates only
    assert composition_set("toy", per_combination=2) == (captions, keys, lengths)  # reproducible
    labels["m5"] = {"content": "bow", "style": "sad", "split": "train", "frames": 70}
    labels["m6"] = {"content": "bow", "style": "sad", "split": "train", "frames": 90}
    assert composition_set("toy", per_combination=1)[2] == [80, 80]  # the median of bow's training lengths
    info["labels"] = {}
    assert composition_set("toy") == ([], [], [])  # no labels: no probe
