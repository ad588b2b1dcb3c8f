"""Long clips stream through the engine in constant memory, propagation window included."""

from __future__ import annotations

import contextlib
import ctypes
import gc

import numpy as np
import psutil
import pytest
import torch

import warpcore.restore as restore_module
from warpcore.models.gaussian import GaussianDenoiser
from warpcore.request import RestoreRequest
from warpcore.restore import restore_clip

SIZE = 64


def _frames(n: int):
    """A lazily made clip: a pattern panning 0.5 px a frame with a square moving over it."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    for t in range(n):
        base = 0.5 + 0.3 * np.sin((xx + 0.5 * t) / 3.0) * np.cos(yy / 4.0)
        frame = np.repeat(base[..., None], 3, axis=2).astype(np.float32)
        mask = np.zeros((SIZE, SIZE), np.float32)
        x0 = 8 + (t % 24)
        mask[16:28, x0 : x0 + 12] = 1.0
        yield frame, mask


class _LeakyDenoiser(GaussianDenoiser):
    """A planted torch leak: keeps every denoised estimate (one frame's worth per call)."""

    def __init__(self) -> None:
        super().__init__(channels=3)
        self.kept: list[torch.Tensor] = []

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        out = super().__call__(*args, **kwargs)
        self.kept.append(out.clone())
        return out


def _release_free_memory() -> None:
    """Collect garbage and hand glibc's free heap back to the OS, so that RSS tracks live
    memory (otherwise memory freed by an earlier test hides a leak that reuses it)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_growth(n: int = 160, warm: int = 30, denoiser: GaussianDenoiser | None = None) -> int:
    """Process RSS growth (bytes) from frame ``warm`` to the last frame of an n-frame run.

    RSS sees torch's and numpy's allocations alike (tracemalloc sees neither torch's nor
    those of C extensions); measuring after a warm-up leaves out one-time allocations
    (thread pools, flow estimator, first-frame state) that a short run would carry too.
    """
    request = RestoreRequest(task="inpaint", model="gaussian", steps=2, guidance=1.0, propagate=4)
    frames = (f for f, _ in _frames(n))  # two lazy readers, as a video and its matte
    masks = (m for _, m in _frames(n))
    process, rss = psutil.Process(), {}
    outputs = restore_clip(request, denoiser or GaussianDenoiser(channels=3), frames, masks)
    for index, out in outputs:
        assert out.shape == (SIZE, SIZE, 3) and np.isfinite(out).all()
        if index in (warm, n - 1):
            _release_free_memory()
            rss[index] = process.memory_info().rss
    assert set(rss) == {warm, n - 1}
    return rss[n - 1] - rss[warm]


# One leaked 64x64 RGB float32 frame per frame over the 129 measured frames: 6.3 MB.
# A clean run measured 0.02-0.14 MB of growth.
LEAK_LIMIT = 3 * 1024 * 1024


def test_memory_does_not_grow_with_clip_length() -> None:
    assert _rss_growth() < LEAK_LIMIT


def test_the_leak_measure_sees_a_planted_torch_leak() -> None:
    assert _rss_growth(denoiser=_LeakyDenoiser()) > LEAK_LIMIT


def test_the_leak_measure_sees_a_planted_numpy_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    kept: list[np.ndarray] = []
    to_tensor = restore_module._to_tensor

    def leaky(frame: np.ndarray) -> torch.Tensor:
        kept.append(frame.copy())
        return to_tensor(frame)

    monkeypatch.setattr(restore_module, "_to_tensor", leaky)
    assert _rss_growth() > LEAK_LIMIT
