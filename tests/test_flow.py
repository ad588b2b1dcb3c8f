"""Optical flow: estimation on real photographs, composition, occlusion, grids, mask fill."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from warpcore.errors import InvalidInput, ModelNotFound
from warpcore.flow import (
    FLOW_METHODS,
    coherence_mask,
    compose,
    estimate_flow,
    fill_masked,
    flow_pair,
    mismatch,
    motion_boundary,
    occlusion_mask,
    photometric_mask,
    raft_available,
    resize_flow,
    to_model_grid,
    valid_mask,
    validate_flow,
    warp,
)
from warpcore.request import FLOW_METHODS as REQUEST_FLOW_METHODS

MARGIN = 24  # interior: DIS is unreliable within a patch or two of the border


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 256x256 crop of a real photograph (textured face, flat background), (H, W, 3)."""
    return np.ascontiguousarray(data.astronaut()[16:272, 128:384].astype(np.float32) / 255.0)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def _epe(flow: torch.Tensor, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    e = np.sqrt((flow[0].numpy() - gx) ** 2 + (flow[1].numpy() - gy) ** 2)
    return e[MARGIN:-MARGIN, MARGIN:-MARGIN]


def test_methods_match_request() -> None:
    assert FLOW_METHODS == REQUEST_FLOW_METHODS


def test_dis_recovers_subpixel_translation(photo: np.ndarray) -> None:
    h, w = photo.shape[:2]
    xs, ys = _grid(h, w)
    dx, dy = 2.3, -1.7
    # a(x) = b(x + d)  <=>  b(y) = a(y - d): an exact (bicubic) resampling.
    b = cv2.remap(photo, xs - dx, ys - dy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    flow = estimate_flow(photo, b, "dis")
    assert flow.shape == (2, h, w) and flow.dtype == torch.float32
    e = _epe(flow, np.full_like(xs, dx), np.full_like(ys, dy))
    # Measured: mean 0.069 px, median 0.068 px on this crop.
    assert e.mean() < 0.15 and np.median(e) < 0.08
    # Torch (3, H, W) input gives the same flow.
    flow_t = estimate_flow(torch.from_numpy(photo).permute(2, 0, 1), b, "dis")
    assert torch.equal(flow, flow_t)


def test_dis_recovers_zoom(photo: np.ndarray) -> None:
    h, w = photo.shape[:2]
    xs, ys = _grid(h, w)
    s, cx, cy = 1.03, (w - 1) / 2, (h - 1) / 2
    # Point p of a moves to c + s (p - c) in b, so b(q) = a(c + (q - c) / s).
    b = cv2.remap(photo, cx + (xs - cx) / s, cy + (ys - cy) / s, cv2.INTER_CUBIC)
    flow = estimate_flow(photo, b, "dis")
    e = _epe(flow, (s - 1) * (xs - cx), (s - 1) * (ys - cy))
    # Measured: mean 0.095 px, median 0.078 (true motion up to 3.1 px at interior corners).
    assert e.mean() < 0.2 and np.median(e) < 0.12


@pytest.mark.parametrize("method", ["dis-fast", "dis-ultrafast", "farneback"])
def test_other_methods_integer_shift(photo: np.ndarray, method: str) -> None:
    b = np.roll(photo, (2, -3), axis=(0, 1))  # b(y) = a(y - (-3, 2)): flow (-3, 2)
    flow = estimate_flow(photo, b, method)
    e = _epe(flow, np.full(photo.shape[:2], -3.0), np.full(photo.shape[:2], 2.0))
    assert np.median(e) < 0.25


def test_flow_pair_directions(photo: np.ndarray) -> None:
    b = np.roll(photo, 4, axis=1)
    fwd, bwd = flow_pair(photo, b, "dis-fast")
    inner = (slice(None), slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    assert fwd[0][inner[1:]].median() == pytest.approx(4.0, abs=0.05)
    assert bwd[0][inner[1:]].median() == pytest.approx(-4.0, abs=0.05)


def test_raft_missing_is_a_clear_error(photo: np.ndarray) -> None:
    if raft_available() is None:
        pytest.skip("RAFT is installed here")
    with pytest.raises(ModelNotFound, match="torchvision|weights"):
        estimate_flow(photo, photo, "raft")


def test_compose_matches_analytic_composition() -> None:
    h, w = 48, 64
    xs, ys = (torch.from_numpy(g) for g in _grid(h, w))
    f_ab = torch.stack((1.5 + 0.8 * torch.sin(ys / 9), -0.7 + 0.5 * torch.cos(xs / 11)))

    def f_bc_at(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack((0.6 * torch.cos(y / 13) - 1.1, 0.9 + 0.4 * torch.sin(x / 7)))

    f_bc = f_bc_at(xs, ys)
    direct = f_ab + f_bc_at(xs + f_ab[0], ys + f_ab[1])
    got = compose(f_ab, f_bc)
    inner = (slice(None), slice(4, -4), slice(4, -4))
    # Bilinear sampling of a smooth flow: error ~ curvature / 8 < 0.01 px.
    assert (got - direct)[inner].abs().max() < 0.01
    # And warping through the composition equals warping twice (smooth image, interior).
    img = torch.stack((torch.sin(xs / 5) * torch.cos(ys / 7),)).float()
    twice = warp(warp(img, f_bc)[0], f_ab)[0]
    once = warp(img, got)[0]
    assert (twice - once)[inner].abs().max() < 0.02


def _square_scene(shift: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """A photograph background with a textured 40x40 square that moves ``shift`` px right."""
    rng = np.random.default_rng(0)
    bg = data.chelsea()[50:178, 150:310].astype(np.float32) / 255.0  # 128x160 of cat fur
    patch = cv2.GaussianBlur(rng.random((40, 40, 3)).astype(np.float32), (0, 0), 1.0)
    y0, x0, s = 44, 50, 40
    a, b = bg.copy(), bg.copy()
    a[y0 : y0 + s, x0 : x0 + s] = patch
    b[y0 : y0 + s, x0 + shift : x0 + shift + s] = patch
    return a, b, (y0, x0, s)


def test_occlusion_mask_exact_flows() -> None:
    shift = 6
    a, _b, (y0, x0, s) = _square_scene(shift)
    h, w = a.shape[:2]
    fwd = torch.zeros(2, h, w)
    fwd[0, y0 : y0 + s, x0 : x0 + s] = shift
    bwd = torch.zeros(2, h, w)
    bwd[0, y0 : y0 + s, x0 + shift : x0 + shift + s] = -shift
    m = occlusion_mask(fwd, bwd)
    assert m.shape == (1, h, w)
    band = m[0, y0 + 1 : y0 + s - 1, x0 + s : x0 + s + shift]  # background the square covers
    assert band.sum() == 0
    assert m[0, :30, :].min() == 1  # static background away from the square
    assert m[0, y0 + 2 : y0 + s - 2, x0 + 2 : x0 + s - 2].min() == 1  # the moving square
    # Pixels whose forward flow leaves the frame are invalid too.
    out = torch.zeros(2, h, w)
    out[0] = 3.0
    assert occlusion_mask(out, -out)[0, :, -3:].sum() == 0


def test_photometric_mask_keeps_a_right_flow_and_drops_a_wrong_one() -> None:
    """Frame b is frame a moved 5 px right (a real photograph): the right flow passes every
    pixel (those whose sample leaves frame b are the occlusion mask's to judge, and do not
    spread into their neighbours); no flow fails the textured pixels, which the forward-backward
    check cannot see (zero flow both ways is consistent); pixels that either frame does not know
    pass whatever the flow. The bound scales with the texture: a flow half a pixel off passes
    (at the default tolerance of one pixel), five pixels off passes only at a tolerance of 8."""
    img = torch.from_numpy(data.astronaut()[100:196, 150:278].astype(np.float32) / 255)
    img = img.permute(2, 0, 1).contiguous()
    a, b = img[:, :, 5:], img[:, :, :-5]  # b(x + 5) = a(x)
    h, w = a.shape[-2:]
    right = torch.zeros(2, h, w)
    right[0] = 5.0
    keep = photometric_mask(a, b, right)
    assert keep.shape == (1, h, w)
    assert keep.min() == 1
    assert photometric_mask(a, b, right + 0.5).mean() > 0.9  # half a pixel off still guides
    wrong = torch.zeros(2, h, w)
    assert occlusion_mask(wrong, wrong).mean() == 1
    dropped = photometric_mask(a, b, wrong)
    assert dropped.mean() < 0.3, dropped.mean()
    known = torch.ones(1, h, w)
    known[:, 20:60, 30:90] = 0  # a hole in either frame
    holed = photometric_mask(a, b, wrong, known=known)
    assert holed[0, 20:60, 30:90].min() == 1
    assert torch.equal(holed[0, :20], dropped[0, :20])
    assert photometric_mask(a, b, wrong, shift_px=8.0).mean() > 0.9  # 5 px off: within 8


def test_mismatch_is_the_mean_over_the_samples_that_land_inside() -> None:
    """b = a + 0.1 and a flow that sends the right half of the frame out of b: every pixel
    whose box holds one inside sample reads exactly 0.1 (not diluted by the samples that leave,
    nor by the frame's edge); a box with none reads 0. The photometric check and the camera's
    per-pixel choice both compare these means."""
    a = torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(0))
    flow = torch.zeros(2, 24, 32)
    flow[0, :, 16:] = 40.0
    got = mismatch(a, a + 0.1, flow)
    assert got.shape == (24, 32)
    torch.testing.assert_close(got[:, :18], torch.full((24, 18), 0.1), atol=1e-5, rtol=0)
    assert got[:, 19:].abs().max() < 1e-6


def test_coherence_mask_keeps_a_coherent_flow_and_drops_a_scattered_one() -> None:
    """A fast pan (30 px, a gentle gradient across the frame) with DIS-like jitter of 0.3 px
    passes whatever its size; the same pan scattered by 0.6 px RMS or more does not (a bound
    that grew with the flow, like the motion-boundary test's, would pass it); a clean motion
    edge costs only the pixels within the box of it."""
    gen = torch.Generator().manual_seed(0)
    h, w = 64, 96
    pan = torch.zeros(2, h, w)
    pan[0] = 30.0 + torch.linspace(0, 2, w)[None, :]  # 2 px over the frame: smooth
    pan[1] = -4.0

    def jitter(rms: float) -> torch.Tensor:  # per-pixel noise with this RMS vector length
        return torch.randn(2, h, w, generator=gen) * rms / math.sqrt(2)

    assert coherence_mask(pan).min() == 1
    assert coherence_mask(pan + jitter(0.3)).mean() > 0.98
    assert coherence_mask(pan + jitter(0.6)).mean() < 0.2
    assert coherence_mask(pan + jitter(3.0)).max() == 0  # running_car's car: 13 px
    edge = pan.clone()
    edge[:, :, 48:] = 0.0  # a still background beside the pan
    kept = coherence_mask(edge)[0]
    assert kept[:, :46].min() == 1 and kept[:, 50:].min() == 1  # two pixels each side of it
    assert kept[:, 46:50].max() == 0
    assert coherence_mask(pan + jitter(0.6), spread_px=1.0).mean() > 0.98  # the bound is its own
    # a 2000 px pan with the same 0.3 px jitter: the spread is not lost to rounding (float32
    # moments read 1.5 px^2 of spread at 2000 px where there is none)
    assert coherence_mask(pan + 1970.0 + jitter(0.3)).mean() > 0.98
    with pytest.raises(InvalidInput, match="flow"):
        coherence_mask(torch.zeros(3, h, w))


def test_occlusion_mask_estimated_flows() -> None:
    shift = 6
    a, b, (y0, x0, s) = _square_scene(shift)
    fwd, bwd = flow_pair(a, b, "dis")
    m = occlusion_mask(fwd, bwd)[0]
    band = m[y0 + 4 : y0 + s - 4, x0 + s : x0 + s + shift]
    assert band.mean() < 0.2  # measured 0.03: the covered band is found
    far = m[8:36, 8:-8]
    assert far.mean() > 0.97  # measured 0.994: static background stays valid


def test_motion_boundary_and_valid_mask() -> None:
    f = torch.zeros(2, 16, 16)
    f[0, :, 8:] = 2.0
    mb = motion_boundary(f)[0]
    assert mb[:, 7].all() and not mb[:, :6].any() and not mb[:, 9:].any()
    v = valid_mask(f)[0]
    assert v[:, :8].all() and v[:, 14:].sum() == 0 and v[:, 8:14].all()


def test_to_model_grid_constant_and_block_average() -> None:
    f = torch.empty(2, 32, 48)
    f[0], f[1] = 8.0, -4.0
    g = to_model_grid(f, 8)
    assert g.shape == (2, 4, 6)
    assert torch.allclose(g[0], torch.ones(4, 6)) and torch.allclose(g[1], torch.full((4, 6), -0.5))
    r = torch.arange(16.0).view(1, 4, 4).repeat(2, 1, 1)
    assert to_model_grid(r, 2)[0, 0, 0].item() == pytest.approx((0 + 1 + 4 + 5) / 4 / 2)
    with pytest.raises(InvalidInput, match="divisible by factor 8"):
        to_model_grid(torch.zeros(2, 30, 48), 8)
    with pytest.raises(InvalidInput, match="factor"):
        to_model_grid(f, 0)


def test_resize_flow_scales_displacements() -> None:
    f = torch.empty(2, 8, 10)
    f[0], f[1] = 1.0, 2.0
    r = resize_flow(f, (32, 20))
    assert r.shape == (2, 32, 20)
    assert torch.allclose(r[0], torch.full((32, 20), 2.0))
    assert torch.allclose(r[1], torch.full((32, 20), 8.0))


def test_fill_masked_reproduces_linear_field_exactly() -> None:
    h, w = 40, 50
    xs, ys = (torch.from_numpy(g) for g in _grid(h, w))
    f = torch.stack((0.1 * xs - 2, 0.05 * ys + 0.02 * xs))
    mask = torch.zeros(h, w)
    mask[10:30, 15:35] = 1
    broken = f.clone()
    broken[:, 10:30, 15:35] = 100.0
    filled = fill_masked(broken, mask)
    assert torch.allclose(filled, f, atol=1e-4)  # harmonic functions are filled exactly
    assert torch.allclose(fill_masked(broken, mask[None].numpy()), f, atol=1e-4)


def test_fill_masked_large_hole_coarse_solve_matches_exact(monkeypatch) -> None:
    """A hole above COARSE_ABOVE unknowns is solved on a coarser grid: same fill within 0.02 px
    on a smooth field (a zoom, a rotation and slow waves), and the camera motion exactly."""
    import warpcore.flow as flowlib

    h, w = 260, 300
    xs, ys = (torch.from_numpy(g) for g in _grid(h, w))
    f = torch.stack((0.01 * xs - 0.02 * ys + 0.3 * torch.sin(ys / 40), 0.02 * xs + 0.01 * ys))
    mask = torch.zeros(h, w)
    mask[30:250, 40:270] = 1  # 50600 unknowns
    broken = f.clone()
    broken[:, 30:250, 40:270] = 50.0
    coarse = fill_masked(broken, mask)
    monkeypatch.setattr(flowlib, "COARSE_ABOVE", 10**9)
    exact = fill_masked(broken, mask)
    assert (coarse - exact).abs().max() < 0.02
    assert torch.equal(coarse[:, mask == 0], f[:, mask == 0])  # known flow untouched


def test_fill_masked_removes_object_motion() -> None:
    a, b, (y0, x0, s) = _square_scene(6)
    fwd = estimate_flow(a, b, "dis")
    mask = np.zeros(a.shape[:2], np.float32)
    mask[y0 : y0 + s, x0 : x0 + s] = 1
    assert fwd[0, y0 + 8 : y0 + s - 8, x0 + 8 : x0 + s - 8].mean() > 5  # the object moves
    filled = fill_masked(fwd, mask, dilate=6)
    inside = filled[:, y0 : y0 + s, x0 : x0 + s]
    assert inside.abs().mean() < 0.3  # the clean plate follows the static background


def test_fill_masked_border_and_full_masks() -> None:
    f = torch.zeros(2, 20, 30)
    f[0], f[1] = 1.5, -0.5
    mask = torch.zeros(20, 30)
    mask[:, :10] = 1  # touches three borders
    broken = f.clone()
    broken[:, :, :10] = 9.0
    assert torch.allclose(fill_masked(broken, mask), f, atol=1e-5)
    assert torch.equal(fill_masked(broken, torch.ones(20, 30)), torch.zeros(2, 20, 30))
    assert torch.equal(fill_masked(broken, torch.zeros(20, 30)), broken)


def test_bad_inputs(photo: np.ndarray) -> None:
    with pytest.raises(InvalidInput, match="method"):
        estimate_flow(photo, photo, "lucas-kanade")
    with pytest.raises(InvalidInput, match="differ in size"):
        estimate_flow(photo, photo[:100], "dis")
    with pytest.raises(InvalidInput, match="NaN"):
        estimate_flow(photo, np.full_like(photo, np.nan), "dis")
    with pytest.raises(InvalidInput, match="empty"):
        estimate_flow(photo[:0], photo[:0], "dis")
    with pytest.raises(InvalidInput, match=r"\(3, H, W\)"):
        estimate_flow(torch.zeros(2, 8, 8), photo, "dis")
    with pytest.raises(InvalidInput, match="dtype"):
        estimate_flow((photo * 255).astype(np.uint8), photo, "dis")
    with pytest.raises(InvalidInput, match=r"\(2, H, W\)"):
        validate_flow(torch.zeros(3, 4, 4))
    with pytest.raises(InvalidInput, match="floating"):
        validate_flow(torch.zeros(2, 4, 4, dtype=torch.int32))
    with pytest.raises(InvalidInput, match="finite"):
        validate_flow(torch.full((2, 4, 4), float("inf")))
    with pytest.raises(InvalidInput, match="expected size"):
        validate_flow(torch.zeros(2, 4, 4), "flow", (4, 5))
    with pytest.raises(InvalidInput, match="backward"):
        occlusion_mask(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    with pytest.raises(InvalidInput, match="mask"):
        fill_masked(torch.zeros(2, 4, 4), torch.zeros(5, 4))
    with pytest.raises(InvalidInput, match="dilate"):
        fill_masked(torch.zeros(2, 4, 4), torch.zeros(4, 4), dilate=-1)
