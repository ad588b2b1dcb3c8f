"""The analytic Gaussian denoiser: equivariance, dense-matrix agreement, conditions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from warpcore.errors import InvalidInput
from warpcore.models import Condition, Denoiser, load_denoiser
from warpcore.models.conditions import box_down
from warpcore.models.gaussian import GaussianDenoiser


def se_kernel(coords: np.ndarray, lengthscale: float) -> np.ndarray:
    if lengthscale == 0:
        return np.eye(len(coords))
    d2 = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * lengthscale**2))


def dense_posterior(x: np.ndarray, model: GaussianDenoiser, sigma: float) -> np.ndarray:
    """K (K + sigma^2 Q)^-1 x on the grid of x (H, W), dense, float64."""
    h, w = x.shape
    coords = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2)
    k = model.data_std**2 * se_kernel(coords, model.data_lengthscale)
    q = se_kernel(coords, model.noise_lengthscale)
    solved = scipy.linalg.solve(k + sigma**2 * q, x.reshape(-1), assume_a="pos")
    return (k @ solved).reshape(h, w)


@pytest.mark.parametrize("noise_lengthscale", [0.0, 1.0])
@pytest.mark.parametrize("sigma", [1.0, 3.0])
def test_matches_dense_posterior_of_zero_extended_input(noise_lengthscale, sigma):
    """Zero padding = the infinite-lattice posterior of the zero-extended frame, on every pixel."""
    model = GaussianDenoiser(channels=1, data_lengthscale=1.5, noise_lengthscale=noise_lengthscale)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 12))
    pad = 14  # the big dense grid's own border effects have decayed by the 12x12 centre
    dense = dense_posterior(np.pad(x, pad), model, sigma)[pad:-pad, pad:-pad]
    ours = model(torch.from_numpy(x)[None, None], torch.tensor([sigma]), None)[0, 0].numpy()
    np.testing.assert_allclose(ours, dense, atol=1e-5)


def test_matches_finite_frame_posterior_in_the_interior():
    model = GaussianDenoiser(channels=1, data_lengthscale=1.5)
    x = np.random.default_rng(1).standard_normal((36, 36))
    sigma = 0.5
    dense = dense_posterior(x, model, sigma)
    ours = model(torch.from_numpy(x)[None, None], torch.tensor(sigma), None)[0, 0].numpy()
    r = 12
    np.testing.assert_allclose(ours[r:-r, r:-r], dense[r:-r, r:-r], atol=1e-5)
    assert np.abs(ours - dense).max() > 1e-4  # near the border they do differ (zero padding)


@pytest.mark.parametrize("shift", [(3, 5), (-4, 2)])
def test_exact_integer_shift_equivariance_in_the_interior(shift):
    model = GaussianDenoiser(channels=4, data_lengthscale=2.0, noise_lengthscale=0.6)
    sigma = 1.0
    big = torch.randn(1, 4, 90, 90, generator=torch.Generator().manual_seed(2))
    dy, dx = shift
    a, b = big[..., 10:74, 10:74], big[..., 10 + dy : 74 + dy, 10 + dx : 74 + dx]
    da, db = model(a, torch.tensor([sigma]), None), model(b, torch.tensor([sigma]), None)
    r = model.radius(sigma)
    assert 0 < r < 24
    # pixel p of b is pixel p + shift of a; both receptive fields inside their frames
    lo, hi = r + 5, 64 - r - 5
    inner_b = db[..., lo:hi, lo:hi]
    inner_a = da[..., lo + dy : hi + dy, lo + dx : hi + dx]
    assert (inner_a - inner_b).abs().max() < 1e-6


def test_pointwise_special_case_is_equivariant_everywhere():
    model = GaussianDenoiser(channels=2, data_std=0.7, data_lengthscale=1.3, noise_lengthscale=1.3)
    x = torch.randn(2, 2, 9, 11)
    sigma = torch.tensor([0.5, 3.0])
    out = model(x, sigma, None)
    factor = 0.49 / (0.49 + sigma**2)
    torch.testing.assert_close(out, x * factor.view(-1, 1, 1, 1))
    rolled = model(torch.roll(x, (2, 3), (-2, -1)), sigma, None)
    torch.testing.assert_close(rolled, torch.roll(out, (2, 3), (-2, -1)))


def test_limits_and_gradient():
    model = load_denoiser("gaussian", "inpaint")
    assert isinstance(model, Denoiser)
    grid = torch.arange(120.0)
    smooth = torch.sin(2 * torch.pi * grid / 16)[:, None] * torch.cos(2 * torch.pi * grid / 20)
    x0 = smooth.expand(1, 3, 120, 120)  # far below the data's cutoff frequency
    sigma = 0.01
    noise = torch.randn(1, 3, 120, 120, generator=torch.Generator().manual_seed(0))
    near = model(x0 + sigma * noise, torch.tensor(sigma), None)
    r = model.radius(sigma)
    rms = (near - x0)[..., r:-r, r:-r].square().mean().sqrt()
    assert rms < 0.7 * sigma  # D(x0 + sigma e) -> x0: within the noise, and removes some of it
    x = torch.randn(1, 3, 24, 24, requires_grad=True)
    far = model(x, torch.tensor(1e4), None)
    assert far.abs().max() < 1e-3  # D(x, sigma -> inf) -> prior mean 0
    model(x, torch.tensor(1.0), None).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_inpaint_keeps_known_pixels_and_upscale_is_consistent():
    model = GaussianDenoiser()
    image = torch.rand(3, 16, 16)
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:12, 4:12] = 1
    prep = model.prepare(Condition("inpaint", image, mask))
    x = torch.randn(2, 3, 16, 16)
    out = model(x, torch.tensor([1.0, 2.0]), prep)
    torch.testing.assert_close(
        out[:, :, mask[0] == 0], (image * 2 - 1)[:, mask[0] == 0].expand(2, -1, -1)
    )
    assert not torch.allclose(out[:, :, 6, 6], (image * 2 - 1)[:, 6, 6])

    lowres = torch.rand(3, 8, 8)
    prep = model.prepare(Condition("upscale", lowres, scale=4))
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    image_out = model.decode_differentiable(model(x, torch.tensor(0.7), prep))
    torch.testing.assert_close(box_down(image_out, 4)[0], lowres, atol=1e-6, rtol=0)


def test_bad_options_are_named():
    with pytest.raises(InvalidInput, match="data_std"):
        GaussianDenoiser(data_std=-1.0)
    with pytest.raises(InvalidInput, match="accepted"):
        load_denoiser("gaussian", "inpaint", lengthscale=2.0)
    with pytest.raises(InvalidInput, match="task"):
        load_denoiser("gaussian", "denoise")
