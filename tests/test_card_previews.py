"""scripts/card_previews.py: the model card's filmstrips and the marker-bounded table update."""

import importlib.util

import numpy as np
import pytest

from test_render import REPO, _walk, gl  # noqa: F401  (gl is a fixture)

spec = importlib.util.spec_from_file_location("card_previews", REPO / "scripts" / "card_previews.py")
card_previews = importlib.util.module_from_spec(spec)
spec.loader.exec_module(card_previews)


def test_update_card_replaces_only_between_the_markers(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("# Card\nbefore\n<!-- previews -->\nold table\n<!-- /previews -->\nafter\n")
    assert card_previews.update_card(card, "| new | table |")
    assert card.read_text() == "# Card\nbefore\n<!-- previews -->\n| new | table |\n<!-- /previews -->\nafter\n"
    plain = tmp_path / "plain.md"
    plain.write_text("no markers here\n")
    assert not card_previews.update_card(plain, "x") and plain.read_text() == "no markers here\n"
    assert not card_previews.update_card(tmp_path / "missing.md", "x")


def test_filmstrip_renders_evenly_spaced_body_frames(gl, tmp_path):  # noqa: F811
    strip = card_previews.filmstrip(_walk(frames=30), size=64, n=3)
    assert strip.shape == (64, 192, 3) and strip.dtype == np.uint8
    first, last = strip[:, :64].astype(int), strip[:, 128:].astype(int)
    assert np.abs(first - last).mean() > 0.5  # the legs moved between the first and the last frame
    card_previews.save_png(strip, tmp_path / "s.png")
    from PIL import Image
    assert Image.open(tmp_path / "s.png").size == (192, 64)


def test_token_border_steps_by_hand():
    spec = importlib.util.spec_from_file_location("token_borders", REPO / "scripts" / "token_borders.py")
    tb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tb)
    # a wrist that moves 1 cm inside each 2-frame token and 5 cm across token borders
    x = np.cumsum([0.0, 0.01, 0.05, 0.01, 0.05, 0.01])
    joints = np.zeros((6, 22, 3))
    joints[:, 20, 0] = x
    inside, across = tb.border_steps(joints, 2)
    assert inside * 22 == pytest.approx(0.01) and across * 22 == pytest.approx(0.05)  # mean over 22 joints
