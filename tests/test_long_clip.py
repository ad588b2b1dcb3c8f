"""Long clips stream through the engine in constant memory, propagation window included."""

from __future__ import annotations

import tracemalloc

import numpy as np

from warpcore.models.gaussian import GaussianDenoiser
from warpcore.request import RestoreRequest
from warpcore.restore import restore_clip

SIZE = 24


def _frames(n: int):
    """A lazily made clip: a pattern panning 0.5 px a frame with a square moving over it."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    for t in range(n):
        base = 0.5 + 0.3 * np.sin((xx + 0.5 * t) / 3.0) * np.cos(yy / 4.0)
        frame = np.repeat(base[..., None], 3, axis=2).astype(np.float32)
        mask = np.zeros((SIZE, SIZE), np.float32)
        x0 = 4 + (t % 12)
        mask[8:14, x0 : x0 + 6] = 1.0
        yield frame, mask


def _peak_bytes(n: int) -> tuple[int, int]:
    request = RestoreRequest(task="inpaint", model="gaussian", steps=1, guidance=1.0, propagate=4)
    frames = (f for f, _ in _frames(n))  # two lazy readers, as a video and its matte
    masks = (m for _, m in _frames(n))
    tracemalloc.start()
    count = 0
    for _index, out in restore_clip(request, GaussianDenoiser(channels=3), frames, masks):
        assert out.shape == (SIZE, SIZE, 3) and np.isfinite(out).all()
        count += 1
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return count, peak


def test_memory_does_not_grow_with_clip_length() -> None:
    short_count, short_peak = _peak_bytes(40)
    long_count, long_peak = _peak_bytes(300)
    assert (short_count, long_count) == (40, 300)
    # 260 more frames of 24x24x3 float32 and their masks, if kept: 2.3 MiB; the window is 9.
    assert long_peak < short_peak + 512 * 1024, (short_peak, long_peak)
