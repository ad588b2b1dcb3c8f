"""Fine-tuning an SDXL UNet with GP noise in latent space (METHOD.md section 5).

Channel concatenation, diffusers' layout: inpaint ``[noisy latent 4, mask 1, masked-image
latent 4]`` (9); upscale ``[noisy latent 4, upsampled low-res latent 4]`` (8). A 4-channel UNet
gets a wider ``conv_in`` whose new input weights start at zero (so it starts as the original
model). The loss is the epsilon-prediction (or v-prediction, per the model's scheduler) MSE with
``e`` GP noise on the latent grid, length scale ``2 / (pi * crop / 8)``. The VAE and text
encoders are frozen; the prompt is encoded once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from warpcore.errors import InvalidInput, ModelNotFound
from warpcore.training.batches import Batch
from warpcore.training.config import TrainConfig
from warpcore.training.data import NoiseBank


def widen_conv_in(unet: Any, channels: int) -> None:
    """Give ``unet.conv_in`` ``channels`` inputs; new weights are zero, old ones kept."""
    old = unet.conv_in
    if old.in_channels == channels:
        return
    if old.in_channels > channels:
        raise InvalidInput(
            f"model: UNet has {old.in_channels} input channels, task needs {channels}"
        )
    new = torch.nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=channels)


class SDXLBackend:
    """Fine-tunes the UNet of a diffusers SDXL folder; ``model`` is that UNet."""

    def __init__(self, cfg: TrainConfig) -> None:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        folder = Path(cfg.model)
        if not (folder / "unet").is_dir() or not (folder / "vae").is_dir():
            raise ModelNotFound(f"model: {folder} is not a diffusers SDXL folder (unet/, vae/)")
        self.cfg, self.task = cfg, cfg.tasks[0]
        torch.manual_seed(cfg.seed)
        self.model = UNet2DConditionModel.from_pretrained(folder / "unet")
        widen_conv_in(self.model, 9 if self.task == "inpaint" else 8)
        self.model.train()
        self.vae = AutoencoderKL.from_pretrained(folder / "vae").eval().requires_grad_(False)
        self.scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
        self.embeds, self.pooled = _encode_prompt(folder, cfg.prompt, self.model)
        self.latent = cfg.crop // 8
        self.bank = NoiseBank(cfg.noise, 4, self.latent, cfg.bank_size, cfg.seed)

    @torch.no_grad()
    def _latents(self, images: torch.Tensor) -> torch.Tensor:
        dist = self.vae.encode(2.0 * images - 1.0).latent_dist
        return dist.mean * self.vae.config.scaling_factor

    @torch.no_grad()
    def _condition(self, batch: Batch) -> torch.Tensor:
        if self.task == "inpaint":
            mask = F.interpolate(batch.mask, size=(self.latent, self.latent), mode="nearest")
            return torch.cat([mask, self._latents(batch.image)], dim=1)
        return self._latents(batch.image)

    def loss(self, batch: Batch, gen: torch.Generator) -> torch.Tensor:
        n = batch.clean.shape[0]
        x0 = self._latents(batch.clean)
        cond = self._condition(batch)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (n,), generator=gen)
        e = self.bank.sample(n, gen)
        noisy = self.scheduler.add_noise(x0, e, t)
        pred = self._unet(torch.cat([noisy, cond], dim=1), t)
        if self.scheduler.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(x0, e, t)
        else:
            target = e
        return F.mse_loss(pred, target)

    def _unet(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n, size = x.shape[0], float(self.cfg.crop)
        time_ids = torch.tensor([[size, size, 0.0, 0.0, size, size]]).expand(n, 6)
        added = {"text_embeds": self.pooled.expand(n, -1), "time_ids": time_ids}
        hidden = self.embeds.expand(n, -1, -1)
        return self.model(x, t, encoder_hidden_states=hidden, added_cond_kwargs=added).sample

    @torch.no_grad()
    def validate(
        self, val: dict[str, Batch], ema: dict[str, torch.Tensor] | None
    ) -> dict[str, Any]:
        """The loss on the fixed held-out crops at fixed timesteps and noise (lower is better)."""
        batch = val[self.task]
        gen = torch.Generator().manual_seed(4321)
        backup = None
        if ema is not None:
            backup = {k: v.clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(ema)
        self.model.eval()
        loss = float(self.loss(batch, gen))
        self.model.train()
        if backup is not None:
            self.model.load_state_dict(backup)
        return {"val_loss": loss, "score": -loss}

    def export(self, folder: Path, state: dict[str, torch.Tensor]) -> Path:
        """A diffusers ``unet/`` folder (safetensors + config.json) under ``folder``."""
        backup = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(state)
        self.model.save_pretrained(Path(folder) / "unet", safe_serialization=True)
        self.model.load_state_dict(backup)
        return Path(folder) / "unet"


@torch.no_grad()
def _encode_prompt(folder: Path, prompt: str, unet: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt embeddings (1, 77, D), pooled (1, P)) from the folder's text encoders."""
    from diffusers import StableDiffusionXLPipeline

    try:
        pipe = StableDiffusionXLPipeline.from_pretrained(folder, unet=None, vae=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelNotFound(f"model: cannot load the text encoders of {folder}: {exc}") from exc
    embeds, _, pooled, _ = pipe.encode_prompt(
        prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    del pipe
    return embeds.float(), pooled.float()
