"""Temporal propagation: holes filled with the background other frames show, streaming or not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from warpcore.errors import InvalidInput
from warpcore.propagate import Propagator, propagate_clip
from warpcore.request import RestoreRequest

H, W, N = 96, 128, 8


def _photo() -> np.ndarray:
    from skimage import data

    return cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA) / 255.0


def _clip() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A camera pan over a photograph (1.3 px right, 0.4 px down a frame) and a grey square
    crossing it (4 px a frame): frames, masks (the square grown by 2 px) and the clean plate."""
    photo = _photo().astype(np.float32)
    frames, masks, plates = [], [], []
    for t in range(N):
        shift = np.float32([[1, 0, -20 - 1.3 * t], [0, 1, -30 - 0.4 * t]])
        plate = cv2.warpAffine(photo, shift, (W, H), flags=cv2.INTER_LINEAR)
        square = np.zeros((H, W), np.float32)
        x0 = 30 + 4 * t
        square[30:54, x0 : x0 + 20] = 1.0
        frame = plate * (1 - square[..., None]) + 0.5 * square[..., None]
        frames.append(frame)
        masks.append(cv2.dilate(square, np.ones((5, 5), np.uint8)))
        plates.append(plate)
    return np.stack(frames), np.stack(masks), np.stack(plates)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def test_holes_are_filled_with_the_true_background() -> None:
    frames, masks, plates = _clip()
    filled_all = 0
    for t, (out, left) in enumerate(propagate_clip(zip(frames, masks, strict=True), radius=6)):
        hole = masks[t] > 0.5
        filled = hole & (left < 0.5)
        assert not (left[~hole] > 0).any()  # what is left is part of the hole
        np.testing.assert_array_equal(out[~hole], frames[t][~hole])  # known pixels untouched
        assert filled.sum() > 0.9 * hole.sum(), t  # the square moves: the plate shows elsewhere
        assert _psnr(out[filled], plates[t][filled]) > 25.0, t
        filled_all += int(filled.sum())
    telea = cv2.inpaint((frames[0] * 255).astype(np.uint8), (masks[0] > 0.5).astype(np.uint8), 3,
                        cv2.INPAINT_TELEA) / 255.0  # fmt: skip
    hole = masks[0] > 0.5
    assert _psnr(telea[hole], plates[0][hole]) < 22.0  # what a single-frame fill gets
    assert filled_all > 0


def test_streaming_matches_random_access_and_keeps_a_window() -> None:
    frames, masks, _ = _clip()
    radius = 3
    calls: list[int] = []

    def load(i: int) -> tuple[np.ndarray, np.ndarray] | None:
        calls.append(i)
        return (frames[i], masks[i]) if i < N else None

    propagator = Propagator(load, N, radius)
    order = [5, 0, 7, 2]  # any order, as a timeline asks
    direct = {t: propagator.fill(t) for t in order}
    assert len(propagator._frames) <= 2 * radius + 1
    streamed = list(propagate_clip(zip(frames, masks, strict=True), radius=radius))
    assert len(streamed) == N
    for t in order:
        np.testing.assert_allclose(streamed[t][0], direct[t][0], atol=1e-6)
        np.testing.assert_array_equal(streamed[t][1], direct[t][1])


def test_radius_zero_changes_nothing() -> None:
    frames, masks, _ = _clip()
    for t, (out, left) in enumerate(
        propagate_clip(zip(frames[:3], masks[:3], strict=True), radius=0)
    ):
        np.testing.assert_array_equal(out, frames[t])
        np.testing.assert_array_equal(left, (masks[t] > 0.5).astype(np.float32))


def test_bad_input_is_a_clear_error() -> None:
    frames, masks, _ = _clip()
    with pytest.raises(InvalidInput, match="radius"):
        Propagator(lambda i: None, 3, radius=-1)
    with pytest.raises(InvalidInput, match="no mask"):
        list(propagate_clip([(frames[0], masks[0]), (frames[1], None)], radius=2))
    with pytest.raises(InvalidInput, match="mask"):
        list(propagate_clip([(frames[0], masks[0][:10])], radius=2))
    with pytest.raises(InvalidInput, match="index"):
        Propagator(lambda i: (frames[i], masks[i]) if i < 3 else None, None, 2).fill(5)
    for bad in (-1, 65, True, 2.5):
        with pytest.raises(InvalidInput, match="propagate"):
            RestoreRequest(task="inpaint", propagate=bad)


def test_restore_clip_keeps_the_propagated_pixels() -> None:
    """The restorer composites: pixels propagated from other frames come out as propagated."""
    from warpcore.models.gaussian import GaussianDenoiser
    from warpcore.restore import restore_clip

    frames, masks, _ = _clip()
    frames, masks = frames[:5], masks[:5]
    request = RestoreRequest(task="inpaint", model="gaussian", steps=3, propagate=4)
    expected = list(
        propagate_clip(
            zip(frames, masks, strict=True), 4, regional=request.crop, camera=request.camera_motion
        )
    )
    outs = list(restore_clip(request, GaussianDenoiser(channels=3), iter(frames), iter(masks)))
    assert [i for i, _ in outs] == list(range(5))
    for (_, out), (filled, left) in zip(outs, expected, strict=True):
        keep = left < 0.5
        np.testing.assert_allclose(out[keep], filled[keep], atol=1e-6)


def test_plate_flows_are_estimated_once_per_pair(monkeypatch) -> None:
    """The restorer takes the plate flows propagation estimated: one estimate per frame pair."""
    from warpcore import flow as flowlib
    from warpcore.models.gaussian import GaussianDenoiser
    from warpcore.restore import restore_clip

    calls: list[int] = []
    real = flowlib.plate_flow_pair

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(flowlib, "plate_flow_pair", counted)
    frames, masks, _ = _clip()
    request = RestoreRequest(task="inpaint", model="gaussian", steps=2, propagate=3)
    outs = list(restore_clip(request, GaussianDenoiser(channels=3), iter(frames), iter(masks)))
    assert len(outs) == N and len(calls) == N - 1


def test_regional_flows_fill_the_hole_like_whole_frame_flows() -> None:
    """Crop inpainting's propagation: flows only around the holes (a region well under the
    frame), the hole filled as well as with whole-frame flows, every other pixel untouched."""
    h, w, n = 96, 800, 6
    photo = cv2.resize(_photo(), (960, 256), interpolation=cv2.INTER_AREA).astype(np.float32)
    frames, masks, plates = [], [], []
    for t in range(n):
        shift = np.float32([[1, 0, -40 - 2.2 * t], [0, 1, -60 - 0.7 * t]])
        plate = cv2.warpAffine(photo, shift, (w, h), flags=cv2.INTER_LINEAR)
        square = np.zeros((h, w), np.float32)
        square[40:56, 420 - 10 * t : 436 - 10 * t] = 1.0
        frames.append(plate * (1 - square[..., None]) + 0.5 * square[..., None])
        masks.append(cv2.dilate(square, np.ones((5, 5), np.uint8)))
        plates.append(plate)
    pairs = list(zip(frames, masks, strict=True))
    whole = list(propagate_clip(iter(pairs), radius=3))
    clip = propagate_clip(iter(pairs), radius=3, regional=True)
    regional = list(clip)
    estimated = [flow for (_, flow) in clip.propagator._flows.values()]
    assert estimated and all(f.shape[1] * f.shape[2] < 0.5 * h * w for f in estimated)
    assert clip.flows(n - 1) is None  # no whole-frame flows to hand the restorer
    for t, ((out, left), (ref, ref_left)) in enumerate(zip(regional, whole, strict=True)):
        hole = masks[t] > 0.5
        filled = hole & (left < 0.5)
        np.testing.assert_array_equal(out[~hole], frames[t][~hole])
        assert not (left[~hole] > 0).any()
        assert filled.sum() >= 0.98 * (hole & (ref_left < 0.5)).sum() > 0.8 * hole.sum(), t
        # (On this small frame the region's flows lose up to ~1.5 dB against whole-frame ones;
        # at 1080p, python -m warpcore.bench.crop --propagate 8 measures the difference.)
        assert _psnr(out[filled], plates[t][filled]) > 25.0, t
        assert _psnr(ref[filled], plates[t][filled]) > 25.0, t
