"""SDXL through diffusers behind the denoiser interface (METHOD.md sections 3 and 5).

``D(x, sigma) = x - sigma * eps(x / sqrt(sigma^2 + 1), t(sigma))`` for epsilon prediction
(k-diffusion's ``DiscreteEpsDDPMDenoiser``), ``x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) *
v(...)`` for v-prediction, with ``t(sigma)`` interpolated in log-sigma of the model's own training
schedule (:mod:`warpcore.models.sdxl_schedule`).

The UNet input is the scaled noisy latent followed by the condition channels, by ``in_channels``:

- 9, inpainting (the public SDXL inpainting checkpoints, as diffusers'
  ``StableDiffusionXLInpaintPipeline``): ``[x_in (4), mask (1), masked-image latent (4)]``; the
  mask is binarised at 0.5 and resized to the latent grid by nearest neighbour; the masked image
  is the [-1, 1] image times ``(mask < 0.5)`` (holes are mid-grey).
- 8, super-resolution (our GP fine-tunes, paper 4.1): ``[x_in (4), lr latent (4)]``, the lr
  latent being the VAE encoding of the bicubic-upsampled low-resolution frame
  (:func:`warpcore.models.conditions.upsample_lowres`), unscaled by sigma. Training code must
  build it the same way.
- 4, a plain text-to-image model: no condition channels (zero-shot SR wraps it, see
  :mod:`warpcore.models.zeroshot`).

Model-grid tensors (``x``, outputs, ``encode``/``decode``) are float32; the weights run in
``dtype`` (fp16 by default on CUDA, fp32 on CPU) and the VAE stays fp32 when its config asks
(``force_upcast``, SDXL's VAE overflows in fp16). Latents are the VAE posterior mode times the
scaling factor (deterministic, unlike the pipelines' sampled latents).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from warpcore.errors import InvalidInput
from warpcore.models.base import Condition, Task
from warpcore.models.conditions import (
    check_condition,
    check_images,
    output_size,
    sigma_batch,
    upsample_lowres,
)
from warpcore.models.sdxl_schedule import DiscreteSigmas, sigmas_from_config

KIND_BY_CHANNELS = {9: "inpaint", 8: "upscale", 4: "plain"}
AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5  # diffusers' defaults (refiner-style UNets)


@dataclass(frozen=True)
class SDXLPrepared:
    """One frame's condition, encoded once. Batch 1; expanded to ``x``'s batch at call time."""

    text: torch.Tensor  # (1, 77, D1 + D2) penultimate hidden states of both encoders
    pooled: torch.Tensor  # (1, P) pooled, projected output of the second encoder
    time_ids: torch.Tensor  # (1, 6) or (1, 5) with an aesthetic score
    uncond_text: torch.Tensor | None  # None when cfg_scale == 1 (one UNet call)
    uncond_pooled: torch.Tensor | None
    uncond_time_ids: torch.Tensor | None
    concat: torch.Tensor | None  # (1, in_channels - 4, h, w) condition channels, or None
    cfg_scale: float
    size: tuple[int, int]  # output frame (H, W) in pixels


class SDXLDenoiser:
    """An SDXL UNet + VAE + text encoders as a :class:`warpcore.models.base.Denoiser`."""

    channels = 4
    downscale = 8
    native_pixels = 1024 * 1024  # working scale of crops (warpcore.crops): its training size

    def __init__(
        self,
        *,
        unet: Any,
        vae: Any,
        text_encoders: list[Any],
        tokenizers: list[Any],
        scheduler_config: dict[str, Any],
        name: str = "sdxl",
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        force_zeros_for_empty_prompt: bool = True,
        vae_tiling: bool = True,
    ) -> None:
        in_channels = int(unet.config.in_channels)
        if in_channels not in KIND_BY_CHANNELS:
            raise InvalidInput(
                f"{name}: UNet has {in_channels} input channels; accepted: 9 (inpainting), "
                "8 (super-resolution fine-tune) or 4 (text-to-image, zero-shot super-resolution)"
            )
        self.name = name
        self.kind = KIND_BY_CHANNELS[in_channels]
        self.tasks: tuple[Task, ...] = {"inpaint": ("inpaint",), "upscale": ("upscale",)}.get(
            self.kind, ()
        )
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.schedule: DiscreteSigmas = sigmas_from_config(scheduler_config)
        self.sigma_min = self.schedule.sigma_min
        self.sigma_max = self.schedule.sigma_max
        self.force_zeros = force_zeros_for_empty_prompt
        upcast = bool(getattr(vae.config, "force_upcast", False)) and self.dtype == torch.float16
        self.vae_dtype = torch.float32 if upcast else self.dtype
        self.unet = _frozen(unet, self.device, self.dtype)
        self.vae = _frozen(vae, self.device, self.vae_dtype)
        self.text_encoders = [_frozen(e, self.device, self.dtype) for e in text_encoders]
        self.tokenizers = tokenizers
        if vae_tiling:
            self.vae.enable_tiling()  # only frames larger than the VAE's sample_size are tiled
        self._text_cache: dict[tuple[str, str, bool], tuple[torch.Tensor, ...]] = {}

    # ---- the denoiser -------------------------------------------------------------------

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, prepared: Any) -> torch.Tensor:
        """E[x0 | x] at noise level sigma; differentiable w.r.t. ``x`` through the UNet."""
        self._check_x(x, prepared)
        sigma = sigma_batch(sigma, x)
        s = sigma.view(-1, 1, 1, 1)
        c_in = (s * s + 1).rsqrt()
        out = self.model_output(x.float() * c_in, self.schedule.sigma_to_t(sigma), prepared)
        if self.schedule.prediction_type == "v_prediction":
            denoised = x.float() * (c_in * c_in) - s * c_in * out
        else:
            denoised = x.float() - s * out
        return denoised.to(x.dtype)

    def model_output(self, x_in: torch.Tensor, t: torch.Tensor, prepared: SDXLPrepared):
        """The UNet's prediction (eps or v) for the scaled input, with CFG in one batched call."""
        n = x_in.shape[0]
        parts = [x_in]
        if prepared.concat is not None:
            parts.append(prepared.concat.to(x_in.dtype).expand(n, -1, -1, -1))
        inp = torch.cat(parts, dim=1)
        text, pooled, time_ids = prepared.text, prepared.pooled, prepared.time_ids
        guided = prepared.uncond_text is not None
        if guided:  # [uncond, cond] in one call, as the diffusers pipelines batch them
            inp = torch.cat([inp, inp])
            text = torch.cat([prepared.uncond_text.expand(n, -1, -1), text.expand(n, -1, -1)])
            pooled = torch.cat([prepared.uncond_pooled.expand(n, -1), pooled.expand(n, -1)])
            time_ids = torch.cat([prepared.uncond_time_ids.expand(n, -1), time_ids.expand(n, -1)])
            t = torch.cat([t, t])
        else:
            text, pooled, time_ids = (
                text.expand(n, -1, -1),
                pooled.expand(n, -1),
                time_ids.expand(n, -1),
            )
        out = self.unet(
            inp.to(self.dtype),
            t.float(),
            encoder_hidden_states=text,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
            return_dict=False,
        )[0].float()
        if guided:
            uncond, cond = out.chunk(2)
            out = uncond + prepared.cfg_scale * (cond - uncond)
        return out

    def start(self, prepared: Any) -> torch.Tensor | None:
        """Trained conditional models start from pure noise."""
        return None

    # ---- conditions -------------------------------------------------------------------------

    @torch.no_grad()
    def prepare(self, cond: Condition) -> SDXLPrepared:
        """Encode the prompt(s), the add_time_ids and the condition channels of one frame."""
        image = check_condition(cond, self.tasks, self.name).to(self.device)
        height, width = output_size(cond)
        for name, n in (("height", height), ("width", width)):
            if n % 8:
                raise InvalidInput(
                    f"{self.name}: output {name} {n} is not a multiple of 8 (the latent grid)"
                )
        text, pooled, u_text, u_pooled = self._text(
            cond.prompt, cond.negative_prompt, cond.cfg_scale
        )
        ids, u_ids = self._time_ids(height, width, pooled.shape[-1])
        guided = u_text is not None
        return SDXLPrepared(
            text=text,
            pooled=pooled,
            time_ids=ids,
            uncond_text=u_text,
            uncond_pooled=u_pooled,
            uncond_time_ids=u_ids if guided else None,
            concat=self._concat(cond, image, height, width),
            cfg_scale=float(cond.cfg_scale),
            size=(height, width),
        )

    def _concat(self, cond: Condition, image: torch.Tensor, height: int, width: int):
        if self.kind == "inpaint":
            mask = (cond.mask.to(self.device, torch.float32) >= 0.5).float()[None]
            keep = (mask < 0.5).float()
            masked = image * keep + 0.5 * (1 - keep)  # [-1, 1] image * (mask < 0.5)
            mask_latent = F.interpolate(mask, size=(height // 8, width // 8))  # nearest
            return torch.cat([mask_latent, self.encode_differentiable(masked)], dim=1)
        if self.kind == "upscale":
            return self.encode_differentiable(upsample_lowres(image, cond.scale))
        return None

    def _text(self, prompt: str, negative: str, cfg_scale: float) -> tuple:
        guided = float(cfg_scale) != 1.0
        key = (prompt, negative, guided)
        if key not in self._text_cache:
            text, pooled = self._encode_prompt(prompt)
            u_text = u_pooled = None
            if guided and not negative and self.force_zeros:
                u_text, u_pooled = torch.zeros_like(text), torch.zeros_like(pooled)
            elif guided:
                u_text, u_pooled = self._encode_prompt(negative)
            self._text_cache[key] = (text, pooled, u_text, u_pooled)
        return self._text_cache[key]

    def _encode_prompt(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate hidden states of both encoders, concatenated; the last encoder's pool."""
        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True):
            ids = tokenizer(
                [prompt],
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            out = encoder(ids, output_hidden_states=True)
            if out[0].ndim == 2:  # CLIPTextModelWithProjection: text_embeds
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        if pooled is None:
            raise InvalidInput(
                f"{self.name}: the last text encoder has no projection (pooled) output; "
                "SDXL needs text_encoder_2 = CLIPTextModelWithProjection"
            )
        return torch.cat(hidden, dim=-1).to(self.dtype), pooled.to(self.dtype)

    def _time_ids(self, height: int, width: int, pooled_dim: int):
        """Micro-conditioning (original size, crop top-left, target size) = (H, W, 0, 0, H, W)."""
        expected = self.unet.add_embedding.linear_1.in_features
        per_id = int(self.unet.config.addition_time_embed_dim)
        if expected == 5 * per_id + pooled_dim:  # refiner-style: aesthetic score, no target size
            ids = [height, width, 0, 0, AESTHETIC_SCORE]
            neg = [height, width, 0, 0, NEGATIVE_AESTHETIC_SCORE]
        elif expected == 6 * per_id + pooled_dim:
            ids = neg = [height, width, 0, 0, height, width]
        else:
            raise InvalidInput(
                f"{self.name}: UNet expects an added embedding of {expected} values, which fits "
                f"neither 6 nor 5 time ids of {per_id} plus a pooled text embedding of {pooled_dim}"
            )
        as_tensor = lambda v: torch.tensor([v], dtype=self.dtype, device=self.device)  # noqa: E731
        return as_tensor(ids), as_tensor(neg)

    # ---- VAE --------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] -> latents (N, 4, H/8, W/8), float32."""
        check_images(image, self.name)
        return self.encode_differentiable(image.to(self.device))

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents (N, 4, h, w) -> images (N, 3, 8h, 8w) in [0, 1], float32."""
        if x.ndim != 4 or x.shape[1] != 4:
            raise InvalidInput(
                f"{self.name}: decode expects latents (N, 4, h, w), got {tuple(x.shape)}"
            )
        return self.decode_differentiable(x.to(self.device)).clamp(0, 1)

    def encode_differentiable(self, image: torch.Tensor) -> torch.Tensor:
        """Differentiable encode (posterior mode, scaled); tiled above the VAE's sample size."""
        z = self.vae.encode((image * 2 - 1).to(self.vae_dtype)).latent_dist.mode().float()
        mean, std = self._latent_stats(z)
        return (z - mean) * float(self.vae.config.scaling_factor) / std

    def decode_differentiable(self, latents: torch.Tensor) -> torch.Tensor:
        """Differentiable decode to [0, 1] image space, not clamped."""
        mean, std = self._latent_stats(latents)
        z = latents.float() * std / float(self.vae.config.scaling_factor) + mean
        image = self.vae.decode(z.to(self.vae_dtype), return_dict=False)[0].float()
        return (image + 1) / 2

    def _latent_stats(self, like: torch.Tensor) -> tuple[Any, Any]:
        mean = getattr(self.vae.config, "latents_mean", None)
        std = getattr(self.vae.config, "latents_std", None)
        if mean is None or std is None:
            return 0.0, 1.0
        shape = (1, -1, 1, 1)
        return (
            torch.tensor(mean, device=like.device).view(shape),
            torch.tensor(std, device=like.device).view(shape),
        )

    def _check_x(self, x: torch.Tensor, prepared: Any) -> None:
        if not isinstance(prepared, SDXLPrepared):
            raise InvalidInput(
                f"{self.name}: prepared: expected the result of prepare(), "
                f"got {type(prepared).__name__}"
            )
        h, w = prepared.size[0] // 8, prepared.size[1] // 8
        if x.ndim != 4 or x.shape[1] != 4 or tuple(x.shape[2:]) != (h, w):
            raise InvalidInput(
                f"{self.name}: x: expected latents (N, 4, {h}, {w}) for a {prepared.size} frame, "
                f"got {tuple(x.shape)}"
            )


def _frozen(module: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Eval mode, no parameter gradients (guidance needs gradients w.r.t. x only)."""
    module = module.to(device)
    if module.dtype != dtype:  # skip a no-op cast (diffusers warns on every .to(dtype))
        module = module.to(dtype=dtype)
    module = module.eval()
    module.requires_grad_(False)
    return module
