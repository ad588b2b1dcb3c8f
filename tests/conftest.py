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


def _one_thread(task: str):
    """The built-in model for ``task``, torch on one thread while the module's tests run (tiny
    frames: extra threads only contend on a shared machine)."""
    import torch

    from warpcore.models import load_denoiser

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_denoiser("builtin", task)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def builtin():
    """The built-in inpainting model, one torch thread (a module may define its own)."""
    yield from _one_thread("inpaint")


@pytest.fixture(scope="module")
def builtin_sr():
    """The built-in upscaling model, one torch thread (a module may define its own)."""
    yield from _one_thread("upscale")


@pytest.fixture(scope="session")
def calibrated_unet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped UNet without the upscale estimator, with the self-calibrated start its
    estimate shipped with until session 9 (``estimate_weight`` 0.75, ``calibrate``): what older
    weights folders still run, and where the calibration is still used."""
    from warpcore.models.builtin import load_net, save_weights

    net = load_net()
    net.estimator = None
    net.config.pop("estimator", None)
    net.config["estimate_weight"] = {"inpaint": 1.0, "upscale": 0.75}
    net.config["calibrate"] = ["upscale"]
    folder = tmp_path_factory.mktemp("calibrated_unet")
    save_weights(net, net.unet.state_dict(), folder)
    return folder
