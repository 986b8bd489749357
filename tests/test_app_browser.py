"""The playground in a real browser: Debian's chromium driven by Playwright loads the page, types a
prompt, clicks, waits for the side-by-side video and checks that it plays; then scores on the Reward
tab. Screenshots go to docs/screenshots/ when EASYTUNE_SCREENSHOTS=1 (the README's), else to tmp.
Skips without playwright or chromium, except under CI=true, where it fails."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from app.config import AppConfig, Limits

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
STUDY = """name: browser-study
prompts: [a person waves the right hand, a person walks forward happily]
checkpoints: [base, easytune]
seconds: 3
attention_checks: 2
"""


def _gray(png: bytes):
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int16)


def _need_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (requirements-dev.txt)"
    else:
        reason = None if shutil.which(CHROMIUM) or Path(CHROMIUM).exists() else f"{CHROMIUM} is missing"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    _need_browser()
    from app import resources, ui

    from gradio_client import Client

    cfg = AppConfig(port=7950, data_dir=str(tmp_path_factory.mktemp("app")), limits=Limits(render_size=256),
                    max_trajectories=3)
    res = resources.load(cfg)
    demo = ui.build(res)
    url = ui.launch(demo, res)
    Client(url, verbose=False).predict("", STUDY, api_name="/study_create")  # the admin's step, by API
    yield url
    res.runner.stop()
    demo.close()


def test_compare_and_reward_in_chromium(url, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = REPO / "docs" / "screenshots" if os.environ.get("EASYTUNE_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--use-gl=swiftshader",
                                                                     "--enable-unsafe-swiftshader"])
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url, wait_until="load", timeout=180_000)  # never "networkidle": the Fine-tune tab's timer polls every 2 s
        page.get_by_label("Prompt").wait_for(timeout=180_000)  # the first load is slow on a busy 2-core machine
        box = page.get_by_label("Prompt")
        box.fill("a person walks forward and waves")
        page.get_by_role("button", name="Generate both").click()
        video = page.locator("video").first
        video.wait_for(state="attached", timeout=120_000)
        page.wait_for_function("() => { const v = document.querySelector('video');"
                               " return v && v.readyState >= 2 && v.duration > 1; }", timeout=120_000)
        page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; return v.play(); }")
        t0 = page.evaluate("() => document.querySelector('video').currentTime")
        page.wait_for_timeout(1500)
        t1 = page.evaluate("() => document.querySelector('video').currentTime")
        assert t1 > t0, "the video does not play"
        assert page.get_by_text("text distance").first.is_visible()
        # gr.Model3D (Babylon.js) plays the GLB's animation: once the camera's intro has settled,
        # consecutive frames of the left viewer still differ
        canvas = page.locator("canvas").first
        page.wait_for_timeout(6000)
        frames = [_gray(canvas.screenshot()) for _ in range(3) if not page.wait_for_timeout(600)]
        moving = [int((abs(b - a) > 20).sum()) for a, b in zip(frames, frames[1:])]
        assert min(moving) > 50, f"the 3D view does not animate: {moving} pixels change between frames"
        page.wait_for_timeout(1000)
        page.screenshot(path=str(shots / "compare.png"), full_page=True)

        page.get_by_role("tab", name="Reward").click()
        page.get_by_role("button", name="Score and rank").click()
        # the default: two prompts, one generated motion -> "Prompt this motion matches best by the reward model"
        page.get_by_text("matches best by the reward model").wait_for(timeout=120_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / "reward.png"), full_page=True)
        assert "easytune (generated, seed 0)" in page.inner_text("body"), "the ranked table shows no generated motion"

        # Study: join, watch the pair's video, vote; the next pair comes
        page.get_by_role("tab", name="Study").click()
        page.get_by_label("Study", exact=True).click()
        page.get_by_role("option", name="browser-study").click()
        page.get_by_label("Your name (first visit)").fill("Browser rater")
        page.get_by_role("button", name="Start", exact=True).click()
        page.get_by_text("Pair 1 of 4").wait_for(timeout=60_000)
        page.wait_for_function("() => [...document.querySelectorAll('video')].some(v => v.readyState >= 2 && "
                               "v.offsetParent !== null)", timeout=60_000)
        page.get_by_role("radio", name="Left").nth(0).check()  # text alignment (the first group)
        page.get_by_role("radio", name="Tie").nth(1).check()  # realism
        page.screenshot(path=str(shots / "study.png"), full_page=True)
        page.get_by_role("button", name="Submit vote").click()
        page.get_by_text("Pair 2 of 4").wait_for(timeout=60_000)

        # Fine-tune: start the default job (3 trajectories on this server) and watch it finish
        page.get_by_role("tab", name="Fine-tune").click()
        page.get_by_role("button", name="Start fine-tune").click()
        page.get_by_text("submitted").first.wait_for(timeout=30_000)
        try:
            page.get_by_text(re.compile(r"registered as ft-0001-easytune-[0-9a-f]{6}")).filter(visible=True).first.wait_for(timeout=240_000)
        except Exception:
            page.screenshot(path=str(tmp_path / "finetune_failed.png"), full_page=True)
            raise AssertionError(f"the job never showed as done; page: {tmp_path / 'finetune_failed.png'}") from None
        page.wait_for_timeout(2500)  # one more timer tick: the curve and the log
        page.screenshot(path=str(shots / "finetune.png"), full_page=True)
        assert "held-out reward" in page.inner_text("body")
        browser.close()
    assert not errors, errors
