"""The PF-ODE sampler and the guidance step, on denoisers whose answers are known exactly."""

from __future__ import annotations

import math

import pytest
import torch

from warpcore.errors import Cancelled, InvalidInput
from warpcore.guidance import EquivarianceGuidance, active_steps
from warpcore.sampler import IDENTITY_SIGMA, noise_reaches_output, sample, start_noise
from warpcore.schedule import karras_sigmas, truncate


def gaussian_denoiser(s_data: float):
    """Exact E[x0 | x] for x0 ~ N(0, s^2 I): the PF-ODE then maps x(T) to s/sqrt(s^2+T^2) x(T)."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sig = sigma.view(-1, *([1] * (x.dim() - 1)))
        return s_data**2 / (s_data**2 + sig**2) * x

    return denoise


def test_schedule_shape_and_truncation() -> None:
    sigmas = karras_sigmas(10, 0.01, 80.0)
    assert sigmas.shape == (11,) and sigmas[-1] == 0
    assert math.isclose(float(sigmas[0]), 80.0, rel_tol=1e-5)
    assert math.isclose(float(sigmas[-2]), 0.01, rel_tol=1e-4)
    assert torch.all(sigmas[:-1] > sigmas[1:])
    assert len(truncate(sigmas, 0.5)) == 6 and truncate(sigmas, 0.5)[-1] == 0
    with pytest.raises(InvalidInput, match="steps"):
        karras_sigmas(0, 0.01, 80.0)
    with pytest.raises(InvalidInput, match="strength"):
        truncate(sigmas, 0.0)


def _closed_form_error(method: str, steps: int) -> float:
    # For Gaussian data the ODE solution is exact: x(0) = s / sqrt(s^2 + T^2) * x(T).
    s, T = 0.5, 80.0
    sigmas = karras_sigmas(steps, 0.002, T)
    noise = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x = start_noise(noise, sigmas)
    out = sample(gaussian_denoiser(s), x, sigmas, method=method).x
    expected = s / math.sqrt(s**2 + T**2) * x
    return float((out - expected).norm() / expected.norm())


def test_pf_ode_converges_with_the_right_order() -> None:
    # Euler is first order: 4x the steps cut the error ~4x; Heun is second order: ~16x.
    # (Measured 0.056 -> 0.014 and 0.0061 -> 0.00035; the bounds leave room for rounding.)
    e50, e200 = _closed_form_error("euler", 50), _closed_form_error("euler", 200)
    assert e200 < 2e-2 and 3.0 < e50 / e200 < 5.0, (e50, e200)
    h50, h200 = _closed_form_error("heun", 50), _closed_form_error("heun", 200)
    assert h200 < 1e-3 and h50 / h200 > 10.0, (h50, h200)


def test_history_and_callback() -> None:
    sigmas = karras_sigmas(5, 0.01, 10.0)
    seen = []
    res = sample(gaussian_denoiser(1.0), torch.ones(1, 2, 4, 4), sigmas, callback=seen.append)
    assert res.denoised.shape == (5, 1, 2, 4, 4)
    assert [i.k for i in seen] == list(range(5)) and seen[0].n_steps == 5
    assert torch.allclose(res.x, res.denoised[-1])  # the last Euler step lands on h_{K-1}


def test_a_step_at_sigma_min_calls_no_network() -> None:
    """The built-in model's partial runs end at the Karras schedule's sigma_min (0.002), where
    the denoiser is the identity to a fraction of an 8-bit level: that step makes no call and
    returns the estimate the ODE carries (the previous step's), not u_k with its noise."""
    calls: list[float] = []

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(float(sigma[0]))
        return 0.5 * x

    sigmas = truncate(karras_sigmas(10, 0.002, 20.0), 0.3)  # 0.0551, 0.0128, 0.002, 0
    assert float(sigmas[-2]) <= IDENTITY_SIGMA < float(sigmas[-3])
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    res = sample(denoise, x, sigmas)
    assert calls == pytest.approx([0.0551, 0.0128], abs=1e-4)
    u = x
    for k in range(2):  # the two steps that call: u + (s' - s) (u - u / 2) / s
        h = 0.5 * u
        u = u + (sigmas[k + 1] - sigmas[k]) * (u - h) / sigmas[k]
    assert torch.allclose(res.denoised[-1], h) and torch.allclose(res.x, h)
    assert (u - h).abs().max() > 1e-3  # u_k itself (h + sigma_k eps) would differ


@pytest.mark.parametrize("mode", ["output", "network"])
def test_the_skipped_call_keeps_the_guidance_of_the_step_before(mode: str) -> None:
    """The paper's step moves only u_{k+1}: at sigma_min, the estimate without a call is u_k
    less the noise the ODE carries, so that push reaches the output (it was lost when the
    skipped call returned the previous estimate itself)."""
    gen = torch.Generator().manual_seed(6)
    prev = torch.randn(2, 1, 3, 8, 8, generator=gen)
    x = torch.randn(1, 3, 8, 8, generator=gen)
    sigmas = torch.tensor([0.0128, 0.002, 0.0])
    h, w = prev.shape[-2:]
    fwd = torch.zeros(2, h, w)
    fwd[0] = 1.0
    guidance = EquivarianceGuidance(0.1, fwd, torch.ones(1, h, w), prev, frozenset({0}), mode)
    out = sample(lambda u, s: 0.5 * u, x, sigmas, guidance=guidance)
    reference = EquivarianceGuidance(0.1, fwd, torch.ones(1, h, w), prev, frozenset({0}), mode)
    u = x.clone().requires_grad_(True)
    correction, _ = reference.step(u, 0.5 * u, 0, 0.0128)
    correction = correction.detach()
    assert correction.abs().max() > 1e-3
    torch.testing.assert_close(out.x, 0.5 * x + correction)


def test_a_partial_run_at_sigma_min_returns_its_start_without_the_noise() -> None:
    """A one-step partial run (the upscale default: u_0 = start + 0.002 noise) returns the
    start itself: the noise is the sampler's own, not the frame's. Without the start, u_0."""
    gen = torch.Generator().manual_seed(4)
    clean, noise = torch.rand(1, 3, 6, 6, generator=gen), torch.randn(1, 3, 6, 6, generator=gen)
    sigmas = torch.tensor([0.002, 0.0])
    x = start_noise(noise, sigmas, clean)
    never = lambda u, s: pytest.fail("no call at sigma_min")  # noqa: E731
    torch.testing.assert_close(sample(never, x, sigmas, start=clean).x, clean)
    torch.testing.assert_close(sample(never, x, sigmas).x, x)


@pytest.mark.parametrize("mode", ["network", "output"])
def test_the_paper_step_at_sigma_min_takes_the_identity_jacobian(mode: str) -> None:
    """Without a call at sigma_min the paper's step still runs in both gradient modes: the
    skipped call's Jacobian is the identity, so "network" takes the same step as "output"
    (from u_0 itself, or from the start a partial run carries)."""
    gen = torch.Generator().manual_seed(3)
    prev = torch.randn(1, 1, 3, 8, 8, generator=gen)
    x, clean = torch.randn(1, 3, 8, 8, generator=gen), torch.randn(1, 3, 8, 8, generator=gen)
    sigmas = torch.tensor([0.002, 0.0])
    reference = _shift_guidance(prev, 0.1, "output")
    for start, h in ((None, x), (clean, clean)):
        guidance = _shift_guidance(prev, 0.1, mode)
        out = sample(lambda u, s: 0.5 * u, x, sigmas, guidance=guidance, start=start)
        correction, _ = reference.step(x, h.clone(), 0, 0.002)
        assert torch.allclose(out.x, h + correction, atol=1e-6)


def test_cancel_stops_before_a_step() -> None:
    calls = iter([False, False, True])
    with pytest.raises(Cancelled):
        sample(
            gaussian_denoiser(1.0),
            torch.ones(1, 1, 4, 4),
            karras_sigmas(5, 0.01, 10.0),
            should_stop=lambda: next(calls),
        )


def test_active_steps() -> None:
    assert active_steps(10, 0.0, 1.0) == frozenset(range(10))
    assert active_steps(10, 0.0, 0.5) == frozenset(range(5))
    assert active_steps(10, 0.2, 0.4) == frozenset({2, 3})


def _shift_guidance(previous: torch.Tensor, strength: float, mode: str) -> EquivarianceGuidance:
    h, w = previous.shape[-2:]
    fwd = torch.zeros(2, h, w)
    fwd[0] = 1.0  # frame j is frame j-1 moved one pixel to the right
    return EquivarianceGuidance(
        strength, fwd, torch.ones(1, h, w), previous, frozenset(range(previous.shape[0])), mode
    )


def test_guidance_error_is_zero_for_an_exactly_warped_estimate() -> None:
    prev = torch.randn(1, 1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    current = torch.roll(prev[0], 1, dims=-1)  # frame j = frame j-1 shifted right by one
    g = _shift_guidance(prev, 1.0, "network")
    # Only columns whose sample point stays inside frame j count (the last column leaves it).
    assert float(g.error(current, 0)) < 1e-10
    assert float(g.error(current + 0.1, 0)) == pytest.approx(0.01 * 3 * 8 * 7, rel=1e-4)


@pytest.mark.parametrize("mode", ["network", "output"])
def test_guidance_step_is_normalised_and_descends(mode: str) -> None:
    gen = torch.Generator().manual_seed(2)
    prev = torch.randn(1, 1, 3, 8, 8, generator=gen)
    x = torch.randn(1, 3, 8, 8, generator=gen).requires_grad_(True)
    h = 0.5 * x  # a linear "denoiser"
    g = _shift_guidance(prev, 0.1, mode)
    correction, e = g.step(x, h, 0, 1.0)
    assert e == pytest.approx(float(g.error(h, 0).detach()), rel=1e-5)
    jac = 0.5 if mode == "network" else 1.0
    # lambda / sqrt(e) * |grad e| = lambda * 2 * jac * |J^T r| / |r|, and |J^T r| = |r| here
    # because the warp by a whole pixel is a selection of pixels.
    assert float(correction.norm()) == pytest.approx(0.1 * 2 * jac, rel=1e-4)
    assert float(g.error(0.5 * (x + correction), 0)) < e


def test_the_noise_reaches_the_output_unless_a_start_is_refined_at_sigma_min_only() -> None:
    """The rule the restorer follows to skip warping a noise field: the sampler's output
    ignores the noise exactly when it has a start and every step is at sigma <= IDENTITY_SIGMA
    (shown on the sampler itself: two noises, one output; a step above, or no start, differ)."""
    gen = torch.Generator().manual_seed(7)
    clean = torch.rand(1, 3, 6, 6, generator=gen)
    noises = [torch.randn(1, 3, 6, 6, generator=gen) for _ in range(2)]
    for sigmas, start in (
        (torch.tensor([0.002, 0.0]), clean),
        (torch.tensor([0.0128, 0.002, 0.0]), clean),
        (torch.tensor([0.002, 0.0]), None),
    ):
        outs = [
            sample(lambda u, s: 0.5 * u, start_noise(e, sigmas, start), sigmas, start=start).x
            for e in noises
        ]
        ignores = torch.equal(outs[0], outs[1])
        assert noise_reaches_output(sigmas, start) is not ignores, (sigmas, start is None)
