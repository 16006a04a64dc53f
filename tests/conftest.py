"""Shared fixtures. The helpers themselves live in `arbiter.testing` (one importable kit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbiter.config import Config
from arbiter.testing import make_config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)
