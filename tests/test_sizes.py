"""Crop inpainting at real sizes (warpcore.crops): exact outside, stable window, scene noise."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from warpcore.crops import CropGPWarper, CropPlanner, Window
from warpcore.models import load_denoiser
from warpcore.request import RestoreRequest
from warpcore.restore import ClipRestorer, restore_clip
from warpcore.tiles import TiledDenoiser, tile_plan
from warpcore.warps import make_warper


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)


def _box(h: int, w: int, y: int, x: int, side: int) -> np.ndarray:
    m = np.zeros((h, w), np.float32)
    m[y : y + side, x : x + side] = 1.0
    return m


@pytest.fixture(scope="module")
def builtin():
    return load_denoiser("builtin", "inpaint")


def test_1080p_inpaint_touches_only_the_hole_inside_a_small_window(builtin):
    h, w = 1080, 1920
    scene = _texture(h, w + 16)
    frames = [np.ascontiguousarray(scene[:, 4 * j : 4 * j + w]) for j in range(2)]
    masks = [_box(h, w, 500, 900 + 6 * j, 16) for j in range(2)]
    request = RestoreRequest(task="inpaint", propagate=0, steps=2, flow="dis-ultrafast")
    restorer = ClipRestorer(request, builtin, (h, w), 2)
    outs = [restorer.process(j, f, m) for j, (f, m) in enumerate(zip(frames, masks, strict=True))]
    crop = restorer._crop
    assert crop is not None and crop.whole is False
    win = crop.window
    assert win.h * win.w < 0.05 * h * w  # the model saw a window, not the frame
    assert crop.inner.in_size == (win.h, win.w)  # built-in model: frame pixel scale
    for out, frame, mask in zip(outs, frames, masks, strict=True):
        assert out.shape == (h, w, 3) and out.dtype == np.float32
        outside = np.ones((h, w), bool)
        outside[win.slices()] = False
        np.testing.assert_array_equal(out[outside], frame[outside])  # bit-identical
        keep = mask == 0
        np.testing.assert_array_equal(out[keep], frame[keep])
        assert np.abs(out - frame)[mask > 0].mean() > 1e-3  # the hole was generated


def test_window_is_stable_while_an_object_moves():
    h, w = 540, 960
    planner = CropPlanner((h, w))
    rng = np.random.default_rng(1)
    windows = []
    for j in range(30):  # 3 px per frame to the right, with +-2 px mask jitter
        y, x = 200 + int(rng.integers(-2, 3)), 300 + 3 * j + int(rng.integers(-2, 3))
        mask = _box(h, w, y, x, 40)
        win = planner.update(mask)
        box = planner.required(mask)
        assert win.contains(*box), j  # the hole and its context are always inside
        windows.append(win)
    sizes = {(v.h, v.w) for v in windows}
    assert len(sizes) == 1  # never resized
    moves = sum(a != b for a, b in zip(windows, windows[1:], strict=False))
    assert moves <= 8  # it stays put through most frames (a per-frame box would move 29 times)
    # Jitter alone never moves it.
    still = CropPlanner((h, w))
    first = still.update(_box(h, w, 200, 300, 40))
    for _ in range(20):
        dy, dx = rng.integers(-2, 3, size=2)
        assert still.update(_box(h, w, 200 + int(dy), 300 + int(dx), 40)) == first


def test_window_grows_when_the_hole_does_and_stays_in_the_frame():
    planner = CropPlanner((300, 400))
    small = planner.update(_box(300, 400, 10, 10, 20))
    assert small.y0 == 0 and small.x0 == 0  # clamped to the frame
    big = planner.update(_box(300, 400, 100, 100, 150))
    assert big.h > small.h and big.w > small.w
    assert big.y0 >= 0 and big.x0 >= 0 and big.y0 + big.h <= 300 and big.x0 + big.w <= 400


def test_crop_noise_is_the_frame_field_at_the_crop_pixels():
    # The crop's noise equals the whole frame's GP noise (same seed, same scale) on its pixels,
    # also after the window moved over a static scene.
    full = make_warper("gp", 3, 96, 128, seed=5).first()
    warper = CropGPWarper(3, (32, 48), (96, 128), (16.0, 40.0), 5, "cpu")
    first = warper.first()
    np.testing.assert_allclose(first.numpy(), full[:, 16:48, 40:88].numpy(), atol=2e-4)
    # Next frame: window moved by (dy, dx) = (3, -7); a static scene's flows in crop
    # coordinates are the offsets themselves.
    backward = torch.zeros(2, 32, 48)
    backward[0], backward[1] = -7.0, 3.0
    moved = warper.next(-backward, backward)
    np.testing.assert_allclose(moved.numpy(), full[:, 19:51, 33:81].numpy(), atol=2e-4)


def test_moving_window_keeps_the_noise_on_the_scene(builtin):
    # A static scene, the hole jumping so the window moves: the inner warper's noise at every
    # frame is the frame-0 field at the window's pixels (zero plate flow).
    h, w = 256, 320
    frame = _texture(h, w)
    masks = [_box(h, w, 100, 40 + 60 * j, 16) for j in range(3)]
    zero = torch.zeros(2, h, w)
    request = RestoreRequest(task="inpaint", propagate=0, steps=1, guidance=0.0)
    restorer = ClipRestorer(request, builtin, (h, w), 3, flow_fn=lambda j, a, b: (zero, zero))
    full = make_warper("gp", 3, h, w, seed=0).first()
    positions = set()
    for j, m in enumerate(masks):
        restorer.process(j, frame, m)
        crop = restorer._crop
        win = crop.window
        positions.add((win.y0, win.x0))
        noise = crop.inner.warper._noise()
        np.testing.assert_allclose(
            noise.numpy(), full[:, win.slices()[0], win.slices()[1]].numpy(), atol=2e-4
        )
    assert len(positions) > 1  # the window did move


def test_resume_mid_shot_gives_the_same_frames(builtin):
    h, w = 256, 320
    scene = _texture(h, w + 12)
    frames = [np.ascontiguousarray(scene[:, 4 * j : 4 * j + w]) for j in range(3)]
    masks = [_box(h, w, 100, 120 + 5 * j, 20) for j in range(3)]
    request = RestoreRequest(task="inpaint", propagate=0, steps=2, flow="dis-ultrafast")
    straight = dict(restore_clip(request, builtin, frames, masks))
    first = ClipRestorer(request, builtin, (h, w), 3)
    first.process(0, frames[0], masks[0])
    first.process(1, frames[1], masks[1])
    state = first.state_dict()
    resumed = ClipRestorer(request, builtin, (h, w), 3)
    resumed.load_state_dict(state)
    assert resumed._crop.whole is False
    np.testing.assert_array_equal(resumed.process(2, frames[2], masks[2]), straight[2])


def test_small_frames_run_whole_as_before(builtin):
    # A window that would cover most of the frame: the shot runs whole-frame, same as crop=False.
    h, w = 48, 64
    frames = [_texture(h, w, s) for s in range(2)]
    masks = [_box(h, w, 16, 20, 12) for _ in range(2)]
    request = RestoreRequest(task="inpaint", propagate=0, steps=2, flow="dis-ultrafast")
    a = dict(restore_clip(request, builtin, frames, masks))
    b = dict(restore_clip(replace(request, crop=False), builtin, frames, masks))
    for j in range(2):
        np.testing.assert_array_equal(a[j], b[j])


def test_window_type_reports_its_slices():
    win = Window(3, 5, 10, 20)
    ys, xs = win.slices()
    assert (ys.start, ys.stop, xs.start, xs.stop) == (3, 13, 5, 25)


def test_tiny_sdxl_1080p_inpaint_leaves_everything_outside_the_crop_as_it_was(tiny_sdxl_dirs):
    """The real diffusers classes at 1920x1080: the window goes to the model resized to its
    working scale, with the frame's GP field at its pixels; every pixel outside the window,
    and outside the hole, is the input's, and the hole is generated."""
    model = load_denoiser(str(tiny_sdxl_dirs[9]), "inpaint")
    model.native_pixels = 64 * 64  # the tiny model's "training size"
    h, w = 1080, 1920
    scene = _texture(h, w + 8)
    frames = [np.ascontiguousarray(scene[:, 4 * j : 4 * j + w]) for j in range(2)]
    masks = [_box(h, w, 600, 1200 + 5 * j, 24) for j in range(2)]
    request = RestoreRequest(
        task="inpaint", model="sdxl", propagate=0, steps=2, prompt="a wall", flow="dis-ultrafast"
    )
    restorer = ClipRestorer(request, model, (h, w), 2)
    outs = [restorer.process(j, f, m) for j, (f, m) in enumerate(zip(frames, masks, strict=True))]
    crop = restorer._crop
    assert crop.whole is False and crop.scale < 1.0 and crop.inner.in_size == (64, 64)
    assert isinstance(crop.inner.warper, CropGPWarper)
    win = crop.window
    assert win.h * win.w < 0.02 * h * w
    for out, frame, mask in zip(outs, frames, masks, strict=True):
        outside = np.ones((h, w), bool)
        outside[win.slices()] = False
        np.testing.assert_array_equal(out[outside], frame[outside])
        np.testing.assert_array_equal(out[mask == 0], frame[mask == 0])
        assert np.isfinite(out).all() and np.abs(out - frame)[mask > 0].mean() > 1e-3


def test_window_stays_put_through_a_shot_with_a_moving_object(builtin):
    """End to end: an object crossing the frame 4 px a frame; the restorer's window keeps its
    size and place all shot (a window hugging the padded hole would move every few frames),
    and always holds the hole and its context."""
    h, w, n = 160, 512, 6
    scene = _texture(h, w + 2 * n)
    frames = [np.ascontiguousarray(scene[:, 2 * j : 2 * j + w]) for j in range(n)]
    masks = [_box(h, w, 60, 200 + 4 * j, 40) for j in range(n)]
    request = RestoreRequest(task="inpaint", propagate=0, steps=1, flow="dis-ultrafast")
    restorer = ClipRestorer(request, builtin, (h, w), n)
    windows = []
    for j, (frame, mask) in enumerate(zip(frames, masks, strict=True)):
        restorer.process(j, frame, mask)
        win = restorer._crop.window
        assert win.contains(*restorer._crop.planner.required(mask)), j
        windows.append(win)
    assert restorer._crop.whole is False
    assert len(set(windows)) == 1, windows


def test_a_hole_larger_than_a_tile_is_filled_through_tiles_without_seams(builtin):
    """A hole wider than the model's tile: the window's restorer runs the model in blended
    tiles; the whole hole is generated (no trace of the object), and where the tiles meet the
    output changes no faster than inside them."""
    h, w = 160, 640
    frame = _texture(h, w)
    mask = _box(h, w, 40, 300, 80)
    frame[mask > 0] = (1.0, 0.0, 1.0)  # the object: magenta
    request = RestoreRequest(task="inpaint", propagate=0, steps=2, tile=64, guidance=0.0)
    outs = {}
    for tile in (0, 64):
        restorer = ClipRestorer(replace(request, tile=tile), builtin, (h, w), 1)
        outs[tile] = restorer.process(0, frame, mask)
        crop = restorer._crop
        assert crop.whole is False and crop.window.w > 64
        assert isinstance(crop.inner.denoiser, TiledDenoiser) == bool(tile)
    win = crop.window
    out = outs[64]
    hole = mask > 0
    np.testing.assert_array_equal(out[~hole], frame[~hole])
    magenta = np.abs(out - np.float32([1.0, 0.0, 1.0])).sum(axis=2)
    assert magenta[hole].min() > 0.3  # every hole pixel was generated
    # Tile edges (columns, frame pixels) inside the hole; jumps of the difference to the
    # untiled run across them, against jumps inside tiles.
    tiles = tile_plan((win.h, win.w), 64, 16, 1)
    edges = sorted({win.x0 + e - 1 for t in tiles for e in (t.x0, t.x1) if 0 < e < win.w})
    edges = [e for e in edges if 302 <= e < 378]
    assert len(edges) >= 2
    diff = (out - outs[0])[42:118, 300:380]
    jumps = np.abs(np.diff(diff, axis=1)).mean(axis=(0, 2))
    at = [e - 300 for e in edges]
    inside = np.delete(jumps, at)
    assert jumps[at].max() <= 1.5 * np.percentile(inside, 90), (jumps[at], inside)


def test_crop_takes_the_regional_flows_propagation_estimated(builtin, monkeypatch):
    """With propagation, each frame pair's plate flows are estimated once, on a region around
    the holes (not the frame), and the crop's window flows are sliced from them."""
    from warpcore import flow as flowlib

    sizes: list[tuple[int, int]] = []
    real = flowlib.plate_flow_pair

    def counted(a, *args, **kwargs):
        sizes.append(tuple(np.shape(a)[:2]))
        return real(a, *args, **kwargs)

    monkeypatch.setattr(flowlib, "plate_flow_pair", counted)
    h, w, n = 160, 800, 3
    scene = _texture(h, w + 4 * n)
    frames = [np.ascontiguousarray(scene[:, 4 * j : 4 * j + w]) for j in range(n)]
    masks = [_box(h, w, 70, 380 + 6 * j, 12) for j in range(n)]
    request = RestoreRequest(task="inpaint", propagate=2, steps=2, flow="dis-ultrafast")
    outs = dict(restore_clip(request, builtin, frames, masks))
    assert len(sizes) == n - 1  # one estimate per pair: propagation's, reused by the crop
    assert all(a * b < 0.5 * h * w for a, b in sizes)
    for j in range(n):
        keep = masks[j] == 0
        np.testing.assert_array_equal(outs[j][keep], frames[j][keep])
