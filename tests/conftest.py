"""Shared fixtures: tiny synthetic volumes, and the real data in ../shared/data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip when it is absent (a user's fresh machine)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (real-data test)")
    return SHARED_DATA
