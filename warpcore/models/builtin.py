"""The built-in model: a small pixel-space conditional UNet for inpainting and 4x super-resolution.

Network ``F`` is a diffusers ``UNet2DModel`` without attention (fully convolutional, any frame
size). Input channels, in this order (7 in all):

- 0-2: ``c_in(sigma) * x``, the noisy image in [-1, 1] scaled by EDM's ``c_in``;
- 3-5: the condition image in [-1, 1]: for ``inpaint`` the input frame with the hole set to 0
  (mid-grey); for ``upscale`` the low-resolution frame upsampled bicubically to output size;
- 6: the mask (1 = region to fill; all zeros for ``upscale``).

The task is a class label (0 = inpaint, 1 = upscale) added to the time embedding. The noise
level enters as ``1000 * c_noise`` through the UNet's sinusoidal time embedding.

EDM preconditioning (Karras et al. 2022, ``sigma_data`` = 0.5), ``D = c_skip x + c_out F``:
``c_skip = sd^2 / (s^2 + sd^2)``, ``c_out = s sd / sqrt(s^2 + sd^2)``,
``c_in = 1 / sqrt(s^2 + sd^2)``, ``c_noise = ln(s) / 4``.

The model was trained with GP noise whose squared-exponential length scale is ``2 / pi``
pixels (METHOD.md section 1's rule ``eps = 2 / (pi * res)`` on the training grid); sample it
with noise of that length scale in pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from warpcore.errors import InvalidInput, ModelNotFound
from warpcore.models.base import Condition, Task

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "builtin"
TASKS: tuple[Task, ...] = ("inpaint", "upscale")
TASK_INDEX = {"inpaint": 0, "upscale": 1}
SCALES = (2, 4, 8)

DEFAULT_CONFIG: dict[str, Any] = {
    "block_out_channels": [32, 64, 128],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sigma_data": 0.5,
    "sigma_min": 0.002,
    "sigma_max": 80.0,
    "gp_length_scale_px": 2.0 / math.pi,
}


def build_unet(config: dict[str, Any]) -> nn.Module:
    """The network F: a diffusers UNet2DModel with no attention, 7 in / 3 out channels."""
    from diffusers import UNet2DModel

    blocks = list(config["block_out_channels"])
    return UNet2DModel(
        in_channels=7,
        out_channels=3,
        block_out_channels=tuple(blocks),
        down_block_types=("DownBlock2D",) * len(blocks),
        up_block_types=("UpBlock2D",) * len(blocks),
        layers_per_block=int(config["layers_per_block"]),
        norm_num_groups=int(config["norm_num_groups"]),
        add_attention=False,
        num_class_embeds=2,
        time_embedding_type="positional",
    )


class EDMUNet(nn.Module):
    """``D(x, sigma, cond) = c_skip x + c_out F(c_in x, c_noise, cond)`` (EDM preconditioning).

    ``cond``: (N, 4, H, W) condition image (3, in [-1, 1]) and mask (1); ``task``: (N,) long.
    Any H, W: inputs are reflect-padded to the UNet's downsampling multiple and cropped back.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = {**DEFAULT_CONFIG, **config}
        self.unet = build_unet(self.config)
        self.sigma_data = float(self.config["sigma_data"])
        self.multiple = 2 ** (len(self.config["block_out_channels"]) - 1)

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, task: torch.Tensor
    ) -> torch.Tensor:
        sd = self.sigma_data
        s = sigma.to(x.dtype).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, 1, 1)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1.0 / (s**2 + sd**2).sqrt()
        c_noise = s.flatten().log() / 4.0
        h, w = x.shape[-2:]
        inp = _pad_to(torch.cat([c_in * x, cond.to(x.dtype)], dim=1), self.multiple)
        out = self.unet(inp, 1000.0 * c_noise, class_labels=task, return_dict=False)[0]
        return c_skip * x + c_out * out[..., :h, :w]


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def upsample_lowres(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling of (N, 3, h, w) images in [0, 1] by ``scale``, clamped to [0, 1]."""
    up = F.interpolate(image, scale_factor=scale, mode="bicubic", align_corners=False)
    return up.clamp(0.0, 1.0)


def condition_tensor(
    task: str, image: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The 4 condition channels (image in [-1, 1], mask) from images at OUTPUT resolution.

    ``image``: (N, 3, H, W) in [0, 1] (for upscale: already upsampled); ``mask``: (N, 1, H, W).
    """
    if task == "inpaint":
        if mask is None:
            raise InvalidInput("mask: required for task 'inpaint' (1, H, W) with 1 = fill")
        m = (mask > 0.5).to(image.dtype)
        return torch.cat([(2.0 * image - 1.0) * (1.0 - m), m], dim=1)
    zeros = torch.zeros_like(image[:, :1])
    return torch.cat([2.0 * image - 1.0, zeros], dim=1)


@dataclass(frozen=True)
class BuiltinPrepared:
    """Condition channels at output resolution and the task label (batch of one)."""

    cond: torch.Tensor
    task: torch.Tensor


class BuiltinDenoiser:
    """The built-in model behind the :class:`warpcore.models.base.Denoiser` interface."""

    name = "builtin"
    channels = 3
    downscale = 1

    def __init__(self, net: EDMUNet, task: Task, device: torch.device) -> None:
        self.net = net.to(device).eval().requires_grad_(False)
        self.device = device
        self.dtype = torch.float32
        self.sigma_min = float(net.config["sigma_min"])
        self.sigma_max = float(net.config["sigma_max"])
        self.tasks = (task,) if task in TASKS else TASKS
        self.task = task

    def prepare(self, cond: Condition) -> BuiltinPrepared:
        """Check the condition and build its channels at output resolution."""
        if cond.task not in self.tasks:
            raise InvalidInput(f"task: got {cond.task!r}; accepted: {', '.join(self.tasks)}")
        image = _check_image(cond.image).to(self.device, self.dtype)[None]
        if cond.task == "upscale":
            if cond.scale not in SCALES:
                raise InvalidInput(f"scale: got {cond.scale!r}; accepted: 2, 4, 8 (trained on 4)")
            image = upsample_lowres(image, cond.scale)
            channels = condition_tensor("upscale", image)
        else:
            mask = _check_mask(cond.mask, tuple(image.shape[-2:]))
            channels = condition_tensor("inpaint", image, mask.to(self.device, self.dtype)[None])
        label = torch.tensor([TASK_INDEX[cond.task]], device=self.device)
        return BuiltinPrepared(cond=channels, task=label)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, prepared: Any) -> torch.Tensor:
        if not isinstance(prepared, BuiltinPrepared):
            raise InvalidInput("prepared: expected the result of BuiltinDenoiser.prepare(cond)")
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2:] != prepared.cond.shape[-2:]:
            raise InvalidInput(
                f"x: expected (N, 3, {prepared.cond.shape[-2]}, {prepared.cond.shape[-1]}), "
                f"got {tuple(x.shape)}"
            )
        n = x.shape[0]
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype).reshape(-1).expand(n)
        cond = prepared.cond.expand(n, -1, -1, -1)
        return self.net(x, sigma, cond, prepared.task.expand(n))

    def start(self, prepared: Any) -> torch.Tensor | None:
        return None

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return 2.0 * image - 1.0

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def _check_image(image: object) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InvalidInput(f"image: expected a tensor (3, H, W) in [0, 1], got {shape}")
    if min(image.shape[-2:]) < 1:
        raise InvalidInput(f"image: expected H, W >= 1, got {tuple(image.shape)}")
    return image.float()


def _check_mask(mask: object, size: tuple[int, int]) -> torch.Tensor:
    ok = isinstance(mask, torch.Tensor) and mask.ndim == 3 and mask.shape[0] == 1
    if not ok or tuple(mask.shape[-2:]) != size:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise InvalidInput(f"mask: expected a tensor (1, {size[0]}, {size[1]}), got {got}")
    return mask.float()


def save_weights(net: EDMUNet, state: dict[str, torch.Tensor], folder: str | Path) -> Path:
    """Write ``model.safetensors`` (``state``: the UNet's weights, e.g. EMA) and ``config.json``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(net.config, indent=2) + "\n")
    return folder / "model.safetensors"


def load_net(weights: str | Path | None = None) -> EDMUNet:
    """The preconditioned network from ``model.safetensors`` and the ``config.json`` beside it."""
    from safetensors.torch import load_file

    path = Path(weights) if weights is not None else ASSET_DIR / "model.safetensors"
    if path.is_dir():
        path = path / "model.safetensors"
    config_path = path.parent / "config.json"
    if not path.is_file() or not config_path.is_file():
        raise ModelNotFound(
            f"built-in model: {path} or {config_path} is missing; reinstall the package, or "
            "train one with 'warpdiff train' and export it with 'warpdiff train --export RUN_DIR'"
        )
    net = EDMUNet(json.loads(config_path.read_text()))
    net.unet.load_state_dict(load_file(str(path)))
    return net


def load_builtin(
    task: str, device: str | torch.device = "cpu", weights: str | Path | None = None
) -> BuiltinDenoiser:
    """The shipped built-in model (or ``weights``: a model.safetensors or its folder)."""
    if task not in TASKS:
        raise InvalidInput(f"task: got {task!r}; accepted: {', '.join(TASKS)}")
    return BuiltinDenoiser(load_net(weights), task, torch.device(device))  # type: ignore[arg-type]
