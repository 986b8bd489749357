"""What the playground's gradio_client tests share: the one check that an API error is one sentence."""

from __future__ import annotations

import pytest


def api_error(client, *args, api_name: str) -> str:
    """The AppError message of a call that must fail: one line, no traceback."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        client.predict(*args, api_name=api_name)
    message = str(info.value)
    assert "Traceback" not in message and "\n" not in message.strip(), message
    return message
