"""Playground latency and load: the real `python app.py` in a subprocess, driven by gradio_client over loopback.

    .venv/bin/python bench/bench_app.py            # ~4 min on 2 cores; writes bench/results/app.*

The server runs as `python app.py` does for a user: torch's default threads (OMP_NUM_THREADS is removed
from its environment), so on 2 cores a request uses both.

Single user: `--repeats` clicks of Compare (6 s motions, the checkpoints' 10 steps, guidance 2.5, a new
seed each time so nothing comes from the cache) timed as the page sees them: /compare (motions, scores,
per-step plot, GLBs on screen) and /compare_video right after it (the side-by-side MP4 and downloads;
"end to end" = the sum). Load: N = 1, 4, 8 concurrent users, each its own gradio_client Client, each
sending `--per-user` clicks (compare then video); every request is bounded by `--timeout`; we count
completed requests and errors, and record the largest queue position a waiting user was shown.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a person walks forward and waves"


def start_server(port: int, log: Path) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO,
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        text = log.read_text()
        found = re.search(r"open (http://127\.0\.0\.1:\d+/?)", text)
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with {proc.returncode}:\n{text[-2000:]}")
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("app.py did not start within 300 s")


def click(client, seed: int, left: str, right: str, timeout: float, ranks: list[int]) -> tuple[float, float]:
    """One Compare click as the page makes it: /compare, then /compare_video. Returns both latencies."""
    args = [PROMPT, 6.0, seed, 2.5, 10, left, right]
    out = []
    for api in ("/compare", "/compare_video"):
        start = time.perf_counter()
        job = client.submit(*args, api_name=api)
        while not job.done():
            status = job.status()
            if status.rank is not None and status.code.name == "IN_QUEUE":
                ranks.append(int(status.rank) + 1)
            if time.perf_counter() - start > timeout:
                job.cancel()
                raise TimeoutError(f"{api} took more than {timeout:.0f} s")
            time.sleep(0.05)
        job.result()  # raises the server's error, if any
        out.append(time.perf_counter() - start)
    return out[0], out[1]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def stats(values: list[float]) -> dict:
    return {"n": len(values), "p50": pct(values, 50), "p95": pct(values, 95), "max": max(values, default=float("nan"))}


def single_user(url: str, repeats: int, left: str, right: str, timeout: float) -> dict:
    from gradio_client import Client

    client = Client(url, verbose=False)
    compare, video, total = [], [], []
    for i in range(repeats):
        a, b = click(client, 1000 + i, left, right, timeout, [])
        compare.append(a), video.append(b), total.append(a + b)
    return {"compare": stats(compare), "video": stats(video), "end_to_end": stats(total)}


def load(url: str, users: int, per_user: int, left: str, right: str, timeout: float) -> dict:
    from gradio_client import Client

    lat, errors, ranks, lock = [], [], [], threading.Lock()

    def user(u: int) -> None:
        client = Client(url, verbose=False)
        for i in range(per_user):
            seen: list[int] = []
            try:
                a, b = click(client, 10_000 * users + 100 * u + i, left, right, timeout, seen)
                with lock:
                    lat.append(a + b)
            except Exception as e:  # noqa: BLE001 - counted and reported, the bench goes on
                with lock:
                    errors.append(f"user {u}: {type(e).__name__}: {str(e)[:200]}")
            with lock:
                ranks.extend(seen)

    start = time.perf_counter()
    threads = [threading.Thread(target=user, args=(u,)) for u in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"users": users, "sent": users * per_user, "completed": len(lat), "errors": errors,
            "end_to_end": stats(lat), "max_queue_position_shown": max(ranks, default=0), "wall_s": wall}


def markdown(res: dict) -> str:
    s = res["single_user"]
    lines = [f"# Playground latency and load ({res['machine']})", "",
             f"`{res['command']}`; {res['date']}; checkpoints {res['left']} vs {res['right']}, 6 s motions, "
             f"10 steps, guidance 2.5, {res['repeats']} single-user clicks with new seeds (no cache hits).", "",
             "| single user | p50 (s) | p95 (s) | max (s) | goal |", "|---|---|---|---|---|",
             f"| motions + scores (/compare) | {s['compare']['p50']:.2f} | {s['compare']['p95']:.2f} | "
             f"{s['compare']['max']:.2f} | < 1 s |",
             f"| video after it (/compare_video) | {s['video']['p50']:.2f} | {s['video']['p95']:.2f} | "
             f"{s['video']['max']:.2f} | |",
             f"| end to end | {s['end_to_end']['p50']:.2f} | {s['end_to_end']['p95']:.2f} | "
             f"{s['end_to_end']['max']:.2f} | < 4 s |", "",
             "| users | sent | completed | errors | p50 end to end (s) | p95 (s) | largest queue position shown | wall (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["load"]:
        lines.append(f"| {r['users']} | {r['sent']} | {r['completed']} | {len(r['errors'])} | "
                     f"{r['end_to_end']['p50']:.2f} | {r['end_to_end']['p95']:.2f} | "
                     f"{r['max_queue_position_shown']} | {r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7990)
    parser.add_argument("--repeats", type=int, default=10, help="single-user clicks")
    parser.add_argument("--users", default="1,4,8", help="concurrent users per load run")
    parser.add_argument("--per-user", type=int, default=2, help="clicks per user in a load run")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds one request may take")
    parser.add_argument("--left", default="base")
    parser.add_argument("--right", default="easytune")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "app"))
    args = parser.parse_args()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    proc, url = start_server(args.port, out.with_suffix(".server.log"))
    try:
        res = {"command": ".venv/bin/python bench/bench_app.py " + " ".join(sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} CPU cores",
               "left": args.left, "right": args.right, "repeats": args.repeats,
               "single_user": single_user(url, args.repeats, args.left, args.right, args.timeout),
               "load": [load(url, int(n), args.per_user, args.left, args.right, args.timeout)
                        for n in args.users.split(",")]}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
