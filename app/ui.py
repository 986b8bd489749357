"""The page: a title, start-up notes and one tab per module of app/tabs (each exposes `build(res)`).

Tabs plug in by adding a line to `tabs()`."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

from easytune.errors import UserError

log = logging.getLogger(__name__)


def guarded(fn: Callable) -> Callable:
    """A callback whose failures reach the user as one sentence (gr.Error), never a traceback: a
    UserError's own message; anything else is logged here and named only by its type."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as e:
            raise gr.Error(str(e).strip().rstrip(".") + ".", print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - the page must get a sentence; the log keeps the traceback
            log.exception("callback %s failed", fn.__name__)
            raise gr.Error(f"The server could not finish this request ({type(e).__name__}); it was logged. "
                           f"Try again or change the settings.", print_exception=False) from None
    return wrapper


def check_number(value, what: str, lo: float, hi: float, *, integer: bool = False) -> float:
    """A number from the page or the API within [lo, hi] (NaN refused), else one sentence naming it."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number from {lo:g} to {hi:g}, got {value!r}") from None
    if not (lo <= v <= hi) or (integer and v != int(v)):
        kind = "a whole number" if integer else "a number"
        raise UserError(f"{what} must be {kind} from {lo:g} to {hi:g}, got {value!r}")
    return int(v) if integer else v


def tabs() -> list[tuple[str, Callable]]:
    from app.tabs import compare, finetune, reward, study

    return [("Compare", compare.build), ("Reward", reward.build), ("Study", study.build), ("Fine-tune", finetune.build)]


def build(res) -> Any:
    import gradio as gr

    title = "EasyTune playground"
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        mode = " (public demo: shorter motions, fewer steps)" if res.cfg.public else ""
        gr.Markdown(f"# {title}{mode}\nStep-aware reward fine-tuning of a text-to-motion diffusion model: "
                    f"type a prompt and compare two checkpoints from the same starting noise, with the reward "
                    f"model's score and the independent evaluator's.")
        for note in res.notes:
            gr.Markdown(f"> {note}")
        for name, build_tab in tabs():
            with gr.Tab(name):
                build_tab(res)
    return demo


def free_port(host: str, start: int, tries: int = 50) -> int:
    """`start`, or the next port after it that nothing listens on."""
    import socket

    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host, port))
                return port
            except OSError:
                continue
    raise UserError(f"ports {start} to {start + tries - 1} on {host} are all taken; pass --port")


def launch(demo: Any, res) -> str:
    """Start the server without blocking; returns the local URL."""
    cfg = res.cfg
    demo.queue(max_size=cfg.queue_size, default_concurrency_limit=cfg.concurrency)
    demo.launch(server_name=cfg.host, server_port=free_port(cfg.host, cfg.port), share=cfg.share,
                show_error=False, max_file_size=f"{cfg.limits.max_upload_mb:g}mb",
                allowed_paths=[str(res.data_dir)], prevent_thread_lock=True, quiet=True, ssr_mode=False)
    return demo.local_url
