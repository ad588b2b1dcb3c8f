"""The discrete DDPM training schedule of a diffusers model as a continuous sigma table.

An epsilon- (or v-) prediction network trained on ``T`` discrete steps is a denoiser at any
sigma once ``t(sigma)`` is interpolated in log-sigma between the table entries, as
k-diffusion's ``DiscreteSchedule.sigma_to_t`` does (METHOD.md section 3):

``betas -> alphas_cumprod = cumprod(1 - betas) -> sigma_t = sqrt((1 - a_t) / a_t)``.

Pure torch; reads only the scheduler's JSON config (no diffusers import).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from warpcore.errors import InvalidInput

PREDICTION_TYPES = ("epsilon", "v_prediction")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclass(frozen=True)
class DiscreteSigmas:
    """Increasing sigmas of training steps ``t = 0..T-1`` (float64) and the prediction type."""

    sigmas: torch.Tensor
    prediction_type: str

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous timestep for each sigma: linear in log-sigma between table entries.

        Sigmas outside ``[sigma_min, sigma_max]`` clamp to ``t = 0`` / ``t = T - 1``.
        """
        log_sigmas = self.sigmas.log().to(sigma.device)
        log_sigma = sigma.detach().to(torch.float64).clamp_min(1e-30).log()
        dists = log_sigma - log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
        return ((1 - w) * low + w * (low + 1)).to(torch.float32).reshape(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`sigma_to_t` (log-linear between integer steps)."""
        t = t.to(torch.float64).clamp(0, self.sigmas.shape[0] - 1)
        low = t.floor().long().clamp(max=self.sigmas.shape[0] - 2)
        w = t - low
        log_sigmas = self.sigmas.log().to(t.device)
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[low + 1]).exp()


def sigmas_from_config(config: dict[str, Any]) -> DiscreteSigmas:
    """Build the sigma table from a diffusers ``scheduler_config.json`` mapping."""
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise InvalidInput(
            f"scheduler prediction_type: got {prediction!r}; "
            f"accepted: {', '.join(PREDICTION_TYPES)}"
        )
    # float32 like diffusers' schedulers, so the table matches theirs bit for bit
    alphas_cumprod = torch.cumprod(1.0 - _betas(config).float(), dim=0)
    if config.get("rescale_betas_zero_snr", False):
        alphas_cumprod = _zero_terminal_snr(alphas_cumprod)
        alphas_cumprod[-1] = 2.0**-24  # as diffusers does, so sigma_max stays finite
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt().double()
    return DiscreteSigmas(sigmas=sigmas, prediction_type=prediction)


def _betas(config: dict[str, Any]) -> torch.Tensor:
    n = int(config.get("num_train_timesteps", 1000))
    start = float(config.get("beta_start", 0.0001))
    end = float(config.get("beta_end", 0.02))
    if config.get("trained_betas") is not None:
        return torch.tensor(config["trained_betas"], dtype=torch.float32)
    kind = config.get("beta_schedule", "linear")
    if kind == "linear":
        return torch.linspace(start, end, n, dtype=torch.float32)
    if kind == "scaled_linear":
        return torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2
    if kind == "squaredcos_cap_v2":

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)]
        return torch.tensor(betas, dtype=torch.float32)
    raise InvalidInput(
        f"scheduler beta_schedule: got {kind!r}; accepted: {', '.join(BETA_SCHEDULES)}"
    )


def _zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Rescale so the last step has zero SNR (Lin et al. 2023), as diffusers' schedulers do."""
    a = alphas_cumprod.sqrt()
    first, last = a[0].clone(), a[-1].clone()
    a = (a - last) * first / (first - last)
    return a**2
