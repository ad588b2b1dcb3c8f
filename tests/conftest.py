"""Shared fixtures: tiny random models built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_sdxl_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Saved tiny SDXL diffusers folders by UNet in_channels: 9 inpaint, 8 SR, 4 plain."""
    from warpcore.models.sdxl_tiny import make_tiny_sdxl

    root = tmp_path_factory.mktemp("tiny_sdxl")
    return {c: make_tiny_sdxl(root / f"sdxl_in{c}", c) for c in (9, 8, 4)}
