"""Who may do what: raters need nothing; fine-tunes and study administration are off in public mode
and, when EASYTUNE_ADMIN_TOKEN is set, need that token (compared on the server, in constant time)."""

from __future__ import annotations

import hmac
import os

from easytune.errors import UserError

TOKEN_ENV = "EASYTUNE_ADMIN_TOKEN"


def token_required() -> bool:
    return bool(os.environ.get(TOKEN_ENV))


def check_admin(res, token, what: str) -> None:
    """Raise one sentence unless `what` (e.g. "fine-tuning") is allowed for this token."""
    if res.cfg.public:
        raise UserError(f"{what} is off in this public demo; run the playground yourself to use it")
    want = os.environ.get(TOKEN_ENV, "")
    if want and not hmac.compare_digest(str(token or "").encode(), want.encode()):
        raise UserError(f"the admin token is wrong; {what} needs the token set in {TOKEN_ENV}")
