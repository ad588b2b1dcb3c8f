"""Pins on the method's formulas: each test here failed on a one-line mutant that the rest of
the suite let through (issue 11). The mutant each one guards is named in its docstring."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import warpcore.metrics as metrics_module
from warpcore.guidance import EquivarianceGuidance
from warpcore.metrics import ClipScorer
from warpcore.noise import GPNoise
from warpcore.warps import make_warper


def test_noise_variance_is_one_at_every_point_across_seeds() -> None:
    """Mutant: the RFF phases ``b`` set to 0 (variance ~2 at the origin, ~1 elsewhere).

    The variance of one point over many seeds is exactly 1 for uniform phases; an average over
    space hides a point-dependent variance, so each point is checked on its own.
    """
    points = torch.tensor([[0.0, 0.0], [0.5, 0.5], [0.9, 0.1], [0.0, 1.0]], dtype=torch.float64)
    values = torch.stack(
        [
            GPNoise(channels=4, n_features=64, res=32, seed=s).at(points, method="exact")
            for s in range(400)
        ]
    )  # (seeds, C, points)
    var = values.double().pow(2).mean(dim=(0, 1))  # zero mean by construction
    # 1,600 samples per point: the variance's standard error is ~0.035 for a Gaussian field.
    assert torch.allclose(var, torch.ones_like(var), atol=0.15), var


def _rotation_zoom_back_map(h: int, w: int, angle: float, zoom: float) -> torch.Tensor:
    """The exact displacement Phi(x) - x of x -> c + R(angle) (x - c) / zoom, (2, H, W)."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    cx, cy = (w - 1) / 2, (h - 1) / 2
    dx, dy = xs - cx, ys - cy
    px = cx + (math.cos(angle) * dx - math.sin(angle) * dy) / zoom
    py = cy + (math.sin(angle) * dx + math.cos(angle) * dy) / zoom
    return torch.stack((px - xs, py - ys))


def test_gp_warp_composes_a_rotation_and_zoom_over_twenty_frames() -> None:
    """Mutant: the ``gp`` composition adds the new backward flow to the previous displacement
    without resampling it at the moved points (9 px off after 20 frames instead of ~0)."""
    h = w = 48
    angle, zoom, n = math.radians(3.0), 1.01, 20
    forward = _rotation_zoom_back_map(h, w, angle, 1.0 / zoom).float()  # one frame's motion
    backward = _rotation_zoom_back_map(h, w, -angle, zoom).float()  # and its inverse
    warper = make_warper("gp", 2, h, w, seed=3)
    warper.first()
    for _ in range(n):
        noise = warper.next(forward, backward)
    got = warper.state_dict()["displacement"]
    want = _rotation_zoom_back_map(h, w, -n * angle, zoom**n)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    radius = torch.hypot(xs - (w - 1) / 2, ys - (h - 1) / 2)
    inside = radius < 0.45 * h / zoom**n  # every intermediate point stayed in frame
    err = (got - want).pow(2).sum(0).sqrt()[inside]
    assert float(err.mean()) < 1e-3 and float(err.max()) < 1e-2, float(err.mean())
    # ... and the frame's noise is the one field evaluated at those composed points.
    unit = torch.stack(((xs + 0.5 + want[0]) / w, (ys + 0.5 + want[1]) / h), dim=-1)
    field = GPNoise(channels=2, seed=3, res=(w, h))
    expected = field.at(unit, method="exact")
    assert torch.allclose(noise[:, inside], expected[:, inside], atol=1e-3)


def test_guidance_pairs_each_step_with_the_same_step_of_the_previous_frame() -> None:
    """Mutant: ``previous[k]`` replaced by the previous frame's last estimate ``previous[-1]``
    (or its first): the error must be taken against step k's own estimate."""
    steps, c, h, w = 4, 3, 8, 8
    previous = torch.stack([torch.full((c, h, w), float(k)) for k in range(steps)])
    guidance = EquivarianceGuidance(
        strength=1.0,
        forward=torch.zeros(2, h, w),
        mask=torch.ones(1, h, w),
        previous=previous,
        active=frozenset(range(steps)),
        grad_mode="output",
    )
    current = torch.full((c, h, w), 1.5)
    for k in range(steps):
        want = (1.5 - k) ** 2 * c * h * w
        assert float(guidance.error(current, k)) == pytest.approx(want), k


def test_first_frame_warping_error_composes_flows_in_the_right_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mutant: ``compose(B_j, Phi_{j-1})`` swapped to ``compose(Phi_{j-1}, B_j)``.

    A 3-frame clip with two shears that do not commute (B_1 shears x by y, B_2 shears y by x)
    and given flows: Phi_2(x) = x + B_2(x) + B_1(x + B_2(x)) = (x + a y + a b x, y + b x).
    Output frame 2 is output frame 0 (a linear ramp, which bilinear sampling reproduces
    exactly) at Phi_2, plus 0.1: the answer is 0.1^2 = 0.01 exactly. The swapped order maps
    to (x + a y, y + b x + a b y), off by (a b x, -a b y) pixels.
    """
    h, w, a, b = 32, 32, 0.2, 0.15
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    zero = torch.zeros(h, w)
    back = {1: torch.stack((a * ys, zero)), 2: torch.stack((zero, b * xs))}  # B_j: j -> j-1
    calls = iter((1, 2))

    def given_flows(prev: object, cur: object, method: str) -> tuple[torch.Tensor, torch.Tensor]:
        bwd = back[next(calls)]
        return -bwd, bwd  # forward only feeds e_warp, not checked here

    monkeypatch.setattr(metrics_module, "flow_pair", given_flows)

    def ramp(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        img = torch.stack((x / w, y / h, 0.5 * (x + y) / (w + h)), dim=-1)
        return (0.2 + 0.5 * img).numpy()

    o0 = ramp(xs, ys)
    o1 = ramp(xs + a * ys, ys)  # frame 0 at x + B_1(x)
    o2 = ramp(xs + a * ys + a * b * xs, ys + b * xs) + 0.1
    inputs = [np.zeros((h, w, 3), np.float32)] * 3  # the flows are given
    scorer = ClipScorer()
    for out, inp in zip((o0, o1, o2), inputs, strict=True):
        scorer.add(out.astype(np.float32), inp)
    first = scorer.per_frame["warp_pixel_first"]
    assert first[1] == pytest.approx(0.0, abs=1e-10)
    assert first[2] == pytest.approx(0.01, rel=1e-3)


def _guidance(rule: str, strength: float = 1.0, active: frozenset[int] = frozenset({0})):
    c, h, w = 3, 8, 8
    return EquivarianceGuidance(
        strength=strength,
        forward=torch.zeros(2, h, w),  # a still frame: h_k o T_j is h_k itself
        mask=torch.ones(1, h, w),
        previous=torch.full((1, c, h, w), 0.5),
        active=active,
        grad_mode="output",
        rule=rule,  # type: ignore[arg-type]
    )


def test_guidance_applies_only_with_strength_on_active_steps() -> None:
    """Mutants: ``and`` -> ``or``; ``strength > 0`` -> ``>= 0``."""
    assert _guidance("dps").applies(0)
    assert not _guidance("dps").applies(1)  # not an active step
    assert not _guidance("dps", strength=0.0).applies(0)  # lambda = 0 is no guidance


def test_guidance_step_is_zero_without_error_and_acts_on_small_errors() -> None:
    """Mutants: ``value <= 0`` -> ``< 0`` (0 / 0) or ``<= 1`` (small errors ignored); the zero
    step's reported error."""
    for rule in ("dps", "newton"):
        g = _guidance(rule)
        x = torch.zeros(3, 8, 8)
        correction, e = g.step(x, torch.full((3, 8, 8), 0.5), 0, sigma=1.0)
        assert e == 0.0 and torch.count_nonzero(correction) == 0
        correction, e = g.step(x, torch.full((3, 8, 8), 0.55), 0, sigma=1.0)  # e = 0.48
        assert 0.0 < e < 1.0 and float(correction.abs().min()) > 0.0


@pytest.mark.parametrize("residual", [0.75, 0.01])
def test_newton_step_removes_the_whole_residual_inside_the_trust_region(residual: float) -> None:
    """With an identity Jacobian, lambda = 1 and |step| under the cap, the Gauss-Newton step
    is exactly the residual: 2 e / |grad|^2 grad = (h - prev). Mutants: the factor 2 -> 3,
    ``max(|grad|^2, 1e-30)`` -> ``max(.., 1)`` (|grad|^2 = 0.077 < 1 for residual 0.01), the cap
    ``min(1, ..)`` -> ``min(2, ..)`` (rms 0.75 is under the cap of 1, the ratio 1.33 < 2)."""
    g = _guidance("newton")
    denoised = torch.full((3, 8, 8), 0.5 + residual)
    correction, _ = g.step(torch.zeros(3, 8, 8), denoised, 0, sigma=0.5)
    torch.testing.assert_close(correction, torch.full((3, 8, 8), -residual), rtol=1e-5, atol=0)


def test_newton_step_is_capped_at_the_noise_level_or_one() -> None:
    """A residual of 5 with sigma 0.5: the step's RMS is capped at max(sigma, 1) = 1.
    Mutants: the RMS as a cube, the cap divided instead of multiplied, max(sigma, 2).
    (``max(rms, 1e-30)`` -> ``max(rms, 1)`` is equivalent: the cap is >= 1, so when rms < 1
    both give min(1, cap / rms') = 1.)"""
    g = _guidance("newton")
    correction, _ = g.step(torch.zeros(3, 8, 8), torch.full((3, 8, 8), 5.5), 0, sigma=0.5)
    torch.testing.assert_close(correction, torch.full((3, 8, 8), -1.0), rtol=1e-5, atol=0)
    correction, _ = g.step(torch.zeros(3, 8, 8), torch.full((3, 8, 8), 5.5), 0, sigma=3.0)
    torch.testing.assert_close(correction, torch.full((3, 8, 8), -3.0), rtol=1e-5, atol=0)


def test_start_noise_is_sigma_zero_times_the_noise_plus_the_start() -> None:
    """Algorithm 1 step 1 (u = sigma_0 * noise) and the partial-strength start (start +
    sigma_0 * noise). Mutants: sigmas[1]; start ignored; start - noise."""
    from warpcore.sampler import start_noise

    sigmas = torch.tensor([3.0, 1.0, 0.0])
    noise = torch.linspace(-1.0, 1.0, 12).reshape(1, 3, 2, 2)
    start = torch.full((1, 3, 2, 2), 0.25)
    torch.testing.assert_close(start_noise(noise, sigmas), 3.0 * noise)
    torch.testing.assert_close(start_noise(noise, sigmas, start), 0.25 + 3.0 * noise)


def test_sampler_reports_each_step_and_builds_no_graph_when_unguided() -> None:
    """The callback gets step k's sigma, its estimate h_k and e_k (None where unguided); an
    unguided step runs without autograd (a denoiser with trainable weights would otherwise
    keep a graph per step); a stop names the step. Mutants: the StepInfo fields, ``e`` as ""
    or always None, ``enable_grad`` always on, the step number in the Cancelled message."""
    from warpcore.errors import Cancelled
    from warpcore.sampler import sample

    weight = torch.nn.Parameter(torch.tensor(0.5))
    grad_modes: list[bool] = []

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        grad_modes.append(torch.is_grad_enabled())
        assert sigma.dtype == torch.float32 and sigma.shape == (x.shape[0],)  # one per item
        return weight * x / (1.0 + sigma.view(-1, 1, 1, 1) ** 2)

    sigmas = torch.tensor([4.0, 2.0, 1.0, 0.0], dtype=torch.float64)  # as karras_sigmas gives
    x = torch.ones(1, 3, 8, 8)
    guidance = _guidance("dps", active=frozenset({1}))
    guidance = EquivarianceGuidance(
        strength=1.0,
        forward=guidance.forward,
        mask=guidance.mask,
        previous=torch.zeros(3, 1, 3, 8, 8),
        active=frozenset({1}),
        grad_mode="output",
    )
    infos = []
    result = sample(denoise, x, sigmas, guidance=guidance, callback=infos.append)
    assert [i.k for i in infos] == [0, 1, 2] and all(i.n_steps == 3 for i in infos)
    assert [i.sigma for i in infos] == [4.0, 2.0, 1.0]
    for i in infos:
        torch.testing.assert_close(i.denoised, result.denoised[i.k])
    assert infos[0].warp_error is None and infos[2].warp_error is None
    assert isinstance(infos[1].warp_error, float) and infos[1].warp_error > 0
    assert result.warp_errors[0] is None and result.warp_errors[1] == infos[1].warp_error
    assert grad_modes == [False, False, False]  # "output" guidance needs no graph either
    calls = iter([False, False, True])
    with pytest.raises(Cancelled, match="before step 3 of 3"):
        sample(denoise, x, sigmas, should_stop=lambda: next(calls))


def test_gp_kernel_is_the_exact_truncated_normal_covariance_in_float64() -> None:
    """``GPNoise.kernel`` against an independent quadrature, to 1e-10 (float32 anywhere in it
    gives ~1e-7), on a (3, 5, 2) batch of lags (a batch shape other than (N, 2) catches
    reductions over the wrong axis). Mutants: float32 lags/nodes/weights/accumulator, the
    batch shape, the sum axis."""
    from scipy import integrate, stats

    field = GPNoise(channels=1, n_features=8, length_scale=(0.02, 0.03), truncation=2.0)
    lags = torch.linspace(-0.07, 0.09, 30, dtype=torch.float64).reshape(3, 5, 2)
    got = field.kernel(lags)
    assert got.shape == (3, 5) and got.dtype == torch.float64
    mass = stats.norm.cdf(2.0) - stats.norm.cdf(-2.0)

    def axis(lag: float, eps: float) -> float:
        f = lambda u: math.cos(lag / eps * u) * stats.norm.pdf(u)  # noqa: E731
        return integrate.quad(f, -2.0, 2.0, epsabs=1e-13, epsrel=1e-13)[0] / mass

    for idx in np.ndindex(3, 5):
        lx, ly = (float(v) for v in lags[idx])
        want = axis(lx, 0.02) * axis(ly, 0.03)
        assert abs(float(got[idx]) - want) < 1e-10, (idx, float(got[idx]), want)


def test_grid_accepts_one_pixel_and_refuses_oversized_grids_by_name() -> None:
    """Mutants: the names in grid()'s checks, its bounds (1 and 2^16)."""
    from warpcore.errors import InvalidInput

    field = GPNoise(channels=1, n_features=4, res=8)
    assert field.grid(1, 3).shape == (1, 1, 3) and field.grid(3, 1).shape == (1, 3, 1)
    for h, w, name in ((0, 4, "h"), (4, 0, "w"), ((1 << 16) + 1, 1, "h"), (1, (1 << 16) + 1, "w")):
        with pytest.raises(InvalidInput, match=rf"^{name}:"):
            field.grid(h, w)


def test_a_seed_draws_the_same_features_on_every_machine() -> None:
    """Golden values of the seeded draw (CPU float64, fixed order: frequencies by inverse CDF
    of the truncated normal, phases, weights), so a seed gives the same field everywhere and
    a saved shot resumes on another machine. Mutants: float32 uniforms, the truncation's lower
    tail computed at +t or in float32, the inverse-CDF range (3 lo), the draw order."""
    f = GPNoise(channels=2, n_features=16, length_scale=0.05, truncation=2.0, seed=123)
    z = [[-6.380111472333075, -36.10752115542599], [4.427718383182931, -24.406132343626055],
         [-1.319173362684611, 1.0547380470069192]]  # fmt: skip
    b = [2.5568648651537957, 0.4214916436729092, 0.6310805263028344]
    w = [[2.0122097812128166, -0.22710889685759694], [0.2868223425359218, -0.5177314267066034],
         [0.010839312825820206, 0.8433131492313287]]  # fmt: skip
    for got, want in ((f.z[:3], z), (f.b[:3], b), (f.w[:3], w)):
        torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "origin",
    [(0.1,), (0.1, 0.2, 0.3), "ab", (0.1, float("nan")), (float("inf"), 0.0), ("x", 0.0)],
)
def test_grid_origin_must_be_two_finite_numbers(origin: object) -> None:
    """Mutants: the origin checks' ``and``/``or``, and the error text."""
    from warpcore.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"^origin: expected two finite numbers"):
        GPNoise(channels=1, n_features=4, res=8).grid(2, 2, origin=origin)  # type: ignore[arg-type]


def test_grid_with_an_origin_is_the_field_at_the_shifted_pixel_centres() -> None:
    """float64 coordinates: an origin far from 0 keeps sub-micro-pixel phases (mutant: the
    pixel index in float32)."""
    field = GPNoise(channels=1, n_features=64, res=16, seed=5)
    origin = (1000.25, -3.5)
    ys, xs = torch.meshgrid(
        torch.arange(6, dtype=torch.float64), torch.arange(7, dtype=torch.float64), indexing="ij"
    )
    pts = torch.stack((origin[0] + (xs + 0.5) / 7, origin[1] + (ys + 0.5) / 6), dim=-1)
    want = field.at(pts, method="exact")
    torch.testing.assert_close(field.grid(6, 7, origin=origin), want, atol=2e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# metrics.py: the mask's flow fill, the flicker map, frames smaller than a latent cell


def _ramp(h: int, w: int, x_shift: float = 0.0) -> np.ndarray:
    """A linear RGB ramp (bilinear sampling reproduces it exactly), shifted by ``x_shift``."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    xs = xs + x_shift
    img = np.stack((0.2 + 0.02 * xs, 0.1 + 0.015 * ys, 0.3 + 0.01 * (xs + ys)), axis=-1)
    return img.astype(np.float32)


def _given_flows(monkeypatch: pytest.MonkeyPatch, fwd: torch.Tensor, bwd: torch.Tensor) -> None:
    monkeypatch.setattr(metrics_module, "flow_pair", lambda a, b, method: (fwd, bwd))


def test_masked_scores_fill_the_flow_inside_the_grown_mask(monkeypatch) -> None:
    """A static shot whose estimated flows are wrong by 0.3 px inside the mask grown by 3 px
    (the object's motion bleeding past its outline). The metric replaces the flow inside the
    mask grown by ``MASK_FLOW_DILATE`` = 4 px by a fill from outside (zero here), so both the
    warping error and E_warp are exactly 0 (measured ~1e-14). Mutants: no fill (either mask
    ignored, ``and`` -> ``or`` / ``is None``, the mask not passed on), or the fill without
    dilation for either flow (0.3 px error left in the 3 px ring: ~3e-6)."""
    h = w = 32
    mask = np.zeros((h, w), np.float32)
    mask[12:20, 12:20] = 1.0
    wrong = torch.zeros(2, h, w)
    wrong[0, 9:23, 9:23] = 0.3  # round trip 0.6 px: under Lai's occlusion bound, so it counts
    _given_flows(monkeypatch, wrong.clone(), wrong.clone())
    frame = _ramp(h, w)
    scorer = ClipScorer()
    for _ in range(3):
        row = scorer.add(frame, frame, mask=mask)
    assert row["warp_pixel_prev"] == pytest.approx(0.0, abs=1e-10)
    assert row["warp_pixel_first"] == pytest.approx(0.0, abs=1e-10)
    assert row["e_warp"] == pytest.approx(0.0, abs=1e-10)
    # A frame without a mask next to one with a mask: the flows are used as estimated.
    scorer = ClipScorer()
    scorer.add(frame, frame)
    assert scorer.add(frame, frame, mask=mask)["warp_pixel_prev"] > 1e-7


def test_the_flicker_map_is_the_per_pixel_prev_error_and_zero_where_points_leave(
    monkeypatch,
) -> None:
    """``error_map`` after frame j: the channel mean of |O_j - O_{j-1}(x + B_j)|^2 per pixel,
    0 in the last column (the 1 px backward shift leaves the frame), shape (1, H, W); None on
    frame 0. Computed here independently with numpy from integer shifts. Mutants: the map from
    the first frame, not set, divided by ``valid``, averaged over the wrong axis or everything,
    squared differently."""
    h, w = 16, 24
    shift = torch.zeros(2, h, w)
    shift[0] = 1.0  # B_j: pixel x of frame j is at x + 1 in frame j-1
    _given_flows(monkeypatch, -shift, shift)
    rng = np.random.default_rng(0)
    outs = [_ramp(h, w, j) + rng.uniform(0, 0.05, (h, w, 3)).astype(np.float32) for j in range(3)]
    scorer = ClipScorer()
    scorer.add(outs[0], outs[0])
    assert scorer.error_map is None
    for j in (1, 2):
        scorer.add(outs[j], outs[j])
        want = np.zeros((1, h, w))
        want[0, :, : w - 1] = ((outs[j][:, : w - 1] - outs[j - 1][:, 1:]) ** 2).mean(-1)
        assert scorer.error_map is not None and tuple(scorer.error_map.shape) == (1, h, w)
        np.testing.assert_allclose(scorer.error_map.numpy(), want, rtol=1e-5, atol=1e-9)
        valid = want[0, :, : w - 1]
        assert scorer.per_frame["warp_pixel_prev"][j] == pytest.approx(valid.mean(), rel=1e-5)


@pytest.mark.parametrize("size", [(4, 32), (32, 4)])
def test_frames_thinner_than_a_latent_cell_have_pixel_scores_only(size, monkeypatch) -> None:
    """A side under 8 px has no latent grid: latent errors are None, pixel errors are numbers.
    Mutants: the ``or`` of the empty-latent check, its ``== 0`` moved to 1, the empty
    latent made of one element."""
    _given_flows(monkeypatch, torch.zeros(2, *size), torch.zeros(2, *size))  # DIS needs 12 px
    frame = np.full((*size, 3), 0.5, np.float32)
    scorer = ClipScorer()
    scorer.add(frame, frame)
    row = scorer.add(frame + 0.1, frame)
    assert row["warp_latent_prev"] is None and row["warp_latent_first"] is None
    assert row["warp_pixel_prev"] == pytest.approx(0.01, rel=1e-5)


def test_latent_error_on_a_cropped_non_square_frame_and_a_one_value_latent(monkeypatch) -> None:
    """A 36x48 frame: the latent grid covers 32x48 (rows cropped), so the flow is cropped by
    rows, not by columns (mutant: ``lat.shape[2]`` for the height). An encoder giving one value
    per frame still scores (mutant: an empty latent tested as ``numel() == 1``)."""
    frame = _ramp(36, 48)
    result = metrics_module.score_clip([frame, frame + 0.1], [frame, frame])
    assert result["per_frame"]["warp_latent_prev"][1] == pytest.approx(0.01, rel=1e-4)

    def one_value(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1) for an 8x8 frame

    _given_flows(monkeypatch, torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))  # DIS needs 12 px
    scorer = ClipScorer(encode=one_value, factor=8)
    small = np.full((8, 8, 3), 0.5, np.float32)
    scorer.add(small, small)
    assert scorer.add(small + 0.1, small)["warp_latent_prev"] == pytest.approx(0.01, rel=1e-4)


def test_one_pixel_masks_and_bad_sizes_say_what_is_wrong() -> None:
    """A mask of one pixel scores that pixel (mutant: an empty total tested as ``<= 1``); masks
    as (H, W) or (1, H, W), numpy or torch, agree, and a (3, H, W) mask is refused with its
    size; a value of exactly 0.5 is outside the mask; an input that changes size says which
    frame and what size."""
    from warpcore.errors import InvalidInput
    from warpcore.metrics import restoration_scores

    out = np.zeros((8, 8, 3), np.float32)
    ref = out.copy()
    ref[3, 5] = 0.2
    one = np.zeros((8, 8), np.float32)
    one[3, 5] = 1.0
    assert restoration_scores(out, ref, one)["mse"] == pytest.approx(0.04)
    for mask in (one[None], torch.from_numpy(one), torch.from_numpy(one)[None]):
        assert restoration_scores(out, ref, mask)["mse"] == pytest.approx(0.04)
    half = one.copy()
    half[0, 0] = 0.5
    assert restoration_scores(out, ref, half)["mse"] == pytest.approx(0.04)
    with pytest.raises(
        InvalidInput, match=r"^mask: expected size \(H, W\) = \(8, 8\), got \(3, 8, 8\)"
    ):
        restoration_scores(out, ref, np.stack([one] * 3))
    scorer = ClipScorer()
    scorer.add(out, out)
    with pytest.raises(InvalidInput, match=r"^input: frame 1 changed size to \(3, 8, 9\)"):
        scorer.add(out, np.zeros((8, 9, 3), np.float32))


@pytest.mark.parametrize("rows", [3, 4, 5, 6])
def test_ssim_window_fits_thin_frames(rows: int) -> None:
    """SSIM's window is the largest odd size up to 7 that fits the SHORTER side (3 for 3-4 rows,
    5 for 5-6): skimage refuses even or oversized windows, so each mutant of that choice
    (the longer side, odd/even swapped, ``side + 1``/``- 2``, ``<= 3``, the window dropped)
    raises or gives None here."""
    from warpcore.metrics import restoration_scores

    rng = np.random.default_rng(rows)
    out = rng.uniform(0, 1, (rows, 32, 3)).astype(np.float32)
    ssim = restoration_scores(out, out)["ssim"]
    assert ssim == pytest.approx(1.0, abs=1e-6)
    assert restoration_scores(out, np.clip(out + 0.1, 0, 1))["ssim"] < 1.0


def test_ssim_of_two_flat_frames_is_the_luminance_term_with_data_range_one() -> None:
    """Flat frames a = 0.1, b = 0.05: SSIM = (2ab + C1) / (a^2 + b^2 + C1) with
    C1 = (0.01 * 1)^2, i.e. 0.0101 / 0.0126 = 0.801587 (data range 2 would give 0.806202)."""
    from warpcore.metrics import restoration_scores

    out = np.full((16, 16, 3), 0.1, np.float32)
    ref = np.full((16, 16, 3), 0.05, np.float32)
    scores = restoration_scores(out, ref)
    assert scores["ssim"] == pytest.approx(0.0101 / 0.0126, rel=1e-5)
    assert scores["mse"] == pytest.approx(0.0025, rel=1e-5)
    assert scores["psnr"] == pytest.approx(-10 * math.log10(0.0025), rel=1e-6)


def test_restoration_errors_name_the_frame_and_both_sizes() -> None:
    """Mutants: the names passed to the frame check, the sizes in the size-mismatch error."""
    from warpcore.errors import InvalidInput
    from warpcore.metrics import restoration_scores

    good = np.zeros((8, 8, 3), np.float32)
    bad = np.zeros((8, 8), np.float32)
    with pytest.raises(InvalidInput, match=r"^output: expected numpy \(H, W, 3\|4\)"):
        restoration_scores(bad, good)
    with pytest.raises(InvalidInput, match=r"^reference: expected numpy \(H, W, 3\|4\)"):
        restoration_scores(good, bad)
    with pytest.raises(
        InvalidInput, match=r"^reference: size \(8, 9\) differs from the output's \(8, 8\)"
    ):
        restoration_scores(good, np.zeros((8, 9, 3), np.float32))


# ---------------------------------------------------------------------------------------------
# flow.py


def test_valid_mask_bounds_are_the_outer_pixel_centres_within_the_tolerance() -> None:
    """Each side of the frame on its own: a point exactly ``tol`` past an outer pixel centre
    is inside, one pixel past is outside (mutants: ``>``/``<`` for ``>=``/``<=``, the x test
    replaced by y, ``h + 1``, in ``valid_mask`` and in ``warp``); the mask has the flow's
    dtype."""
    from warpcore.flow import valid_mask, warp

    h, w, tol = 6, 8, 1e-4
    for dtype in (torch.float64, torch.float32):
        sides = ((0, (0, 0), -1), (0, (3, w - 1), 1), (1, (0, 2), -1), (1, (h - 1, 5), 1))
        for axis, index, inside_step in sides:
            for step, want in ((inside_step * tol, 1.0), (inside_step * 1.0, 0.0)):
                flow = torch.zeros(2, h, w, dtype=torch.float64)
                flow[axis][index] = step
                m = valid_mask(flow.to(dtype))
                assert m.dtype == dtype and tuple(m.shape) == (1, h, w)
                if dtype == torch.float64:  # warp's own valid map follows the same bounds
                    assert torch.equal(warp(torch.zeros(1, h, w, dtype=dtype), flow)[1], m)
                if dtype == torch.float64 or want == 0.0:
                    assert float(m[0][index]) == want, (dtype, axis, index, step)
                assert float(m.sum()) == h * w - 1 + want


def test_compose_checks_both_flows_by_name_and_size() -> None:
    """Mutants: the names passed to the checks, the second flow's size check dropped."""
    from warpcore.errors import InvalidInput
    from warpcore.flow import compose

    good = torch.zeros(2, 4, 4)
    with pytest.raises(InvalidInput, match=r"^flow_ab: expected shape \(2, H, W\)"):
        compose(torch.zeros(3, 4, 4), good)
    with pytest.raises(InvalidInput, match=r"^flow_bc: expected shape \(2, H, W\)"):
        compose(good, torch.zeros(3, 4, 4))
    with pytest.raises(
        InvalidInput, match=r"^flow_bc: expected size \(H, W\) = \(4, 4\), got \(5, 5\)"
    ):
        compose(good, torch.zeros(2, 5, 5))


def test_compose_extends_the_second_flow_from_the_border_in_the_first_flows_precision() -> None:
    """Points that leave frame b take the nearest edge flow (mutant: zero padding); and the
    composition runs in the first flow's dtype: a float64 ``flow_ab`` with a float32 ramp
    ``flow_bc(x) = x`` composes to ``flow_ab + x + flow_ab`` within 1e-12 (mutant: sampling in
    float32, ~1e-6 off; the GP warper composes float64 maps over hundreds of frames)."""
    from warpcore.flow import compose

    h, w = 6, 10
    out_left = torch.zeros(2, h, w)
    out_left[0] = -3.0  # every point lands 3 px to the left: columns 0-2 leave b
    flow_bc = torch.zeros(2, h, w)
    flow_bc[0] = 0.5
    flow_bc[1, :, 0] = 2.0  # b's edge column
    got = compose(out_left, flow_bc)
    assert torch.equal(got[0], torch.full((h, w), -2.5))
    torch.testing.assert_close(got[1, :, :3], torch.full((h, 3), 2.0))  # the edge's flow
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    ab = torch.stack((0.1 + 0.01 * ys, 0.2 + 0.0 * xs))
    ramp = torch.stack((xs, ys)).float()
    want = ab + torch.stack((xs, ys)) + ab
    inner = (slice(None), slice(0, h - 1), slice(0, w - 1))
    torch.testing.assert_close(compose(ab, ramp)[inner], want[inner], atol=1e-12, rtol=0)


def test_resize_flow_samples_pixel_centres_and_checks_the_size() -> None:
    """A flow linear in the pixel index, f(x) = 0.5 x + 1 on 8 columns, resized to 16: pixel
    centres map as x_old = (x' + 0.5) / 2 - 0.5 (``align_corners=False``; mutant: True) and
    displacements double. Sizes of one pixel are fine; zero, or not two numbers, is an error
    that says so (mutants: ``and``, ``<= 1`` / ``< 2``, the message)."""
    from warpcore.errors import InvalidInput
    from warpcore.flow import resize_flow

    xs = torch.arange(8, dtype=torch.float64)
    flow = torch.zeros(2, 4, 8, dtype=torch.float64)
    flow[0] = 0.5 * xs + 1.0
    got = resize_flow(flow, (8, 16))
    x_new = torch.arange(16, dtype=torch.float64)
    want = (0.5 * ((x_new + 0.5) / 2 - 0.5) + 1.0) * 2
    torch.testing.assert_close(got[0, 3, 1:15], want[1:15], atol=1e-12, rtol=0)
    assert float(got[1].abs().max()) == 0.0
    assert tuple(resize_flow(flow, (1, 4)).shape) == (2, 1, 4)
    ones = torch.ones(2, 3, 3, dtype=torch.float64)  # a scale of 7/3 kept in float64
    want = ones.new_full((2, 7, 7), 7 / 3)
    torch.testing.assert_close(resize_flow(ones, (7, 7)), want, atol=1e-12, rtol=0)
    for size in ((0, 5), (4, 0), (1, 2, 3)):
        with pytest.raises(InvalidInput, match=r"^size: expected \(H, W\) with H, W > 0, got"):
            resize_flow(flow, size)  # type: ignore[arg-type]


def test_warp_of_a_batch_with_one_shared_flow_and_with_a_flow_per_image() -> None:
    """A batch of two images warped by one (2, H, W) flow, and by a (2, 2, H, W) flow per
    image, equals warping each image alone (mutants of the flow's batching test: a batch of
    two images meets the flow's two channels, so a flow left unbatched is misread; with
    one-channel images, the flows' batch must not be compared with the channels)."""
    gen = torch.Generator().manual_seed(0)
    for channels in (3, 1):  # one channel: the batch of flows must not be taken for channels
        _check_batched_warp(torch.rand(2, channels, 6, 7, generator=gen), gen)


def _check_batched_warp(images: torch.Tensor, gen: torch.Generator) -> None:
    from warpcore.flow import warp

    flows = torch.rand(2, 2, 6, 7, generator=gen) * 2 - 1
    shared, valid = warp(images, flows[0])
    assert tuple(shared.shape) == images.shape and tuple(valid.shape) == (2, 1, 6, 7)
    each, each_valid = warp(images, flows)
    for i in range(2):
        alone, alone_valid = warp(images[i], flows[0])
        torch.testing.assert_close(shared[i], alone)
        torch.testing.assert_close(valid[i], alone_valid)
        alone, alone_valid = warp(images[i], flows[i])
        torch.testing.assert_close(each[i], alone)
        torch.testing.assert_close(each_valid[i], alone_valid)


def test_motion_boundaries_across_rows_in_both_directions() -> None:
    """The flow jumps by 2 px between rows 3 and 4 (and back at 6/7): |grad|^2 counts the
    vertical differences squared, whatever their sign (mutants: ``du^2 - dv^2``, ``dv^3``)."""
    from warpcore.flow import motion_boundary

    flow = torch.zeros(2, 10, 5)
    flow[0, 4:7] = 2.0
    rows = motion_boundary(flow)[0].any(dim=1).tolist()
    assert rows == [False, False, False, True, False, False, True, False, False, False]


def test_occlusion_bound_grows_with_both_flows_magnitudes() -> None:
    """Lai's bound: a round trip of 3 px (forward 30, backward -27) is occluded only if
    9 > 0.01 (30^2 + 27^2) + 0.5 = 16.79, so it is kept; each mutant of the bound (``/``
    for ``*``, ``-`` for ``+``, ``2 f`` for ``f^2`` on either flow: 0.5, 2.21, 8.39, 8.96) drops
    it. A 10 px round trip (backward -20: 100 > 13.5) is occluded. Points that leave b are
    never kept. Errors name the flow."""
    from warpcore.errors import InvalidInput
    from warpcore.flow import occlusion_mask

    h, w = 3, 48
    forward = torch.zeros(2, h, w)
    forward[0] = 30.0
    for back, kept in ((-27.0, 1.0), (-20.0, 0.0)):
        backward = torch.zeros(2, h, w)
        backward[0] = back
        mask = occlusion_mask(forward, backward)[0]
        assert torch.equal(mask[:, : w - 30], torch.full((h, w - 30), kept)), back
        assert float(mask[:, w - 30 :].abs().max()) == 0.0  # x + 30 leaves the frame
    with pytest.raises(InvalidInput, match=r"^forward: expected shape"):
        occlusion_mask(torch.zeros(3, h, w), forward)
    with pytest.raises(InvalidInput, match=r"^backward: expected shape"):
        occlusion_mask(forward, torch.zeros(3, h, w))


def test_to_model_grid_takes_factor_one_and_refuses_non_integers() -> None:
    """Factor 1 is the identity (mutants: ``<= 1``, ``< 2``); True and 2.0 are refused
    (mutant: ``and`` between the bool and int checks)."""
    from warpcore.errors import InvalidInput
    from warpcore.flow import to_model_grid

    flow = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(to_model_grid(flow, 1), flow)
    for factor in (True, 2.0, 0):
        with pytest.raises(InvalidInput, match=r"^factor: expected a positive integer"):
            to_model_grid(flow, factor)  # type: ignore[arg-type]


def test_warp_of_two_pixel_wide_frames_and_mixed_precision() -> None:
    """A 2x2 frame: the flow (+1, +1) at pixel (0, 0) reads pixel (1, 1) exactly (mutant: the
    grid scale ``2 / max(w - 1, 2)``, which reads the frame's centre). A float32 image warped
    by a float64 flow comes back float32 (mutant: the flow not cast to the image's dtype, which
    ``grid_sample`` refuses)."""
    from warpcore.flow import warp

    image = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    flow = torch.zeros(2, 2, 2, dtype=torch.float64)
    flow[:, 0, 0] = 1.0
    out, valid = warp(image, flow)
    assert out.dtype == torch.float32 and float(out[0, 0, 0]) == 3.0
    assert valid.dtype == torch.float32 and float(valid.min()) == 1.0
    half = torch.full((2, 2, 2), 0.4)  # nearest reads pixel (0, 0) at 0.4 px; bilinear mixes
    assert float(warp(image, half, mode="nearest")[0][0, 0, 0]) == 0.0
    assert float(warp(image, half)[0][0, 0, 0]) == pytest.approx(0.4 * 1 + 0.4 * 2)


# ---------------------------------------------------------------------------------------------
# metrics.py: frames, the scorer's settings, whole clips


def test_frames_in_every_accepted_layout_score_alike_in_float32(monkeypatch) -> None:
    """RGBA numpy / torch frames lose alpha; float64 frames are scored in float32; one pixel is
    a frame. Mutants: the accepted channel counts, alpha kept (``[..., :4]``), the float32 cast
    dropped, the size checks at 1 -> 2."""
    from warpcore.metrics import restoration_scores

    rgb = np.random.default_rng(0).uniform(0, 1, (8, 8, 3)).astype(np.float32)
    ref = np.clip(rgb + 0.1, 0, 1)
    want = restoration_scores(rgb, ref)
    rgba = np.concatenate([rgb, np.ones((8, 8, 1), np.float32)], axis=-1)
    torch_rgba = torch.from_numpy(rgba).permute(2, 0, 1)
    for frame in (rgba, torch_rgba, rgb.astype(np.float64), torch_rgba.double()):
        assert restoration_scores(frame, ref) == pytest.approx(want)
    one = np.full((1, 1, 3), 0.5, np.float32)
    assert restoration_scores(one, one)["mse"] == 0.0
    _given_flows(monkeypatch, torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))
    for frame in (rgb.astype(np.float64), torch.from_numpy(rgb).permute(2, 0, 1).double()):
        scorer = ClipScorer()
        scorer.add(frame, rgb)
        scorer.add(frame, rgb)
        assert scorer.error_map is not None and scorer.error_map.dtype == torch.float32


def test_bad_frames_are_named_and_say_what_is_accepted() -> None:
    """Mutants: the messages, the names passed in, ``and`` for ``or`` in the shape checks."""
    from warpcore.errors import InvalidInput
    from warpcore.metrics import restoration_scores

    ok = np.zeros((8, 8, 3), np.float32)
    cases = [
        (torch.zeros(5, 8, 8), r"^output: expected torch \(3, H, W\), got \(5, 8, 8\)"),
        ([[0.0]], r"^output: expected a numpy \(H, W, 3\) or torch \(3, H, W\) frame"),
        (np.zeros((0, 8, 3), np.float32), r"^output: expected a non-empty frame of finite"),
        (np.zeros((8, 0, 3), np.float32), r"^output: expected a non-empty frame of finite"),
        (np.full((8, 8, 3), np.nan, np.float32), r"^output: expected a non-empty frame of fin"),
    ]
    for bad, message in cases:
        with pytest.raises(InvalidInput, match=message):
            restoration_scores(bad, ok)
    scorer = ClipScorer()
    with pytest.raises(InvalidInput, match=r"^output: expected numpy"):
        scorer.add(np.zeros((8, 8), np.float32), ok)
    with pytest.raises(InvalidInput, match=r"^input: expected numpy"):
        scorer.add(ok, np.zeros((8, 8), np.float32))
    scorer.add(ok, ok)
    with pytest.raises(InvalidInput, match=r"^output: frame 1 changed size to \(3, 8, 9\)"):
        scorer.add(np.zeros((8, 9, 3), np.float32), ok)


def test_scorer_settings_factor_and_labels() -> None:
    """The proxy's factor is always 8; an encoder's default factor is 8, 1 is allowed; factors
    that are not positive integers are refused by name; the latent label says 'vae' for an
    encoder; no error map before the first frame. Mutants: the default 9, the factor checks'
    ``and``/``<= 1``, the proxy taking the given factor, the label always 'latent_proxy', the
    messages."""
    from warpcore.errors import InvalidInput

    assert ClipScorer(factor=4).factor == 8
    assert ClipScorer(encode=metrics_module.latent_proxy).factor == 8
    assert ClipScorer(encode=metrics_module.latent_proxy, factor=1).factor == 1
    assert ClipScorer(encode=metrics_module.latent_proxy).latent_name == "vae"
    assert ClipScorer().latent_name == "latent_proxy" and ClipScorer().error_map is None
    for factor in (True, 2.0, 0):
        with pytest.raises(InvalidInput, match=r"^factor: expected a positive integer"):
            ClipScorer(factor=factor)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"^flow: got 'optical'; accepted: dis, dis-fast, "):
        ClipScorer(flow="optical")


def test_score_clip_events_summary_and_length_errors(monkeypatch) -> None:
    """One 'frame' event per frame with its index and the given n_frames (default 0:
    unknown); means of keys that never have a value are None; clips of different lengths say
    which ended and which of the GIVEN clips went on (it used to list 'mask' when no masks
    were given: fixed); a cancel says after how many frames."""
    from warpcore.errors import Cancelled, InvalidInput

    _given_flows(monkeypatch, torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))
    frames = [np.full((8, 8, 3), v, np.float32) for v in (0.2, 0.3, 0.4)]
    events: list = []
    result = metrics_module.score_clip(frames, frames, on_event=events.append)
    assert [(e.kind, e.frame, e.n_frames) for e in events] == [("frame", j, 0) for j in range(3)]
    assert result["mean"]["warp_pixel_prev"] == pytest.approx(0.01)
    single = metrics_module.score_clip(frames[:1], frames[:1])  # no pair: no warping error
    assert single["frames"] == 1 and single["mean"]["warp_pixel_prev"] is None
    events.clear()
    metrics_module.score_clip(frames, frames, on_event=events.append, n_frames=3)
    assert [e.n_frames for e in events] == [3, 3, 3]
    with pytest.raises(
        InvalidInput,
        match=r"^reference: ended after 2 frames while output, input went on; "
        r"expected clips of the same length$",
    ):
        metrics_module.score_clip(frames, frames, references=frames[:2])
    masks = [np.zeros((8, 8), np.float32)] * 2
    with pytest.raises(InvalidInput, match=r"^mask: ended after 2 frames while output, input"):
        metrics_module.score_clip(frames, frames, masks=masks)
    with pytest.raises(InvalidInput, match=r"^reference, mask: ended after 2 frames while out"):
        metrics_module.score_clip(frames, frames, references=frames[:2], masks=masks)
    with pytest.raises(Cancelled, match=r"^metrics: cancelled after 0 frames$"):
        metrics_module.score_clip(frames, frames, should_stop=lambda: True)


def test_validate_flow_says_what_is_wrong_and_takes_one_pixel() -> None:
    """Mutants: the default name, the messages, ``and`` / repeated index in the empty-size
    check, one-pixel flows refused."""
    from warpcore.errors import InvalidInput
    from warpcore.flow import validate_flow

    one = torch.zeros(2, 1, 1)
    assert validate_flow(one) is one
    with pytest.raises(InvalidInput, match=r"^flow: expected a torch tensor \(2, H, W\), got nd"):
        validate_flow(np.zeros((2, 4, 4)))
    for shape in ((2, 0, 5), (2, 5, 0)):
        with pytest.raises(InvalidInput, match=r"^flow: expected shape \(2, H, W\) with H, W > 0"):
            validate_flow(torch.zeros(shape))


def _linear(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return torch.stack((0.1 * xs - 0.05 * ys + 1.0, 0.03 * xs + 0.08 * ys - 0.5))


def test_fill_masked_grows_the_mask_by_exactly_dilate_pixels_and_keeps_float64() -> None:
    """A one-pixel mask grown by 2 px fills exactly the 5x5 square around it: wrong flow on
    that square is replaced, the flow one pixel further out is kept as it was (mutants: the
    kernel's rows or columns ``2 d - 1``, ``3 d + 1``, ``2 d + 2``). A float64 flow comes back
    float64 (mutant: the dtype dropped). Bad masks and dilations are named."""
    from warpcore.errors import InvalidInput
    from warpcore.flow import fill_masked

    h = w = 15
    flow = _linear(h, w)
    flow[:, 3:12, 3:12] += 0.5 * torch.rand(2, 9, 9, generator=torch.Generator().manual_seed(3))
    flow[:, 5:10, 5:10] = 100.0  # the wrong flow: the 5x5 square around (7, 7)
    mask = torch.zeros(h, w)
    mask[7, 7] = 1.0
    filled = fill_masked(flow, mask, dilate=2)
    assert filled.dtype == torch.float64
    outside = torch.ones(h, w, dtype=torch.bool)
    outside[5:10, 5:10] = False
    torch.testing.assert_close(filled[:, outside], flow[:, outside], atol=1e-5, rtol=0)
    assert float(filled[:, 5:10, 5:10].abs().max()) < 5.0
    with pytest.raises(InvalidInput, match=r"^mask: expected shape \(H, W\)"):
        fill_masked(flow, torch.zeros(3, 4))
    for dilate in (True, 1.5, -1):
        with pytest.raises(InvalidInput, match=r"^dilate: expected an integer >= 0"):
            fill_masked(flow, mask, dilate=dilate)  # type: ignore[arg-type]


def test_fill_masked_continues_the_camera_motion_into_holes_at_the_border() -> None:
    """A rotation and zoom (a similarity) with a hole in the frame's top-left corner: the
    similarity fitted to the KNOWN pixels carries it exactly (mutants: fitted to the hole's
    wrong flow, not used, a sign of its linear part flipped; the no-flux borders then bend the
    harmonic fill by ~0.1 px). A hole one pixel from
    the top-left corner, and one on the right border: the 5-point stencil sees neighbours in
    row 0 / column 0 and none past the last column (mutants: ``> 0`` / ``>= 1``, ``<= w``)."""
    from warpcore.flow import fill_masked

    h, w = 24, 30
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    c, s, zoom = math.cos(0.05), math.sin(0.05), 1.03
    similarity = torch.stack(
        (zoom * (c * xs - s * ys) + 2.0 - xs, zoom * (s * xs + c * ys) - 1.0 - ys)
    )
    broken = similarity.clone()
    broken[:, :12, :8] = torch.tensor([[[7.0]], [[-3.0]]], dtype=torch.float64)
    mask = torch.zeros(h, w)
    mask[:12, :8] = 1.0  # the top-left corner: no-flux on two sides
    torch.testing.assert_close(fill_masked(broken, mask), similarity, atol=1e-3, rtol=0)
    linear = _linear(h, w)
    for rows, cols in ((slice(1, 4), slice(1, 4)), (slice(8, 12), slice(w - 3, w))):
        wrong = linear.clone()
        wrong[:, rows, cols] = 50.0
        corner = torch.zeros(h, w)
        corner[rows, cols] = 1.0
        got = fill_masked(wrong, corner)
        assert bool(torch.isfinite(got).all())
        if cols.stop < w:  # every neighbour inside the frame: a linear field is exact
            torch.testing.assert_close(got, linear, atol=1e-4, rtol=0)


def test_psnr_is_capped_at_100_db_exactly_at_mse_1e_minus_10() -> None:
    """MSE 5e-11 is under the cap's 1e-10: 100 dB (mutants moving the threshold to 11^-10 or
    10^-1000 give 103 dB); MSE 5e-10 is above it: 93.01 dB (mutant 10^(-100/11) caps it). An
    empty mask gives None for every score, under their names."""
    from warpcore.metrics import restoration_scores

    ref = np.zeros((4, 4, 3), np.float32)
    for mse, want in ((5e-11, 100.0), (5e-10, -10 * math.log10(5e-10))):
        out = np.full((4, 4, 3), math.sqrt(mse), np.float32)
        got = restoration_scores(out, ref)
        assert got["mse"] == pytest.approx(mse, rel=1e-5)
        assert got["psnr"] == pytest.approx(want, abs=1e-3)
    empty = restoration_scores(ref, ref, np.zeros((4, 4), np.float32))
    assert empty == {"mse": None, "psnr": None, "ssim": None}


def test_flow_masks_accept_one_row_frames_and_name_bad_masks() -> None:
    """A (1, W) mask of a one-row flow is (H, W), not a squeezable (1, H, W) (mutant: ``or``);
    a (3, H, W) mask is refused; 0.5 is outside the mask; non-arrays and NaN are named."""
    from warpcore.errors import InvalidInput
    from warpcore.flow import fill_masked

    row = torch.zeros(2, 1, 6)
    row[0] = torch.arange(6.0)
    row_mask = torch.zeros(1, 6)
    row_mask[0, 2:4] = 1.0
    filled = fill_masked(row, row_mask)
    torch.testing.assert_close(filled, row, atol=1e-4, rtol=0)  # linear along the row
    flow = torch.zeros(2, 4, 4)
    half = torch.full((4, 4), 0.5)
    assert torch.equal(fill_masked(flow + 1.0, half), flow + 1.0)  # nothing is masked
    with pytest.raises(InvalidInput, match=r"^mask: expected shape \(H, W\) = \(4, 4\) or"):
        fill_masked(flow, torch.zeros(3, 4, 4))
    with pytest.raises(
        InvalidInput, match=r"^mask: expected a \(H, W\) or \(1, H, W\) array, got <class 'str'>"
    ):
        fill_masked(flow, "mask.png")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"^mask: contains NaN or infinite values"):
        fill_masked(flow, torch.full((4, 4), float("nan")))


def test_fill_masked_with_few_known_pixels_and_flow_pair_methods() -> None:
    """Under 16 known pixels no camera motion is fitted: the fill is the harmonic one (here the
    one known value everywhere; mutant: the zero base built from None). ``flow_pair`` runs the
    given method both ways and DIS by default (mutants: the method dropped or renamed)."""
    from warpcore.flow import estimate_flow, fill_masked, flow_pair

    flow = torch.full((2, 5, 5), 9.0)
    flow[:, 0, 0] = torch.tensor([1.5, -0.5])
    mask = torch.ones(5, 5)
    mask[0, 0] = 0.0
    want = torch.stack((torch.full((5, 5), 1.5), torch.full((5, 5), -0.5)))
    torch.testing.assert_close(fill_masked(flow, mask), want, atol=1e-6, rtol=0)
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (24, 24, 3)).astype(np.float32)
    b = np.roll(a, 2, axis=1)
    for method in ("farneback", "dis-fast"):
        fwd, bwd = flow_pair(a, b, method)
        assert torch.equal(fwd, estimate_flow(a, b, method))
        assert torch.equal(bwd, estimate_flow(b, a, method))
    default = flow_pair(a, b)
    assert torch.equal(default[0], estimate_flow(a, b, "dis"))
    assert torch.equal(default[1], estimate_flow(b, a, "dis"))


# ---------------------------------------------------------------------------------------------
# warps.py: the baseline schemes against independent references, fast_forward, make_warper


def _white_noise(seed: int, frame: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Fresh white noise of ``frame``: torch's normal draw seeded by (seed, stream 1, frame)."""
    from warpcore.noise import derive_seed

    g = torch.Generator().manual_seed(derive_seed(seed, 1, frame))
    return torch.randn(shape, generator=g)


def _gp_fresh(seed: int, frame: int, c: int, h: int, w: int, features: int) -> torch.Tensor:
    """Fresh GP noise of ``frame`` of the gp-* schemes: the seed itself at frame 0, else the
    seed mixed with (stream 2, frame)."""
    from warpcore.noise import derive_seed

    s = seed if frame == 0 else derive_seed(seed, 2, frame)
    return GPNoise(channels=c, n_features=features, seed=s, res=(w, h)).grid(h, w)


def _cell(x: int, y: int, flow: torch.Tensor) -> tuple[int, int]:
    """The pixel cell [i - 0.5, i + 0.5) containing (x, y) + flow(x, y), in float64."""
    return (
        math.floor(x + float(flow[0, y, x]) + 0.5),
        math.floor(y + float(flow[1, y, x]) + 0.5),
    )


def _eighths(h: int, w: int, seed: int, reach: int = 3) -> torch.Tensor:
    """A random (2, h, w) flow of odd multiples of 1/8 within +-reach px: exact in float32 and
    never on a cell boundary, so float32 and float64 cells agree."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-4 * reach, 4 * reach, (2, h, w), generator=g) * 2 + 1) / 8.0


@pytest.mark.parametrize("scheme", ["nearest", "gp-nearest"])
def test_nearest_takes_the_back_mapped_cell_and_fresh_noise_outside(scheme: str) -> None:
    """Every value against a per-pixel reference, on flows that reach all four borders
    (cells 0, w-1, w, -1 and the same in y), on random sub-pixel flows, and on a cut to far
    above-left (every point out of the frame, flat indices below -h*w). Mutants: the cell
    bounds (``>=``/``<``), the ``+ 0.5``, the index clamp (both ends), the fresh noise's
    seed/stream/frame and white instead of GP noise."""
    c, h, w, seed, features = 2, 5, 7, 9, 64
    wp = make_warper(scheme, c, h, w, seed=seed, gp_features=features)

    def fresh(frame: int) -> torch.Tensor:
        if scheme == "nearest":
            return _white_noise(seed, frame, (c, h, w))
        return _gp_fresh(seed, frame, c, h, w, features)

    prev = wp.first()
    assert torch.equal(prev, fresh(0))
    const = lambda dx, dy: torch.tensor([dx, dy])[:, None, None].expand(2, h, w).clone()  # noqa: E731
    flows = [const(0.0, 0.0), const(2.0, 1.0), const(-2.0, -1.0), _eighths(h, w, 1)]
    flows += [const(w - 1.0, h - 1.0), _eighths(h, w, 2), const(-3.0 * w, -3.0 * h)]
    for frame, back in enumerate(flows, start=1):
        got = wp.next(-back, back)
        want = fresh(frame)
        for y in range(h):
            for x in range(w):
                sx, sy = _cell(x, y, back)
                if 0 <= sx < w and 0 <= sy < h:
                    want[:, y, x] = prev[:, sy, sx]
        assert torch.equal(got, want), frame
        prev = got


def test_bilinear_averages_the_two_neighbours_and_is_fresh_where_the_point_left() -> None:
    """A half-pixel shift: each target is the mean of its two sources; column 0's point is
    outside (half a pixel left of the first centre) and takes frame 1's white noise. Mutants:
    the validity test, the interpolation mode, the fresh noise's frame."""
    c, h, w = 2, 4, 6
    wp = make_warper("bilinear", c, h, w, seed=4)
    x0 = wp.first()
    back = torch.zeros(2, h, w)
    back[0] = -0.5
    x1 = wp.next(-back, back)
    torch.testing.assert_close(x1[..., 1:], 0.5 * (x0[..., :-1] + x0[..., 1:]), rtol=0, atol=1e-6)
    assert torch.equal(x1[..., 0], _white_noise(4, 1, (c, h, w))[..., 0])


def test_fixed_keeps_frame_zero_and_resample_draws_each_frame_from_its_seed() -> None:
    """Mutants: the fresh noise's seed, stream and frame; gp-* schemes on white noise; the
    default number of GP features (3000)."""
    c, h, w = 2, 4, 5
    flows = (torch.ones(2, h, w), -torch.ones(2, h, w))
    fixed = make_warper("fixed", c, h, w, seed=6)
    assert torch.equal(fixed.first(), _white_noise(6, 0, (c, h, w)))
    assert torch.equal(fixed.next(*flows), _white_noise(6, 0, (c, h, w)))
    resample = make_warper("resample", c, h, w, seed=6)
    resample.first()
    resample.next(*flows)
    assert torch.equal(resample.next(*flows), _white_noise(6, 2, (c, h, w)))
    gp_fixed = make_warper("gp-fixed", c, h, w, seed=6)  # default: 3000 features
    want = _gp_fresh(6, 0, c, h, w, 3000)
    assert torch.equal(gp_fixed.first(), want) and torch.equal(gp_fixed.next(*flows), want)
    gp_resample = make_warper("gp-resample", c, h, w, seed=6, gp_features=32)
    gp_resample.first()
    assert torch.equal(gp_resample.next(*flows), _gp_fresh(6, 1, c, h, w, 32))
    scaled = make_warper("gp-fixed", c, h, w, seed=6, gp_features=32, gp_length_scale=0.3)
    field = GPNoise(channels=c, n_features=32, seed=6, length_scale=0.3)
    assert torch.equal(scaled.first(), field.grid(h, w))


def _integral_reference(
    prev: torch.Tensor, forward: torch.Tensor, backward: torch.Tensor, seed: int, frame: int
) -> torch.Tensor:
    """IntegralWarper's docstring, pixel by pixel in float64: edges (backward ones in target
    order, then forward ones in source order, the order of the seeded Z draw), Brownian-bridge
    parts of each source, targets' normalised sums, fresh white noise without an edge."""
    from warpcore.noise import derive_seed

    c, h, w = prev.shape
    edges = []
    for q in range(h * w):
        sx, sy = _cell(q % w, q // w, backward)
        if 0 <= sx < w and 0 <= sy < h:
            edges.append((sy * w + sx, q))
    for p in range(h * w):
        tx, ty = _cell(p % w, p // w, forward)
        if 0 <= tx < w and 0 <= ty < h:
            edges.append((p, ty * w + tx))
    g = torch.Generator().manual_seed(derive_seed(seed, 3, frame))
    z = torch.randn((c, len(edges)), generator=g, dtype=torch.float64)
    degree = [0] * (h * w)
    for p, _ in edges:
        degree[p] += 1
    x = prev.reshape(c, -1).double()
    bridge = torch.zeros((c, h * w), dtype=torch.float64)
    for e, (p, _) in enumerate(edges):
        bridge[:, p] += math.sqrt(1.0 / degree[p]) * z[:, e]
    total = torch.zeros((c, h * w), dtype=torch.float64)
    weight = [0.0] * (h * w)
    for e, (p, q) in enumerate(edges):
        a = 1.0 / degree[p]
        total[:, q] += a * x[:, p] + math.sqrt(a) * z[:, e] - a * bridge[:, p]
        weight[q] += a
    out = _white_noise(seed, frame, (c, h, w)).reshape(c, -1).double()
    for q in range(h * w):
        if weight[q] > 0:
            out[:, q] = total[:, q] / math.sqrt(weight[q])
    return out.reshape(c, h, w)


def test_integral_warp_is_the_brownian_bridge_split_of_its_docstring() -> None:
    """Three frames of random sub-pixel flows (2-3 px, so some targets have no edge and some
    sources several) against a per-edge float64 reference. Mutants: every part of the split
    (shares, roots, bridge, normalisation, the no-edge test), the edges and their order, the
    split's seed stream and frame."""
    c, h, w, seed = 2, 5, 6, 8
    wp = make_warper("integral", c, h, w, seed=seed)
    prev = wp.first()
    assert torch.equal(prev, _white_noise(seed, 0, (c, h, w)))
    for frame in (1, 2, 3):
        forward, backward = _eighths(h, w, 10 + frame), _eighths(h, w, 20 + frame)
        got = wp.next(forward, backward)
        want = _integral_reference(prev, forward, backward, seed, frame)
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-6)
        prev = got


def test_gp_warp_on_a_non_square_frame_follows_a_translation_from_float64_state() -> None:
    """Non-square frame (the unit scale per axis) and the float64 state: a float64 flow is
    rounded to float32 on input like any other. Mutants: the per-axis scale, the state dtype,
    the input cast."""
    c, h, w = 2, 6, 10
    wp = make_warper("gp", c, h, w, seed=2, gp_features=64)
    assert wp.state_dict()["displacement"].dtype == torch.float64
    wp.first()
    back = torch.tensor([-1.0, 2.0])[:, None, None].expand(2, h, w)
    got = wp.next(-back, back)
    field = GPNoise(channels=c, n_features=64, seed=2, res=(w, h))
    torch.testing.assert_close(got, field.grid(h, w, origin=(-1.0 / w, 2.0 / h)), rtol=0, atol=1e-5)
    a = make_warper("gp", c, h, w, seed=2, gp_features=64)
    b = make_warper("gp", c, h, w, seed=2, gp_features=64)
    a.first()
    b.first()
    flow64 = _eighths(h, w, 5).double() + 1e-9  # not representable in float32
    a.next(-flow64, flow64)
    b.next(-flow64.float(), flow64.float())
    assert torch.equal(a.state_dict()["displacement"], b.state_dict()["displacement"])


@pytest.mark.parametrize("scheme", ["gp", "integral", "nearest"])
def test_fast_forward_counts_frames_and_checks_both_flows_by_name(scheme: str) -> None:
    """Mutants: the frame counter of the gp branch, the other schemes' branch (``next``), the
    start check (``< 0``) and the names in the flow checks."""
    from warpcore.errors import InvalidInput
    from warpcore.warps import fast_forward

    c, h, w = 2, 4, 5
    flows = [(_eighths(h, w, k), _eighths(h, w, 10 + k)) for k in range(3)]
    seq = make_warper(scheme, c, h, w, seed=1, gp_features=16)
    seq.first()
    for pair in flows:
        seq.next(*pair)
    ff = make_warper(scheme, c, h, w, seed=1, gp_features=16)
    with pytest.raises(InvalidInput, match=r"first\(\)"):
        fast_forward(ff, flows)
    ff.first()
    fast_forward(ff, flows)
    got, want = ff.state_dict(), seq.state_dict()
    assert got.keys() == want.keys() and int(got["frame"]) == 3
    assert all(torch.equal(got[k], want[k]) for k in want)
    bad = torch.zeros(2, h, w + 1)
    with pytest.raises(InvalidInput, match=r"^forward: expected shape \(2, 4, 5\)"):
        fast_forward(ff, [(bad, flows[0][1])])
    with pytest.raises(InvalidInput, match=r"^backward: expected shape \(2, 4, 5\)"):
        fast_forward(ff, [(flows[0][0], bad)])
    if scheme == "gp":
        fresh = make_warper(scheme, c, h, w, seed=1, gp_features=16)
        with pytest.raises(InvalidInput, match=r"^fast_forward: call first\(\) before"):
            fast_forward(fresh, flows)


def test_make_warper_bounds_are_inclusive_and_errors_say_what_is_accepted() -> None:
    """Mutants: each bound of channels (1-64), height and width (1-16384), seed (0-2^63-1),
    the error texts, and the GP arguments' early check."""
    from warpcore.errors import InvalidInput

    for kw in (
        {"channels": 64, "height": 1, "width": 1, "seed": 0},
        {"channels": 1, "height": 1 << 14, "width": 1, "seed": 2**63 - 1},
        {"channels": 1, "height": 1, "width": 1 << 14, "seed": 0},
    ):
        assert make_warper("fixed", **kw).first().shape == (
            kw["channels"],
            kw["height"],
            kw["width"],
        )
    cases = [
        ({"channels": 0}, "channels: expected an integer in [1, 64], got 0"),
        ({"channels": 65}, "channels: expected an integer in [1, 64], got 65"),
        ({"height": 0}, "height: expected an integer in [1, 16384], got 0"),
        ({"height": (1 << 14) + 1}, "height: expected an integer in [1, 16384], got 16385"),
        ({"width": 0}, "width: expected an integer in [1, 16384], got 0"),
        ({"width": (1 << 14) + 1}, "width: expected an integer in [1, 16384], got 16385"),
        ({"seed": -1}, f"seed: expected an integer in [0, {2**63 - 1}], got -1"),
        ({"seed": 2**63}, f"seed: expected an integer in [0, {2**63 - 1}], got {2**63}"),
    ]
    for kw, message in cases:
        args = {"channels": 1, "height": 2, "width": 2, "seed": 0} | kw
        with pytest.raises(InvalidInput) as err:
            make_warper("fixed", **args)
        assert str(err.value) == message
    with pytest.raises(InvalidInput) as err:
        make_warper("warp-drive", 1, 2, 2, 0)
    assert str(err.value) == "scheme: got 'warp-drive'; accepted: " + ", ".join(
        ["fixed", "resample", "nearest", "bilinear", "integral"]
        + ["gp", "gp-fixed", "gp-resample", "gp-nearest"]
    )
    with pytest.raises(InvalidInput, match="^length_scale:"):
        make_warper("fixed", 1, 2, 2, 0, gp_length_scale=-1.0)  # checked for every scheme


def test_warper_flow_and_state_errors_name_the_problem() -> None:
    """Exact texts of the flow and state checks; a state's tensors take the warper's dtype.
    Mutants: the error texts, the ``or``s of the checks, the state's dtype cast."""
    from warpcore.errors import InvalidInput

    h, w = 3, 4
    wp = make_warper("nearest", 2, h, w, seed=0)
    with pytest.raises(InvalidInput) as err:
        wp.next(torch.zeros(2, h, w), torch.zeros(2, h, w))
    assert str(err.value) == "next(): call first() (or load_state_dict) before next()"
    wp.first()
    grid = "a floating-point tensor (2, 3, 4)"
    for flow, message in (
        ([0.0], f"forward: expected {grid}, got list"),
        (torch.zeros(2, h, w, dtype=torch.int32), f"forward: expected {grid}, got torch.int32"),
        (
            torch.zeros(2, h, w + 1),
            "forward: expected shape (2, 3, 4) on the noise grid, got (2, 3, 5)",
        ),
        (
            torch.full((2, h, w), math.inf),
            "forward: expected finite flow values, got NaN or infinity",
        ),
    ):
        with pytest.raises(InvalidInput) as err:
            wp.next(flow, torch.zeros(2, h, w))
        assert str(err.value) == message
    with pytest.raises(InvalidInput) as err:
        wp.load_state_dict([1])  # type: ignore[arg-type]
    assert str(err.value) == "state: expected keys ['frame', 'noise'], got list"
    with pytest.raises(InvalidInput) as err:
        wp.load_state_dict({"frame": torch.tensor(1), "other": torch.zeros(1)})
    assert str(err.value) == "state: expected keys ['frame', 'noise'], got ['frame', 'other']"
    with pytest.raises(InvalidInput) as err:
        wp.load_state_dict({"frame": torch.tensor(1), "noise": torch.zeros(2, h, w + 1)})
    assert str(err.value) == "state['noise']: expected a tensor of shape (2, 3, 4)"
    with pytest.raises(InvalidInput, match=r"^state\['noise'\]"):
        wp.load_state_dict({"frame": torch.tensor(1), "noise": [0.0]})
    wp.load_state_dict(
        {"frame": torch.tensor(4), "noise": torch.ones(2, h, w, dtype=torch.float64)}
    )
    assert wp.state_dict()["frame"] == 4 and wp.state_dict()["frame"].dtype == torch.int64
    out = wp.next(torch.zeros(2, h, w), torch.zeros(2, h, w))
    assert out.dtype == torch.float32 and torch.equal(out, torch.ones(2, h, w))


# ---------------------------------------------------------------------------------------------
# noise.py: seeds, coordinates, parameter checks, and the choice between the exact and
# FINUFFT paths of GPNoise.at


def test_derive_seed_golden_values() -> None:
    """splitmix64 over (seed, keys..., 0x5EED), top 63 bits: the same numbers on every machine
    and version, so a saved shot resumes with the same fresh noise. Mutants: each constant,
    shift and mask; negative and > 64-bit keys are taken modulo 2^64."""
    from warpcore.noise import derive_seed

    assert derive_seed(0) == 358316333273208026
    assert derive_seed(12345, 1, 7) == 250160177729051520
    assert derive_seed(2**63 - 1, -1, 2**64 + 5) == 955546131561830631
    assert derive_seed(7, 3) == 6231181098764911451


def test_grid_coords_and_default_length_scale() -> None:
    """Pixel centres in float64 by default, any dtype on request, bounds 1..2^20 by name.
    Mutants: the +0.5, the divisions, the stacking order, the default dtype, the bounds."""
    from warpcore.errors import InvalidInput
    from warpcore.noise import default_length_scale, grid_coords

    got = grid_coords(2, 3)
    want = [
        [[1 / 6, 0.25], [0.5, 0.25], [5 / 6, 0.25]],
        [[1 / 6, 0.75], [0.5, 0.75], [5 / 6, 0.75]],
    ]
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-15)
    assert grid_coords(1, 2, dtype=torch.float32).dtype == torch.float32
    assert grid_coords(1 << 20, 1).shape == (1 << 20, 1, 2)
    for h, w, name in ((0, 1, "h"), (1, 0, "w"), ((1 << 20) + 1, 1, "h"), (1, (1 << 20) + 1, "w")):
        with pytest.raises(InvalidInput) as err:
            grid_coords(h, w)
        bad = h if name == "h" else w
        assert str(err.value) == f"{name}: expected an integer in [1, 1048576], got {bad}"
    assert default_length_scale(128) == 2.0 / (math.pi * 128)


def test_gp_noise_defaults_and_parameter_checks_say_what_is_accepted() -> None:
    """Mutants: the constructor's defaults (4 channels, 3000 features, res 128, truncation 2,
    seed 0), each bound (inclusive), the ``and``/``or`` of the number checks (bools are not
    numbers), the (width, height) order of ``res`` and of a length-scale pair, the texts."""
    from warpcore.errors import InvalidInput
    from warpcore.noise import MAX_CHANNELS, MAX_FEATURES

    f = GPNoise()
    assert (f.channels, f.n_features, f.truncation, f.seed) == (4, 3000, 2.0, 0)
    assert f.length_scale == (2.0 / (math.pi * 128),) * 2 and f.w.shape == (3000, 4)
    assert GPNoise(channels=1, n_features=4, res=(32, 16)).length_scale == (
        2.0 / (math.pi * 32),
        2.0 / (math.pi * 16),
    )
    assert GPNoise(channels=1, n_features=4, res=[8, 1 << 20]).length_scale[1] == 2.0 / (
        math.pi * (1 << 20)
    )
    assert GPNoise(channels=1, n_features=4, length_scale=(0.1, 0.2)).length_scale == (0.1, 0.2)
    assert GPNoise(channels=1, n_features=4, length_scale=[3, 1e-9]).length_scale == (3.0, 1e-9)
    ok = GPNoise(channels=MAX_CHANNELS, n_features=1, truncation=10.0, seed=2**63 - 1)
    assert ok.w.shape == (1, MAX_CHANNELS) and ok.truncation == 10.0
    assert GPNoise(channels=1, n_features=MAX_FEATURES, res=1).z.shape == (MAX_FEATURES, 2)
    assert GPNoise(channels=1, n_features=2, truncation=1e-3).truncation == 1e-3
    scale_text = "length_scale: expected a finite number > 0 (or an (x, y) pair), got"
    cases = [
        ({"channels": 65}, "channels: expected an integer in [1, 64], got 65"),
        ({"channels": True}, "channels: expected an integer in [1, 64], got True"),
        ({"n_features": 100_001}, "n_features: expected an integer in [1, 100000], got 100001"),
        ({"seed": 2**63}, f"seed: expected an integer in [0, {2**63 - 1}], got {2**63}"),
        ({"truncation": 10.001}, "truncation: expected a number in (0, 10], got 10.001"),
        ({"truncation": 0.0}, "truncation: expected a number in (0, 10], got 0.0"),
        ({"truncation": True}, "truncation: expected a number in (0, 10], got True"),
        ({"truncation": "2"}, "truncation: expected a number in (0, 10], got '2'"),
        ({"res": (8, 8, 8)}, "res: expected an int or (width, height), got (8, 8, 8)"),
        ({"res": (8, 0)}, "res: expected an integer in [1, 1048576], got 0"),
        ({"res": (1 << 20) + 1}, "res: expected an integer in [1, 1048576], got 1048577"),
        ({"length_scale": 0.0}, f"{scale_text} 0.0"),
        ({"length_scale": (0.1, -0.1)}, f"{scale_text} (0.1, -0.1)"),
        ({"length_scale": (0.1, math.inf)}, f"{scale_text} (0.1, inf)"),
        ({"length_scale": (0.1, 0.1, 0.1)}, f"{scale_text} (0.1, 0.1, 0.1)"),
        ({"length_scale": True}, f"{scale_text} True"),
        ({"length_scale": "0.1"}, f"{scale_text} '0.1'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidInput) as err:
            GPNoise(**{"n_features": 4, **kwargs})
        assert str(err.value) == message, kwargs


def test_check_int_and_points_checks_say_what_is_wrong() -> None:
    """Mutants: check_int's inclusive bounds and bool/float refusal; the point checks' texts,
    their 1-D case and the non-numpy dtypes (bfloat16 has no numpy twin)."""
    from warpcore.errors import InvalidInput
    from warpcore.noise import check_int

    check_int("n", 1, 1, 3)
    check_int("n", 3, 1, 3)
    for bad in (0, 4, True, 2.0, "2"):
        with pytest.raises(InvalidInput) as err:
            check_int("n", bad, 1, 3)
        assert str(err.value) == f"n: expected an integer in [1, 3], got {bad!r}"
    f = GPNoise(channels=2, n_features=8, res=8, seed=1)
    one = f.at(torch.tensor([0.25, 0.5], dtype=torch.float64))
    assert one.shape == (2,)
    torch.testing.assert_close(one, f.at(torch.tensor([[0.25, 0.5]]))[:, 0], rtol=0, atol=1e-6)
    half = f.at(torch.tensor([[0.25, 0.5]], dtype=torch.bfloat16))
    assert half.shape == (2, 1) and bool(torch.isfinite(half).all())
    kind = "xy: expected a floating-point tensor (..., 2), got"
    nonfinite = "xy: expected finite coordinates, got NaN or infinity"
    cases = [
        ([0.0, 0.0], f"{kind} list"),
        (torch.zeros(3, 2, dtype=torch.int64), f"{kind} torch.int64"),
        (torch.zeros(4, 3), "xy: expected shape (..., 2) of (x, y) pairs, got (4, 3)"),
        (torch.tensor(0.5), "xy: expected shape (..., 2) of (x, y) pairs, got ()"),
        (torch.tensor([[0.0, math.nan]]), nonfinite),
        (torch.tensor([[math.inf, 0.0]], dtype=torch.bfloat16), nonfinite),
    ]
    for xy, message in cases:
        with pytest.raises(InvalidInput) as err:
            f.at(xy)
        assert str(err.value) == message
    with pytest.raises(InvalidInput) as err:
        f.at(torch.zeros(1, 2), method="fft")
    assert str(err.value) == "method: expected 'auto', 'exact' or 'nufft', got 'fft'"
    empty = f.at(torch.zeros(0, 3, 2), method="nufft")
    assert empty.shape == (2, 0, 3) and empty.dtype == torch.float32


needs_finufft = pytest.mark.skipif(
    not __import__("warpcore.noise", fromlist=["x"]).nufft_available(),
    reason="finufft is not installed",
)


@needs_finufft
def test_at_picks_finufft_from_512_points_per_tile_and_forced_nufft_everywhere() -> None:
    """Bit-exact path choice (both paths are deterministic and differ at ~1e-7). Here
    max|z| = 4, so tiles are cells of side 2 * 2048 / 4 = 1024 counted from the lowest point.
    The points' y (-300) is below every x, so a lattice origin shared by both axes is caught.
    Under "auto" a tile of 512 points takes FINUFFT and one of 511 the exact sum, alone and
    among other tiles; clusters at x = 100, 1000 share a tile (one anchor), 2000 and 4000 have
    their own; a tile too sparse for FINUFFT to pay is summed exactly under "auto" and
    transformed under "nufft". Mutants: the 512 bound in ``at`` and in the tiles, the tile
    side and origin, the split of tiles, the cost test, ``min_points`` of "nufft", the dtype."""
    f = GPNoise(channels=3, n_features=512, length_scale=0.5, seed=4)  # max |z| = 4
    g = torch.Generator().manual_seed(0)

    def cluster(n: int, x: float, span: float = 1.0) -> torch.Tensor:
        pts = torch.rand((n, 2), generator=g, dtype=torch.float64) * span
        return pts + torch.tensor([x, -300.0], dtype=torch.float64)  # y: not the lowest x

    nufft = lambda pts: torch.from_numpy(f._nufft(pts.numpy())).t()  # noqa: E731
    exact = lambda pts: f.at(pts, method="exact")  # noqa: E731
    a, d = cluster(512, 0.0), cluster(511, 0.0)
    assert f.at(a).dtype == torch.float32 and torch.equal(f.at(a), nufft(a))
    assert torch.equal(f.at(d), exact(d))
    assert torch.equal(f.at(d, method="nufft"), nufft(d))  # forced: even under 512 points
    a32 = a.float()  # float32 points are widened exactly before either path
    assert torch.equal(f.at(a32), nufft(a32.double()))
    assert not torch.equal(nufft(a), exact(a))  # so the comparisons tell the paths apart
    ab = torch.cat((cluster(300, 100.0), cluster(300, 1000.0)))
    c, d = cluster(512, 2000.0), cluster(511, 4000.0)
    every = torch.cat((ab, c, d))
    got = f.at(every)
    assert got.dtype == torch.float32
    assert torch.equal(got, torch.cat((nufft(ab), nufft(c), exact(d)), dim=1))
    assert torch.equal(f.at(every, method="nufft"), torch.cat((nufft(ab), nufft(c), nufft(d)), 1))
    for near, far in ((cluster(512, 0.0), cluster(512, 1500.0)), (cluster(512, -1500.0), a)):
        # 1500 > 1024: two tiles, also when the lowest coordinate is negative
        assert torch.equal(f.at(torch.cat((near, far))), torch.cat((nufft(near), nufft(far)), 1))
    # 600 points over 300 x 300 units (one tile): ~3.8e5 fine-grid cells x 6 cost more than
    # 600 x 512 cosines, so "auto" sums them exactly.
    sparse = cluster(600, 0.0, 300.0)
    assert torch.equal(f.at(sparse), exact(sparse))
    assert torch.equal(f.at(sparse, method="nufft"), nufft(sparse))


def test_without_finufft_at_is_exact_and_refuses_nufft(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutants: the availability test, the "nufft" refusal and its text."""
    import warpcore.noise as noise_module
    from warpcore.errors import InvalidInput

    f = GPNoise(channels=2, n_features=32, res=8, seed=3)
    pts = torch.rand((600, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = f.at(pts, method="exact")
    monkeypatch.setattr(noise_module, "finufft", None)
    assert not noise_module.nufft_available()
    assert torch.equal(f.at(pts), want)
    with pytest.raises(InvalidInput) as err:
        f.at(pts, method="nufft")
    assert str(err.value) == "method: 'nufft' needs the finufft package and a CPU field"


@needs_finufft
def test_at_cost_test_breaks_even_exactly_and_one_tile_spans_exactly_its_side() -> None:
    """The cost test ``6 * prod(max|z_k| * half-span_k + 16) <= points * features`` at its
    break-even point, and a spread of exactly one tile side kept in one tile. Here max|z| = 4,
    so a tile's side is 1024 and a tile spanning 120 x 92 has (240 + 16) (184 + 16) = 51200
    fine-grid cells: 6 x 51200 = 600 x 512 exactly. Mutants: ``<=`` -> ``<`` in the cost test,
    its ``+ 16`` -> ``+ 17`` or ``- 16``; the one-tile shortcut skipped, its ``<= side`` ->
    ``< side``, its spread from the lowest coordinate of either axis."""
    f = GPNoise(channels=2, n_features=512, length_scale=0.5, seed=5)  # max |z| = 4
    g = torch.Generator().manual_seed(2)
    nufft = lambda pts: torch.from_numpy(f._nufft(pts.numpy())).t()  # noqa: E731
    exact = lambda pts: f.at(pts, method="exact")  # noqa: E731

    def spread(n: int, size: tuple[float, float], y0: float = 0.0) -> torch.Tensor:
        pts = torch.rand((n, 2), generator=g, dtype=torch.float64) * torch.tensor(size)
        pts[0], pts[1] = 0.0, torch.tensor(size, dtype=torch.float64)  # exact extremes
        return pts + torch.tensor([0.0, y0], dtype=torch.float64)

    even = spread(600, (120.0, 92.0))  # break-even: FINUFFT
    assert not torch.equal(nufft(even), exact(even))  # so the comparisons tell the paths apart
    assert torch.equal(f.at(even), nufft(even))
    over = spread(599, (120.0, 92.0))  # one point fewer: the exact sum
    assert torch.equal(f.at(over), exact(over))
    # x spans exactly one side: one tile of 512 points. y lies far below x, so a spread
    # measured from the lowest coordinate of either axis would exceed the side.
    wide = spread(512, (1024.0, 1.0), y0=-300.0)
    assert torch.equal(f.at(wide), nufft(wide))


def test_at_is_float32_whatever_torchs_default_dtype() -> None:
    """``at`` and ``grid`` return float32 as documented, also in a program that set torch's
    default dtype to float64. Mutant: the exact path's output buffer without its dtype."""
    f = GPNoise(channels=2, n_features=16, res=8, seed=6)
    pts = torch.rand((5, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    want = f.at(pts, method="exact")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got, grid = f.at(pts, method="exact"), f.grid(3, 4)
    finally:
        torch.set_default_dtype(old)
    assert got.dtype == torch.float32 and grid.dtype == torch.float32
    assert torch.equal(got, want)


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random (h, w, 3) float32 texture on the 8-bit levels k / 255."""
    import cv2

    noise = np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (np.rint(smooth * 255.0) / 255.0).astype(np.float32)


def _object_pair(h: int, w: int, seed: int) -> tuple[np.ndarray, ...]:
    """Background moving +2 px in x; a 24 x 28 object of its own texture moving -6 px."""
    a = _texture(h, w, seed)
    b = np.roll(a, 2, axis=1)  # b(y) = a(y - (2, 0)): the background's flow a -> b is +2
    patch = _texture(24, 28, seed + 1)
    mask_a, mask_b = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    a[40:64, 60:88], mask_a[40:64, 60:88] = patch, 1.0
    b[40:64, 54:82], mask_b[40:64, 54:82] = patch, 1.0
    return a, b, mask_a, mask_b


def test_plate_flow_pair_sees_only_the_background_in_the_union_of_both_masks() -> None:
    """The flow of the clean plate: inside the hole it follows the background (+2 px), the
    object's pixels do not matter at all, the two masks count as their union whichever frame
    each came with, and the hole grows by 4% of the shorter side (at least 4 px) by default.
    Mutants: no fill of either frame, ``|`` -> ``&``, one mask used twice, the default growth's
    0.04, ``min``, ``round`` and floor of 4, an explicit ``dilate`` ignored, the method not passed
    on, the size check."""
    from warpcore.errors import InvalidInput
    from warpcore.flow import flow_pair, plate_flow_pair

    a, b, mask_a, mask_b = _object_pair(128, 160, 0)
    fwd, bwd = plate_flow_pair(a, b, mask_a, mask_b)
    assert fwd.dtype == torch.float32 and fwd.shape == bwd.shape == (2, 128, 160)
    hole_a, hole_b = torch.from_numpy(mask_a) > 0, torch.from_numpy(mask_b) > 0
    assert (fwd[0][hole_a] - 2.0).abs().median() < 0.1 and fwd[1][hole_a].abs().median() < 0.1
    assert (bwd[0][hole_b] + 2.0).abs().median() < 0.1 and bwd[1][hole_b].abs().median() < 0.1
    other_a, other_b = a.copy(), b.copy()  # another object: the same plate flow, bit for bit
    other_a[40:64, 60:88] = other_b[40:64, 54:82] = _texture(24, 28, 7)
    union = np.maximum(mask_a, mask_b)
    again = plate_flow_pair(other_a, other_b, np.zeros_like(union), union)
    assert torch.equal(again[0], fwd) and torch.equal(again[1], bwd)
    grown = plate_flow_pair(a, b, mask_a, mask_b, dilate=5)  # round(0.04 * 128) = 5
    assert torch.equal(grown[0], fwd) and torch.equal(grown[1], bwd)

    a, b, mask_a, mask_b = _object_pair(72, 96, 3)
    small = plate_flow_pair(a, b, mask_a, mask_b)  # round(0.04 * 72) = 3: at least 4
    floor = plate_flow_pair(a, b, mask_a, mask_b, dilate=4)
    assert torch.equal(small[0], floor[0]) and torch.equal(small[1], floor[1])
    wider = plate_flow_pair(a, b, mask_a, mask_b, dilate=8)  # an explicit growth is used
    assert not torch.equal(wider[0], small[0]) and not torch.equal(wider[1], small[1])
    fast = plate_flow_pair(a, b, mask_a, mask_b, method="dis-fast")
    assert not torch.equal(fast[0], small[0])
    none = np.zeros_like(mask_a)
    plain = plate_flow_pair(a, b, none, none, method="farneback")  # nothing to remove
    want = flow_pair(a, b, "farneback")
    assert torch.equal(plain[0], want[0]) and torch.equal(plain[1], want[1])
    with pytest.raises(InvalidInput) as err:
        plate_flow_pair(a, b[:, :95], mask_a, mask_b)
    assert str(err.value) == "b: expected a frame of size (72, 96) like a, got (72, 95)"
    with pytest.raises(InvalidInput, match=r"^mask_b: expected shape \(H, W\) = \(72, 96\)"):
        plate_flow_pair(a, b, mask_a, mask_b[:70])


def test_plate_flow_frames_in_every_layout_become_float32_rgb() -> None:
    """``_rgb_chw``: torch (C, H, W) keeps its first three channels; numpy (H, W), (H, W, 1),
    (H, W, 3) and (H, W, 4) become (3, H, W), grey repeated, alpha dropped; all float32, after
    the same checks as every flow input. Mutants: each layout branch, the slices, the dtype."""
    from warpcore.errors import InvalidInput
    from warpcore.flow import _rgb_chw

    rgb = _texture(6, 7, 5)
    rgba = np.concatenate((rgb, np.full((6, 7, 1), 0.5, np.float32)), axis=2)
    want = torch.from_numpy(rgb).permute(2, 0, 1)
    for frame in (rgb, rgba, rgb.astype(np.float64)):
        got = _rgb_chw(frame, "a")
        assert got.dtype == torch.float32 and torch.equal(got, want)
    for frame in (want, torch.from_numpy(rgba).permute(2, 0, 1).double()):
        got = _rgb_chw(frame, "a")
        assert got.dtype == torch.float32 and torch.equal(got, want)
    grey = rgb[..., 1]
    for frame in (grey, grey[..., None]):
        assert torch.equal(_rgb_chw(frame, "a"), torch.from_numpy(grey)[None].repeat(3, 1, 1))
    one = torch.from_numpy(grey)[None]
    assert torch.equal(_rgb_chw(one, "a"), one)
    with pytest.raises(InvalidInput, match=r"^b: expected floats in \[0, 1\], got dtype uint8"):
        _rgb_chw((rgb * 255).astype(np.uint8), "b")


def test_raft_available_says_what_is_missing(monkeypatch, tmp_path) -> None:
    """Mutants: the torchvision probe, the weights path from the environment or the default
    path, each sentence."""
    import importlib.util

    import warpcore.flow as flow_module

    real_find = importlib.util.find_spec
    have_tv = lambda name, *a: object() if name == "torchvision" else real_find(name, *a)  # noqa: E731
    no_tv = lambda name, *a: None if name == "torchvision" else real_find(name, *a)  # noqa: E731
    weights = tmp_path / "raft.safetensors"
    monkeypatch.setenv("WARPDIFF_RAFT_WEIGHTS", str(weights))
    monkeypatch.setattr(importlib.util, "find_spec", no_tv)
    assert flow_module.raft_available() == (
        "flow method 'raft' needs torchvision (install it matching your torch, e.g. "
        "'pip install --no-deps torchvision') and RAFT-large weights; "
        "use 'dis' (the default) otherwise"
    )
    monkeypatch.setattr(importlib.util, "find_spec", have_tv)
    assert flow_module.raft_available() == (
        f"flow method 'raft' needs RAFT-large weights as a safetensors state dict of "
        f"torchvision's raft_large at {weights} (or set WARPDIFF_RAFT_WEIGHTS); "
        "use 'dis' (the default) otherwise"
    )
    weights.write_bytes(b"")
    assert flow_module.raft_available() is None
    monkeypatch.delenv("WARPDIFF_RAFT_WEIGHTS")
    default = flow_module.RAFT_DEFAULT_WEIGHTS
    assert default == Path.home() / ".cache" / "warpdiff" / "raft_large.safetensors"
    if not default.is_file():
        assert f"raft_large at {default} (or set" in flow_module.raft_available()


def test_raft_wrapper_pads_scales_and_crops_for_torchvisions_raft(monkeypatch, tmp_path) -> None:
    """The RAFT wrapper against a stand-in for torchvision's ``raft_large`` (torchvision is
    not installed here): frames clipped to [0, 1], scaled to [-1, 1], padded by replicating
    the last row and column up to multiples of 8, the weights loaded from the safetensors
    file, the model in eval mode without gradients, the last refinement cropped back to the
    frame as float32, the weights from the default path without the variable. Mutants: each
    of those steps, and numpy (H, W, 4) frames' alpha."""
    import importlib.machinery
    import sys
    import types

    from safetensors.torch import save_file

    import warpcore.flow as flow_module

    seen: dict[str, object] = {}

    class FakeRaft(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(2))

        def forward(self, one: torch.Tensor, two: torch.Tensor) -> list[torch.Tensor]:
            seen.update(one=one, two=two, training=self.training, grad=torch.is_grad_enabled())
            flow = (two - one)[:, 1:] * 10.0 + self.bias.view(1, 2, 1, 1).double()
            return [torch.zeros_like(flow), -flow, flow]  # only the last refinement counts

    def raft_large(**kwargs: object) -> FakeRaft:
        seen["kwargs"] = kwargs
        return FakeRaft()

    modules = {}
    for name in ("torchvision", "torchvision.models", "torchvision.models.optical_flow"):
        modules[name] = types.ModuleType(name)
        modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, modules[name])
    modules["torchvision.models.optical_flow"].raft_large = raft_large
    weights = tmp_path / "raft.safetensors"
    save_file({"bias": torch.tensor([0.25, -0.5])}, str(weights))
    monkeypatch.setenv("WARPDIFF_RAFT_WEIGHTS", str(weights))

    a = np.random.default_rng(4).random((13, 18, 4)).astype(np.float32) * 1.2 - 0.1
    b = np.roll(a, 1, axis=1)
    a[..., 3] = b[..., 3] = 5.0  # alpha: must not reach the model
    flow = flow_module.estimate_flow(a, b, "raft")
    assert seen["kwargs"] == {"weights": None, "progress": False}
    assert seen["training"] is False and seen["grad"] is False
    one, two = seen["one"], seen["two"]
    assert one.shape == two.shape == (1, 3, 16, 24)
    ta = torch.from_numpy(a[..., :3]).permute(2, 0, 1).double().clamp(0, 1) * 2 - 1
    tb = torch.from_numpy(b[..., :3]).permute(2, 0, 1).double().clamp(0, 1) * 2 - 1
    pad = lambda t: torch.nn.functional.pad(t[None], (0, 6, 0, 3), mode="replicate")  # noqa: E731
    torch.testing.assert_close(one.double(), pad(ta), rtol=0, atol=1e-6)
    torch.testing.assert_close(two.double(), pad(tb), rtol=0, atol=1e-6)
    want = (tb - ta)[1:] * 10.0 + torch.tensor([0.25, -0.5], dtype=torch.float64).view(2, 1, 1)
    assert flow.dtype == torch.float32 and flow.shape == (2, 13, 18) and flow.is_contiguous()
    torch.testing.assert_close(flow.double(), want, rtol=0, atol=1e-5)
    torch_frames = [torch.from_numpy(x).permute(2, 0, 1) for x in (a, b)]
    assert torch.equal(flow_module.estimate_flow(*torch_frames, "raft"), flow)
    monkeypatch.delenv("WARPDIFF_RAFT_WEIGHTS")  # the default path, read when RAFT runs
    monkeypatch.setattr(flow_module, "RAFT_DEFAULT_WEIGHTS", weights)
    assert torch.equal(flow_module.estimate_flow(a, b, "raft"), flow)


def test_gp_noise_keeps_its_numbers_as_floats() -> None:
    """Integers given for the truncation or the length scales are stored as floats, so the
    attributes have one type whatever was passed. Mutants: each ``float()``."""
    f = GPNoise(channels=1, n_features=4, truncation=3, length_scale=[3, 1])
    assert type(f.truncation) is float and f.truncation == 3.0
    assert isinstance(f.length_scale, tuple)
    assert [type(v) for v in f.length_scale] == [float, float] and f.length_scale == (3.0, 1.0)
    g = GPNoise(channels=1, n_features=4, length_scale=2)
    assert [type(v) for v in g.length_scale] == [float, float] and g.length_scale == (2.0, 2.0)


def test_flow_frames_become_8_bit_grey_rounded_and_clipped() -> None:
    """``_gray_u8``: RGB (not BGR) to grey by OpenCV's weights, values rounded to the nearest
    8-bit level and clipped (linear highlights above 1 are white), alpha ignored, one-channel
    and 2-D frames taken as they are, torch (C, H, W) like numpy (H, W, C), one-pixel frames
    accepted. Mutants: the scale, rounding and clip bounds, the channel slices and layouts,
    the size bound."""
    from warpcore.flow import _gray_u8

    rgb = np.zeros((1, 3, 3), np.float32)
    rgb[0, 0, 0] = rgb[0, 1, 1] = rgb[0, 2, 2] = 1.0  # red, green, blue pixels
    grey = _gray_u8(rgb, "a")
    assert grey.dtype == np.uint8 and grey.tolist() == [[76, 150, 29]]
    rgba = np.concatenate((rgb, np.full((1, 3, 1), 7.0, np.float32)), axis=2)
    assert _gray_u8(rgba, "a").tolist() == [[76, 150, 29]]
    torch_rgba = torch.from_numpy(rgba).permute(2, 0, 1).double()
    assert _gray_u8(torch_rgba, "a").tolist() == [[76, 150, 29]]
    assert _gray_u8(torch_rgba.bfloat16(), "a").tolist() == [[76, 150, 29]]  # no numpy twin
    levels = np.array([[-0.5, 0.0, 10.4 / 255, 10.6 / 255, 1.0, 3.0]], np.float64)
    want = [[0, 0, 10, 11, 255, 255]]
    assert _gray_u8(levels, "a").tolist() == want  # 2-D numpy: one grey channel
    assert _gray_u8(levels[..., None], "a").tolist() == want
    assert _gray_u8(torch.from_numpy(levels)[None], "a").tolist() == want
    assert _gray_u8(np.repeat(levels[..., None], 3, axis=2), "a").tolist() == want
    column = np.full((3, 1, 3), 0.5, np.float32)  # one pixel wide, then one pixel high
    assert _gray_u8(column, "a").tolist() == [[128]] * 3
    assert _gray_u8(column.transpose(1, 0, 2), "a").tolist() == [[128] * 3]


def test_flow_input_errors_name_the_frame_and_say_what_is_accepted() -> None:
    """Mutants: every sentence of ``_gray_u8`` and ``estimate_flow``, the accepted channel
    counts, the dtype and finiteness checks, the size comparison."""
    from warpcore.errors import InvalidInput
    from warpcore.flow import estimate_flow

    ok = np.full((16, 16, 3), 0.5, np.float32)
    layout = "expected a numpy (H, W, 3) frame, got"
    cases = [
        ((torch.zeros(2, 8, 8), ok), "a: expected a torch (3, H, W) frame, got (2, 8, 8)"),
        ((ok, torch.zeros(1, 3, 8, 8)), "b: expected a torch (3, H, W) frame, got (1, 3, 8, 8)"),
        (
            (ok, np.zeros((8, 8, 2), np.float32)),
            f"b: {layout} (8, 8, 2)",
        ),
        ((np.zeros(8, np.float32), ok), f"a: {layout} (8,)"),
        (
            (np.zeros((8, 8, 5), np.float32), ok),
            f"a: {layout} (8, 8, 5)",
        ),
        ((ok.astype(np.float16) > 0, ok), "a: expected floats in [0, 1], got dtype bool"),
        (([[0.5]], ok), "a: expected a torch (3, H, W) or numpy (H, W, 3) frame"),
        ((np.zeros((0, 8, 3), np.float32), ok), "a: empty frame of size (0, 8); expected H, W > 0"),
        ((ok, torch.zeros(3, 8, 0)), "b: empty frame of size (8, 0); expected H, W > 0"),
        (
            (ok, np.full((16, 16), np.inf, np.float32)),
            "b: contains NaN or infinite values; expected floats in [0, 1]",
        ),  # fmt: skip
        ((ok, ok[:, :15]), "a, b: frames differ in size, (16, 16) vs (16, 15); expected equal"),
    ]
    for (a, b), message in cases:
        with pytest.raises(InvalidInput) as err:
            estimate_flow(a, b)
        assert str(err.value) == message
    with pytest.raises(InvalidInput) as err:
        estimate_flow(ok, ok, "lucas-kanade")
    assert str(err.value) == (
        "method: got 'lucas-kanade'; accepted: dis, dis-fast, dis-ultrafast, farneback, raft"
    )
    for frame in (np.zeros((12, 16), np.float32), torch.zeros(1, 12, 16), torch.zeros(4, 12, 16)):
        flow = estimate_flow(frame, frame)  # one grey channel, or RGBA
        assert flow.dtype == torch.float32 and flow.shape == (2, 12, 16) and flow.is_contiguous()


@needs_finufft
def test_at_on_a_tile_of_two_to_the_seventeen_points_takes_finufft_threads() -> None:
    """From 2^17 points in one tile FINUFFT gets torch's thread count (at least 1); the field
    stays the exact sum's. Mutants: the thread count's ``max(1, ...)`` arguments."""
    from warpcore.noise import _NUFFT_THREADED_POINTS, grid_coords

    f = GPNoise(channels=2, n_features=16, res=64, seed=7)
    pts = grid_coords(256, 512)
    assert pts.shape[0] * pts.shape[1] == _NUFFT_THREADED_POINTS == 1 << 17
    got = f.at(pts)[:, ::37, ::41]  # the exact sum at every point is slow: check a sample
    want = f.at(pts[::37, ::41], method="exact")
    assert not torch.equal(got, want)  # FINUFFT, not the exact sum
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


def test_plate_flow_pair_names_the_bad_frame() -> None:
    """Mutants: the frame and mask names passed to the checks of ``plate_flow_pair``."""
    from warpcore.errors import InvalidInput
    from warpcore.flow import plate_flow_pair

    ok, bad = np.zeros((16, 16, 3), np.float32), np.zeros((16, 16, 2), np.float32)
    mask = np.zeros((16, 16), np.float32)
    for a, b, name in ((bad, ok, "a"), (ok, bad, "b")):
        with pytest.raises(InvalidInput) as err:
            plate_flow_pair(a, b, mask, mask)
        assert str(err.value) == f"{name}: expected a numpy (H, W, 3) frame, got (16, 16, 2)"
    for a_mask, b_mask, name in ((mask[1:], mask, "mask_a"), (mask, mask[:, 1:], "mask_b")):
        with pytest.raises(InvalidInput) as err:
            plate_flow_pair(ok, ok, a_mask, b_mask)
        bad = tuple((a_mask if name == "mask_a" else b_mask).shape)
        assert str(err.value) == f"{name}: expected shape (H, W) = (16, 16) or (1, H, W), got {bad}"


def test_farneback_finds_an_eight_pixel_shift_through_its_pyramid() -> None:
    """Farneback on one level (``levels`` or ``pyr_scale`` lost) misses an 8 px shift by about
    10 px (measured); with its 4-level pyramid the median error is about 0.005 px. Mutants:
    ``levels=None``, ``pyr_scale=None``."""
    from warpcore.flow import estimate_flow

    a = _texture(128, 160, 11)
    b = np.roll(a, (3, 8), axis=(0, 1))  # b(y) = a(y - (8, 3)): the flow a -> b is (8, 3)
    flow = estimate_flow(a, b, "farneback")[:, 24:-24, 24:-24]
    error = torch.hypot(flow[0] - 8.0, flow[1] - 3.0)
    assert error.median() < 0.05, error.median()


@pytest.mark.parametrize("scale", [2, 4])
def test_band_sr_projection_removes_block_means_at_every_scale(scale: int) -> None:
    # The SR correction is projected onto the null space of the area downsample: its block
    # means (scale x scale px) vanish and nothing else changes, at x2 as at x4; frames the
    # scale does not divide (in either axis) keep the correction as is.
    from warpcore.guidance import EquivarianceGuidance

    def guidance(h: int, w: int) -> EquivarianceGuidance:
        zeros = torch.zeros(1, 2, h, w)
        ones = torch.ones(1, 1, h, w)
        return EquivarianceGuidance(
            strength=0.8, forward=zeros, mask=ones, previous=torch.zeros(1, 1, 3, h, w),
            active=frozenset({0}), rule="band", backward=zeros, backward_mask=ones,
            measurement_scale=scale,
        )  # fmt: skip

    gen = torch.Generator().manual_seed(scale)
    c = torch.randn(1, 3, 8, 12, generator=gen, dtype=torch.float64)
    out = guidance(8, 12)._null_space(c)
    means = F.avg_pool2d(c, scale)
    expected = c - means.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert float(F.avg_pool2d(out, scale).abs().max()) < 1e-12
    for h, w in ((8, 12 + 1), (8 + 1, 12)):  # one axis divisible, the other not
        odd = torch.randn(1, 3, h, w, generator=gen, dtype=torch.float64)
        assert torch.equal(guidance(h, w)._null_space(odd), odd)


@pytest.mark.parametrize("rule", ["blend", "band"])
def test_blend_and_band_report_the_weighted_squared_residual(rule: str) -> None:
    # With a still flow (warp = identity, no sub-pixel blur) and a mask of ones except one
    # excluded pixel, the reported e_k is sum M (p - h)^2, and the correction is
    # lambda * M * (p - h) (block means removed for band's SR projection are off at scale 1).
    from warpcore.guidance import EquivarianceGuidance

    h_, w_ = 6, 8
    gen = torch.Generator().manual_seed(3)
    previous = torch.randn(2, 1, 3, h_, w_, generator=gen)
    denoised = torch.randn(1, 3, h_, w_, generator=gen)
    mask = torch.ones(1, h_, w_)
    mask[..., 2, 3] = 0.0
    g = EquivarianceGuidance(
        strength=0.6, forward=torch.zeros(2, h_, w_), mask=torch.ones(1, h_, w_),
        previous=previous, active=frozenset({0, 1}), rule=rule,
        backward=torch.zeros(2, h_, w_), backward_mask=mask,
    )  # fmt: skip
    correction, value = getattr(g, rule)(denoised, 1)
    residual = (previous[1] - denoised).double()
    assert value == pytest.approx(float((mask * residual**2).sum()), rel=1e-6)
    torch.testing.assert_close(correction.double(), 0.6 * mask * residual, rtol=1e-5, atol=1e-6)


def _separable_blur(values: np.ndarray, ax: np.ndarray, ay: np.ndarray) -> np.ndarray:
    """matched_blur's docstring by hand: along x then along y, each pixel becomes
    ``a v[i-1] + (1 - 2a) v[i] + a v[i+1]`` with that pixel's own ``a`` and edges replicated."""
    *_, h, w = values.shape
    rows = np.empty_like(values)
    for i in range(h):
        for j in range(w):
            left, right = values[..., i, max(j - 1, 0)], values[..., i, min(j + 1, w - 1)]
            rows[..., i, j] = ax[i, j] * (left + right) + (1 - 2 * ax[i, j]) * values[..., i, j]
    out = np.empty_like(values)
    for i in range(h):
        for j in range(w):
            up, down = rows[..., max(i - 1, 0), j], rows[..., min(i + 1, h - 1), j]
            out[..., i, j] = ay[i, j] * (up + down) + (1 - 2 * ay[i, j]) * rows[..., i, j]
    return out


def test_matched_blur_blurs_rows_by_the_vertical_offset_and_columns_by_the_horizontal() -> None:
    """A horizontal edge moved half a pixel down is blurred across rows (a = 1/8 per side),
    channels untouched, on a batch and on one (C, H, W) frame; and per-pixel offsets in both
    axes on a (1, 3, 5, 6) batch give the hand-computed separable 3-tap blur, border pixels
    included. Mutants: the second axis -2 -> -3 (blurs across channels, not rows) or -> +2
    (the columns of a 3-D frame); the replicated first / last sample changed."""
    from warpcore.guidance import matched_blur

    edge = torch.zeros(1, 3, 6, 5, dtype=torch.float64)
    edge[:, :, 3:] = 1.0
    edge[:, 1] *= 2.0  # channels differ, so a blur across them would show
    down = torch.zeros(2, 6, 5, dtype=torch.float64)
    down[1] = 2.5  # whole pixels do not blur; only the fractional half does
    want = edge.clone()
    want[:, :, 2] = 0.125 * edge[:, :, 3]
    want[:, :, 3] = 0.875 * edge[:, :, 3]
    torch.testing.assert_close(matched_blur(edge, down), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(matched_blur(edge[0], down), want[0], rtol=0, atol=1e-12)

    gen = torch.Generator().manual_seed(7)
    values = torch.randn(1, 3, 5, 6, generator=gen, dtype=torch.float64)
    flow = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64) * 3.0
    frac = (flow - torch.floor(flow)).numpy()
    a = 0.5 * frac * (1 - frac)
    want = _separable_blur(values.numpy(), a[0], a[1])
    torch.testing.assert_close(matched_blur(values, flow).numpy(), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("strength", [0.5, 0.25])
def test_newton_and_dps_steps_scale_with_lambda(strength: float) -> None:
    """lambda != 1 (every other test runs lambda = 1, where 2 lambda = 2 / lambda). With an
    identity Jacobian and a uniform residual r over N elements: Newton removes lambda r
    (2 lambda e / |grad|^2 grad = lambda (h - prev)); DPS moves each element by
    lambda / sqrt(e) * 2 r = 2 lambda / sqrt(N). Mutant: ``2 * lambda`` -> ``2 / lambda``."""
    r, n = 0.3, 3 * 8 * 8
    denoised = torch.full((3, 8, 8), 0.5 + r)
    newton, e = _guidance("newton", strength).step(torch.zeros(3, 8, 8), denoised, 0, sigma=0.5)
    assert e == pytest.approx(r * r * n, rel=1e-5)
    torch.testing.assert_close(newton, torch.full_like(denoised, -strength * r), rtol=1e-5, atol=0)
    dps, _ = _guidance("dps", strength).step(torch.zeros(3, 8, 8), denoised, 0, sigma=0.5)
    want = -2 * strength / math.sqrt(n)
    torch.testing.assert_close(dps, torch.full_like(denoised, want), rtol=1e-5, atol=0)


@pytest.mark.parametrize("rule", ["dps", "newton"])
def test_gradient_steps_use_step_ks_own_previous_estimate(rule: str) -> None:
    """``step`` (not only ``error``) pairs step k with the previous frame's step k: with three
    different previous estimates, the reported e_k and the correction are those against
    ``previous[k]`` alone. Mutants: ``self.error(denoised, k)`` -> ``(denoised, None)`` (the
    sum over every previous step) or a fixed step."""
    c, h, w = 3, 8, 8
    previous = torch.stack([torch.full((c, h, w), v) for v in (0.1, 0.4, 0.9)])
    g = EquivarianceGuidance(
        strength=0.5, forward=torch.zeros(2, h, w), mask=torch.ones(1, h, w),
        previous=previous, active=frozenset(range(3)), grad_mode="output", rule=rule,  # type: ignore[arg-type]
    )  # fmt: skip
    denoised = torch.full((c, h, w), 0.6)
    for k, prev in enumerate((0.1, 0.4, 0.9)):
        r = 0.6 - prev
        correction, e = g.step(torch.zeros(c, h, w), denoised, k, sigma=0.5)
        assert e == pytest.approx(r * r * c * h * w, rel=1e-5), k
        per_element = -0.5 * r if rule == "newton" else -np.sign(r) / math.sqrt(c * h * w)
        torch.testing.assert_close(
            correction, torch.full_like(denoised, per_element), rtol=1e-5, atol=1e-7
        )


@pytest.mark.parametrize(
    ("rule", "grad_mode"), [("newton", "output"), ("dps", "network"), ("blend", "output")]
)
def test_sampler_adds_each_steps_guidance_correction_by_hand(rule: str, grad_mode: str) -> None:
    """Two guided Euler steps of ``sample`` replayed by hand on D(x, s) = x / (1 + s^2), a still
    frame and lambda = 0.5: h_k = D(x_k, s_k); u = x_k + (s_{k+1} - s_k) (x_k - h_k) / s_k;
    then x_{k+1} = u + c_k with, against the previous frame's step-k estimate P_k,
    c_k = -lambda (h_k - P_k) (newton, the identity Jacobian of "output"),
    c_k = -lambda dD/dx 2 (h_k - P_k) / sqrt(e_k) (dps through the network), or
    c_k = lambda (P_k - h_k) (blend, which also stores h_k + c_k as the step's estimate);
    e_k = |h_k - P_k|^2 is reported. Mutants (sampler.sample): the correction subtracted, the
    stored estimate moved the wrong way or dropped, ``guidance.step`` given None for x, k or
    sigma, and the network's graph not kept for dps."""
    c, h, w = 3, 4, 5
    gen = torch.Generator().manual_seed(9)
    previous = torch.rand(2, c, h, w, generator=gen, dtype=torch.float64)
    x0 = torch.randn(1, c, h, w, generator=gen, dtype=torch.float64)
    zero = torch.zeros(2, h, w, dtype=torch.float64)
    ones = torch.ones(1, h, w, dtype=torch.float64)
    guidance = EquivarianceGuidance(
        strength=0.5, forward=zero, mask=ones, previous=previous, active=frozenset({0, 1}),
        grad_mode=grad_mode, rule=rule, backward=zero, backward_mask=ones,  # type: ignore[arg-type]
    )  # fmt: skip
    from warpcore.sampler import sample

    sigmas = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)
    result = sample(lambda x, s: x / (1 + s.view(-1, 1, 1, 1) ** 2), x0, sigmas, guidance=guidance)
    x = x0
    for k in range(2):
        s, s_next = float(sigmas[k]), float(sigmas[k + 1])
        est = x / (1 + s * s)
        u = x + (s_next - s) * (x - est) / s
        r = est - previous[k]
        e = float((r**2).sum())
        if rule == "newton":
            correction = -0.5 * r
        elif rule == "dps":
            correction = -0.5 * (2 * r / (1 + s * s)) / math.sqrt(e)
        else:
            correction = -0.5 * r
            est = est + correction
        assert result.warp_errors[k] == pytest.approx(e, rel=1e-6), k
        torch.testing.assert_close(result.denoised[k].double(), est, rtol=1e-6, atol=1e-9)
        x = u + correction
    torch.testing.assert_close(result.x.double(), x, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("rule", ["blend", "band"])
def test_current_grid_rules_never_step_past_the_previous_estimate(rule: str) -> None:
    """lambda is the fraction of the residual removed per step: above 1 it is taken as 1
    (still frame: the correction is exactly p - h, never 1.5 (p - h)). And each of the
    backward flow and its mask is required on its own. Mutants: ``min(lambda, 1)`` ->
    ``min(lambda, 2)`` (blend 31, band 34); the check ``backward is None or mask is None`` ->
    ``and`` (__post_init__ 2)."""
    h_, w_ = 4, 6
    gen = torch.Generator().manual_seed(4)
    previous = torch.rand(1, 3, h_, w_, generator=gen, dtype=torch.float64)
    denoised = torch.rand(3, h_, w_, generator=gen, dtype=torch.float64)
    zero, ones = torch.zeros(2, h_, w_), torch.ones(1, h_, w_)
    common = {"forward": zero, "mask": ones, "previous": previous, "active": frozenset({0})}
    g = EquivarianceGuidance(1.5, **common, rule=rule, backward=zero, backward_mask=ones)  # type: ignore[arg-type]
    correction, _ = g.step(denoised, denoised, 0, 0.5)
    torch.testing.assert_close(correction, previous[0] - denoised, rtol=1e-6, atol=1e-9)
    for backward, mask in ((zero, None), (None, ones)):
        with pytest.raises(ValueError, match=f"the {rule} rule needs the backward flow"):
            EquivarianceGuidance(1.0, **common, rule=rule, backward=backward, backward_mask=mask)  # type: ignore[arg-type]
