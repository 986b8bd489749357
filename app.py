"""The EasyTune playground: `python app.py [--public] [--port N] ...` (flags and EASYTUNE_* variables:
app/config.py). Loads the registered checkpoints once, then serves the page until Ctrl-C."""

import logging
import sys

from app.config import parse
from easytune.errors import UserError


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = parse(argv)
    from app import resources, ui

    try:
        print("Loading checkpoints and warming up the models ...", flush=True)
        res = resources.load(cfg)
        demo = ui.build(res)
        url = ui.launch(demo, res)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"EasyTune playground ready in {res.load_seconds:.1f} s: open {url} "
          f"(checkpoints: {', '.join(res.names)}; Ctrl-C stops it)", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        demo.close()
    finally:
        if res.runner is not None:  # a running fine-tune stops; it resumes at the next start
            res.runner.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
