"""Noise warping schemes: distribution, exactness on shifts, resumable state, validation."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from scipy import stats

from warpcore.errors import InvalidInput
from warpcore.flow import warp
from warpcore.noise import GPNoise, nufft_available
from warpcore.request import NOISE_SCHEMES
from warpcore.warps import SCHEMES, make_warper

H = W = 48


def rotate_zoom(h: int, w: int, angle: float, zoom: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact (forward, backward) flows of x -> c + zoom R(angle) (x - c) about the centre c."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    cx, cy = (w - 1) / 2, (h - 1) / 2

    def move(a: float, s: float) -> torch.Tensor:
        dx, dy = xs - cx, ys - cy
        x = cx + s * (math.cos(a) * dx - math.sin(a) * dy)
        y = cy + s * (math.sin(a) * dx + math.cos(a) * dy)
        return torch.stack((x - xs, y - ys)).float()

    return move(angle, zoom), move(-angle, 1.0 / zoom)


def shift(h: int, w: int, dx: float, dy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward, backward) flows of a pure translation by (dx, dy) pixels."""
    f = torch.tensor([dx, dy], dtype=torch.float32)[:, None, None].expand(2, h, w)
    return f.clone(), (-f).clone()


def morans_i(x: torch.Tensor) -> tuple[float, float, float]:
    """Moran's I of a 2-D field with rook neighbours, its null mean and sd (normality)."""
    x = x.double() - x.double().mean()
    h, w = x.shape
    n = h * w
    pairs = (x[1:] * x[:-1]).sum() + (x[:, 1:] * x[:, :-1]).sum()
    edges = (h - 1) * w + h * (w - 1)
    s0 = 2.0 * edges
    i = (n / s0) * 2.0 * pairs / (x * x).sum()
    deg = torch.full((h, w), 4.0, dtype=torch.float64)
    deg[0] -= 1
    deg[-1] -= 1
    deg[:, 0] -= 1
    deg[:, -1] -= 1
    s1, s2 = 2.0 * s0, float((4.0 * deg**2).sum())
    mean = -1.0 / (n - 1)
    var = (n * n * s1 - n * s2 + 3 * s0 * s0) / ((n * n - 1) * s0 * s0) - mean * mean
    return float(i), mean, math.sqrt(var)


def run(scheme: str, flows: tuple[torch.Tensor, torch.Tensor], frames: int, **kw: object) -> list:
    wp = make_warper(scheme, 4, H, W, seed=7, **kw)
    out = [wp.first()]
    out += [wp.next(*flows) for _ in range(frames)]
    return out


def test_schemes_match_the_request() -> None:
    assert set(SCHEMES) == set(NOISE_SCHEMES)


def test_integral_keeps_white_noise_white_under_rotation_and_zoom() -> None:
    frames = run("integral", rotate_zoom(H, W, math.radians(2.0), 1.02), 30)
    last = frames[-1]
    for ch in last:
        # Deterministic seed: a correct warp fails a 0.1% level only by a 1-in-1000 accident.
        assert stats.kstest(ch.flatten().numpy(), "norm").pvalue > 1e-3
        i, mean, sd = morans_i(ch)
        assert abs(i - mean) < 5 * sd, (i, mean, sd)  # sd ~0.015 at 48x48
    # It warps: correlated with the previous frame carried along the flow (fresh noise would
    # give ~0 +- 0.01 here; measured ~0.6).
    prev, cur = frames[-2], frames[-1]
    carried, valid = warp(prev, rotate_zoom(H, W, math.radians(2.0), 1.02)[1], mode="nearest")
    keep = valid[0] > 0
    r = torch.corrcoef(torch.stack((carried[:, keep].flatten(), cur[:, keep].flatten())))[0, 1]
    assert r > 0.4


def test_bilinear_blurs_the_same_motion_so_the_moran_test_has_power() -> None:
    last = run("bilinear", rotate_zoom(H, W, math.radians(2.0), 1.02), 30)[-1]
    i, mean, sd = morans_i(last[0])
    assert i - mean > 10 * sd


def test_integral_integer_shift_copies_and_half_pixel_mixes() -> None:
    wp = make_warper("integral", 4, H, W, seed=1)
    x0 = wp.first()
    x1 = wp.next(*shift(H, W, 2.0, -1.0))
    assert torch.equal(x1[:, : H - 1, 2:], x0[:, 1:, : W - 2])
    x2 = wp.next(*shift(H, W, 0.5, 0.0))
    # Target q takes half of source q and half of source q - 1: correlation 0.5 with each
    # (sampling sd ~0.01 over 4 x 48 x 47 values: tolerance 0.06).
    a = torch.corrcoef(torch.stack((x2[..., 1:].flatten(), x1[..., 1:].flatten())))[0, 1]
    b = torch.corrcoef(torch.stack((x2[..., 1:].flatten(), x1[..., :-1].flatten())))[0, 1]
    assert abs(a - 0.5) < 0.06 and abs(b - 0.5) < 0.06
    assert abs(x2.var().item() - 1.0) < 0.06  # variance kept (bilinear would give 0.5)


def test_gp_on_integer_translation_reproduces_the_shifted_field() -> None:
    # Within 1e-5: float32 evaluations of float64-reduced phases agree to ~2e-6 (test_noise).
    frames = run("gp", shift(H, W, 3.0, -2.0), 3, gp_features=1000)
    field = GPNoise(channels=4, n_features=1000, res=(W, H), seed=7)
    for j, frame in enumerate(frames):
        expected = field.grid(H, W, origin=(-3.0 * j / W, 2.0 * j / H))
        assert (frame - expected).abs().max() < 1e-5
    assert (frames[1][:, : H - 2, 3:] - frames[0][:, 2:, : W - 3]).abs().max() < 1e-5


def test_nearest_integer_shift_is_exact_and_fresh_where_revealed() -> None:
    for scheme in ("nearest", "gp-nearest"):
        x0, x1 = run(scheme, shift(H, W, -2.0, 1.0), 1)
        assert torch.equal(x1[:, 1:, : W - 2], x0[:, :-1, 2:])
        assert not torch.equal(x1[:, 0], x0[:, 0])


def test_bilinear_halves_the_variance_on_a_half_pixel_shift() -> None:
    # Each output is the mean of two i.i.d. N(0,1) values: variance 0.5; sampling sd of the
    # variance over 4 x 48 x 47 values ~0.015, tolerance 0.06.
    x0, x1 = run("bilinear", shift(H, W, 0.5, 0.0), 1)
    assert abs(x1[..., :-1].var().item() - 0.5) < 0.06


def test_fixed_sticks_and_resample_is_fresh() -> None:
    f = run("fixed", shift(H, W, 1.0, 0.0), 2)
    assert torch.equal(f[0], f[2])
    r = run("resample", shift(H, W, 1.0, 0.0), 1)
    assert abs(torch.corrcoef(torch.stack((r[0].flatten(), r[1].flatten())))[0, 1]) < 0.05
    g = run("gp-resample", shift(H, W, 1.0, 0.0), 1)
    assert (g[0] - g[1]).abs().mean() > 0.5


@pytest.mark.parametrize("scheme", SCHEMES)
def test_restored_state_continues_bit_identically(scheme: str) -> None:
    flows = rotate_zoom(H, W, math.radians(1.5), 1.01)
    kw = {"gp_features": 256}
    a = make_warper(scheme, 4, H, W, seed=3, **kw)
    frames = [a.first()] + [a.next(*flows) for _ in range(3)]
    saved = a.state_dict()
    frames += [a.next(*flows) for _ in range(3)]
    b = make_warper(scheme, 4, H, W, seed=3, **kw)
    b.load_state_dict(saved)
    for expected in frames[4:]:
        assert torch.equal(b.next(*flows), expected)


@pytest.mark.parametrize(
    ("flow", "message"),
    [
        (torch.zeros(2, H, W + 1), "forward: expected shape"),
        (torch.zeros(3, H, W), "forward: expected shape"),
        (torch.zeros(2, H, W, dtype=torch.int64), "forward: expected a floating"),
        (torch.full((2, H, W), math.nan), "forward: expected finite"),
    ],
)
def test_bad_flows_raise(flow: torch.Tensor, message: str) -> None:
    wp = make_warper("integral", 4, H, W, seed=0)
    wp.first()
    with pytest.raises(InvalidInput, match=message):
        wp.next(flow, torch.zeros(2, H, W))
    bad_back = torch.zeros(2, H, W)
    bad_back[0, 3, 3] = math.inf
    with pytest.raises(InvalidInput, match="backward: expected finite"):
        wp.next(torch.zeros(2, H, W), bad_back)


def test_bad_arguments_raise() -> None:
    with pytest.raises(InvalidInput, match="scheme"):
        make_warper("warp-drive", 4, H, W, 0)
    with pytest.raises(InvalidInput, match="height"):
        make_warper("gp", 4, 0, W, 0)
    with pytest.raises(InvalidInput, match="n_features"):
        make_warper("gp", 4, H, W, 0, gp_features=0)
    with pytest.raises(InvalidInput, match="next"):
        make_warper("nearest", 4, H, W, 0).next(*shift(H, W, 1.0, 0.0))
    with pytest.raises(InvalidInput, match="state"):
        make_warper("gp", 4, H, W, 0).load_state_dict({"frame": torch.tensor(1)})


def test_noise_demo_writes_a_video_and_pngs(tmp_path: object) -> None:
    from warpcore.commands import noise_demo

    parser = argparse.ArgumentParser()
    noise_demo.add_arguments(parser)
    args = parser.parse_args(["-o", str(tmp_path), "--frames", "4", "--size", "32"])
    assert noise_demo.run(args) == 0
    video = tmp_path / "noise_schemes.mp4"
    pngs = sorted(tmp_path.glob("*.png"))
    assert video.stat().st_size > 2000
    assert len(pngs) == 4 and all(p.stat().st_size > 5000 for p in pngs)


@pytest.mark.skipif(not nufft_available(), reason="finufft is not installed")
def test_gp_warp_fast_path_matches_the_exact_evaluation() -> None:
    # 48 x 64 = 3072 points per frame take the FINUFFT path; after 20 frames of rotation + zoom
    # the back-mapped points are scattered off the grid. Within 2e-6 of the exact path (its own
    # float32 error ~1.5e-6, the NUFFT's ~2e-7: test_noise).
    h, w = 48, 64
    flows = rotate_zoom(h, w, math.radians(3.0), 0.98)
    wp = make_warper("gp", 4, h, w, seed=11, gp_features=1000)
    wp.first()
    for _ in range(20):
        frame = wp.next(*flows)
    scale = torch.tensor([1.0 / w, 1.0 / h], dtype=torch.float64)[:, None, None]
    coords = (wp._unit + wp.displacement * scale).permute(1, 2, 0)
    assert (frame - wp.field.at(coords, method="exact")).abs().max() < 2e-6
