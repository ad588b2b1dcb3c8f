"""The analytic Gaussian denoiser: exact E[x0 | x_t] when the data are a stationary Gaussian
process, no weights needed. The oracle of the equivariance and sampler tests.

Model (pixel space, ``downscale = 1``, each channel independent, zero mean on the model grid
``x = 2 * image - 1``):

- data ``x0 ~ N(0, K)``, ``K = data_std^2 * k(data_lengthscale)``;
- noise ``x_t = x0 + sigma * e``, ``e ~ N(0, Q)``, ``Q = k(noise_lengthscale)`` (white when 0),

``k(l)`` the squared-exponential kernel ``exp(-|i - j|^2 / (2 l^2))`` in pixels. On the infinite
pixel lattice the posterior mean ``K (K + sigma^2 Q)^-1 x_t`` is a convolution whose frequency
response is ``H = S_K / (S_K + sigma^2 S_Q)``, with ``S`` the lattice spectra (computed
analytically by Poisson summation, in log space so that tiny spectra do not lose precision).

The convolution kernel is truncated at the smallest radius ``R`` (<= ``max_radius``) whose
outside L1 mass is below ``tol`` and applied with zero padding, so:

- it is exactly equivariant to integer shifts on pixels at least ``R`` from the border;
- every pixel equals the infinite-lattice posterior mean of the zero-extended input to within
  ``tol * max|x|``; the true finite-frame posterior differs only within about ``R`` of the border.

When ``data_lengthscale == noise_lengthscale`` (``K = data_std^2 Q``) the denoiser is pointwise,
``data_std^2 / (data_std^2 + sigma^2) * x``: exact and equivariant everywhere.

Conditions (simple, not the exact conditional posterior): inpainting returns the known pixels
(mask 0) and the unconditional posterior mean in the hole; upscaling projects the posterior mean
onto ``box_down(x0) = lr`` (orthogonal projection). Both are exact on what they pin (known pixels,
block averages); the rest ignores the correlation with the measurement. ``conditioned=False``
ignores conditions: the prior denoiser, e.g. inside :class:`warpcore.models.zeroshot.ZeroShotSR`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from warpcore.errors import InvalidInput
from warpcore.models.base import Condition, Task
from warpcore.models.conditions import check_condition, check_images, project_lowres, sigma_batch

SPECTRUM_GRID = 512  # frequency samples per axis; the kernel is exact up to aliasing at 512 px


@dataclass(frozen=True)
class GaussianPrepared:
    task: str
    known: torch.Tensor  # (1, C, H, W) model grid: the frame (inpaint) or low-res frame (upscale)
    mask: torch.Tensor | None  # (1, 1, H, W), 1 = fill
    scale: int


class GaussianDenoiser:
    """Posterior mean of a stationary Gaussian process under white or GP noise."""

    downscale = 1
    tasks: tuple[Task, ...] = ("inpaint", "upscale")

    def __init__(
        self,
        *,
        channels: int = 3,
        data_std: float = 0.5,
        data_lengthscale: float = 2.0,
        noise_lengthscale: float = 0.0,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        tol: float = 1e-6,
        max_radius: int = 64,
        conditioned: bool = True,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> None:
        _positive("data_std", data_std)
        _positive("data_lengthscale", data_lengthscale)
        _positive("noise_lengthscale", noise_lengthscale, allow_zero=True)
        _positive("tol", tol)
        if not 0 < sigma_min < sigma_max:
            raise InvalidInput(
                f"sigma_min, sigma_max: expected 0 < min < max, got {sigma_min}, {sigma_max}"
            )
        if not isinstance(channels, int) or channels < 1 or not 0 < max_radius < SPECTRUM_GRID // 2:
            raise InvalidInput(
                f"gaussian: expected channels >= 1 and 0 < max_radius < {SPECTRUM_GRID // 2}, "
                f"got {channels}, {max_radius}"
            )
        self.name = "gaussian"
        self.channels = channels
        self.data_std, self.tol, self.max_radius = float(data_std), float(tol), int(max_radius)
        self.data_lengthscale, self.noise_lengthscale = (
            float(data_lengthscale),
            float(noise_lengthscale),
        )
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        self.pointwise = self.data_lengthscale == self.noise_lengthscale
        self.conditioned = conditioned  # False: the prior denoiser only (e.g. inside ZeroShotSR)
        self._kernels: dict[float, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, prepared: Any) -> torch.Tensor:
        """Posterior mean, then the condition (known pixels / low-res consistency)."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise InvalidInput(
                f"gaussian: x: expected (N, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        denoised = self.posterior_mean(x, sigma_batch(sigma, x))
        if prepared is None:
            return denoised
        if prepared.task == "inpaint":
            return torch.where(prepared.mask >= 0.5, denoised, prepared.known.to(x.dtype))
        return project_lowres(denoised, prepared.known.to(x.dtype), prepared.scale)

    def posterior_mean(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E[x0 | x] for x (N, C, H, W) at per-sample sigma (N,); differentiable in x."""
        if self.pointwise:
            var = self.data_std**2
            return x * (var / (var + sigma.to(x.dtype) ** 2)).view(-1, 1, 1, 1)
        outs = [
            _convolve(item[None], self.kernel(s).to(x.device))
            for item, s in zip(x, sigma.tolist(), strict=True)
        ]
        return torch.cat(outs)

    def kernel(self, sigma: float) -> torch.Tensor:
        """The truncated real-space kernel (2R+1, 2R+1), float64, cached per sigma."""
        if sigma not in self._kernels:
            if len(self._kernels) > 512:
                self._kernels.clear()
            self._kernels[sigma] = self._make_kernel(sigma)
        return self._kernels[sigma]

    def _make_kernel(self, sigma: float) -> torch.Tensor:
        omega = torch.arange(SPECTRUM_GRID, dtype=torch.float64) * (2 * math.pi / SPECTRUM_GRID)
        log_k = math.log(self.data_std**2) + _log_spectrum_2d(omega, self.data_lengthscale)
        log_q = 2 * math.log(max(sigma, 1e-300)) + _log_spectrum_2d(omega, self.noise_lengthscale)
        response = torch.sigmoid(log_k - log_q)  # S_K / (S_K + sigma^2 S_Q), stably
        h = torch.fft.fftshift(torch.fft.ifft2(response).real)
        c = SPECTRUM_GRID // 2
        total = h.abs().sum()
        for radius in range(self.max_radius + 1):
            inside = h[c - radius : c + radius + 1, c - radius : c + radius + 1].abs().sum()
            if total - inside <= self.tol:
                break
        return h[c - radius : c + radius + 1, c - radius : c + radius + 1].clone()

    def radius(self, sigma: float) -> int:
        """The kernel radius R at sigma (0 when pointwise): equivariance holds R px inside."""
        return 0 if self.pointwise else self.kernel(float(sigma)).shape[-1] // 2

    # ---- conditions and the (affine) codec ------------------------------------------------

    @torch.no_grad()
    def prepare(self, cond: Condition) -> GaussianPrepared | None:
        image = check_condition(cond, self.tasks, self.name).to(self.device)
        self._check_rgb()
        if not self.conditioned:
            return None
        mask = None
        if cond.task == "inpaint":
            mask = (cond.mask.to(self.device, torch.float32) >= 0.5).float()[None]
        return GaussianPrepared(
            cond.task, image * 2 - 1, mask, cond.scale if cond.task == "upscale" else 1
        )

    def start(self, prepared: Any) -> torch.Tensor | None:
        return None

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.encode_differentiable(image)

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_differentiable(x).clamp(0, 1)

    def encode_differentiable(self, image: torch.Tensor) -> torch.Tensor:
        check_images(image, self.name)
        self._check_rgb()
        return image * 2 - 1

    def decode_differentiable(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) / 2

    def _check_rgb(self) -> None:
        if self.channels != 3:
            raise InvalidInput(
                f"gaussian: images and conditions need channels=3, this model has {self.channels}"
            )


def _convolve(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-padded 'same' convolution of (1, C, H, W) with an even (2R+1)^2 kernel, by FFT.

    Computed in float64 (the linear convolution, no wrap-around: FFT size H + 2R), so the result
    equals the direct sum to ~1e-15 and is shift-equivariant to float rounding.
    """
    radius = kernel.shape[-1] // 2
    h, w = x.shape[-2:]
    size = (h + 2 * radius, w + 2 * radius)
    spectrum = torch.fft.rfft2(x.double(), s=size) * torch.fft.rfft2(kernel, s=size)
    full = torch.fft.irfft2(spectrum, s=size)
    return full[..., radius : radius + h, radius : radius + w].to(x.dtype)


def _log_spectrum_1d(omega: torch.Tensor, lengthscale: float) -> torch.Tensor:
    """log of the lattice spectrum of exp(-n^2 / (2 l^2)): Poisson summation over aliases."""
    if lengthscale == 0:
        return torch.zeros_like(omega)  # white noise: S = 1
    shifts = torch.arange(-8, 9, dtype=torch.float64) * (2 * math.pi)
    terms = -((omega[:, None] + shifts) ** 2) * lengthscale**2 / 2
    return math.log(math.sqrt(2 * math.pi) * lengthscale) + torch.logsumexp(terms, dim=1)


def _log_spectrum_2d(omega: torch.Tensor, lengthscale: float) -> torch.Tensor:
    s = _log_spectrum_1d(omega, lengthscale)
    return s[:, None] + s[None, :]


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and (value >= 0 if allow_zero else value > 0)
    if not ok or not math.isfinite(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidInput(f"gaussian: {name}: expected a finite number {bound}, got {value!r}")
