"""Shared fixtures. Integration tests read ../shared/data; they skip when it is absent, unless
EASYTUNE_REQUIRE_DATA=1 (set by CI), where they fail instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("EASYTUNE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("EASYTUNE_REQUIRE_DATA") == "1":
            pytest.fail(f"EASYTUNE_REQUIRE_DATA=1 but {path} is missing")
        pytest.skip(f"real data not found at {path} (set EASYTUNE_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (skip or fail when absent, see module doc)."""
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def humanml3d_reference(shared_data: Path) -> Path:
    return _need(shared_data / "humanml3d-reference")


@pytest.fixture(scope="session")
def bandai_dir(shared_data: Path) -> Path:
    return _need(shared_data / "bandai-namco")
