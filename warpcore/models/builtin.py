"""The built-in model: a small pixel-space conditional UNet for inpainting and 4x super-resolution.

Network ``F`` is a small plain-PyTorch UNet without attention (:mod:`warpcore.models.unet`:
fully convolutional, any frame size; the layout and parameter names of a diffusers
``UNet2DModel``, without importing diffusers). Input channels, in this order (7 in all):

- 0-2: ``c_in(sigma) * (x - b)``: the noisy image in [-1, 1] minus the base ``b`` (below);
- 3-5: the condition image in [-1, 1]: for ``inpaint`` the input frame with the hole filled
  from its surroundings (trained with :func:`push_pull_fill`; the shipped config fills with
  :func:`structure_fill`: harmonic, with the structures that cross the hole continued); for
  ``upscale`` the low-resolution
  frame upsampled bicubically to output size;
- 6: the mask (1 = region to fill; all zeros for ``upscale``).

Beside it, weights may carry an upscale estimator (config.json ``"estimator"``,
:class:`warpcore.models.blocknet.BlockNet`: a residual CNN on 4x4 pixel blocks, keys
``estimator.*`` in model.safetensors): the one-call estimate ``E[x0 | b]`` of upscaling, from
which every upscale run starts, comes from it instead of the UNet at ``sigma_max``. The shipped
weights have one (session 9: +0.42 dB over the UNet's estimate on the held-out clips, +0.66
over bicubic, and 6.5-11x faster); the UNet still takes every noisy step.

The task is a class label (0 = inpaint, 1 = upscale) added to the time embedding. The noise
level enters as ``1000 * c_noise`` through the UNet's sinusoidal time embedding.

EDM preconditioning (Karras et al. 2022) around the condition image ``b`` (see
:class:`EDMUNet`), ``D = b + c_skip (x - b) + c_out F``, with ``sd = sigma_data`` the standard
deviation of the residual ``x0 - b`` per task (0.25 inpaint, 0.125 upscale):
``c_skip = sd^2 / (s^2 + sd^2)``, ``c_out = s sd / sqrt(s^2 + sd^2)``,
``c_in = 1 / sqrt(s^2 + sd^2)``, ``c_noise = ln(s) / 4``.

Noise levels: ``sigma_min`` 0.002 .. ``sigma_max`` 20 (pure noise for [-1, 1] images), reached
by the training distribution ``ln sigma ~ N(-0.8, 1.6^2)`` at 2.4 standard deviations (EDM's 80
would lie at 3.2, where the net barely trains).

Training noise: GP noise with squared-exponential length scale ``2 / pi`` pixels along both
axes (METHOD.md section 1's rule ``eps = 2 / (pi * res)`` on the training grid); sample with
noise of that length scale in pixels (``config.json``: ``gp_length_scale_px``). Super-resolution
trained at x2, x4 and x8 (x4 most often).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from warpcore import holes
from warpcore.errors import InvalidInput, ModelNotFound
from warpcore.holes import push_pull_fill
from warpcore.models.base import Condition, Task
from warpcore.models.blocknet import BlockNet
from warpcore.models.conditions import project_lowres, upsample_lowres
from warpcore.models.unet import UNet

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "builtin"
TASKS: tuple[Task, ...] = ("inpaint", "upscale")
TASK_INDEX = {"inpaint": 0, "upscale": 1}
SCALES = (2, 4, 8)
# Default strengths (partial runs: the last steps of a DEFAULT_STEPS schedule; TRAINING.md has
# the held-out real-video numbers).
# Upscale starts from the one-call estimate E[x0 | b] ("start": "estimate") and takes the last
# step (from sigma 0.002). With 2 steps (0.2) the fixed-length guidance step of the second-last
# one cost 1.6 dB on smooth footage (running_car 44.4 vs 46.4 dB; bicubic 46.9) for a 5% lower
# warping error on the mean.
# Inpaint starts from the classical fill ("start": "base", "fill": "structure") and adds light
# texture in the last 3 steps (from sigma 0.055). From the estimate of the smooth push-pull fill
# the demo showed a pale blob on the cup's rim and the real-video hole PSNR was 19.01 dB (Telea
# 19.28); from the Telea fill 19.23 (0.5 measured lower and noisy).
UPSCALE_STRENGTH = 0.1
# The detail's share times the calibrated weight. With the session-6 weights on the held-out
# clips, 1.0 gained 0.008 dB over 0.75 for 5% more warping error (0.00084 vs 0.00080): 0.75.
UPSCALE_ESTIMATE_WEIGHT = 0.75
# Self-calibration (config.json "calibrate": the tasks that use it): how far to trust the
# estimate's detail on THIS footage, measured on the footage itself one scale down. The input is
# area-downscaled once more by the same factor, the model upscales that back, and the
# least-squares weight of its detail against the real input is the weight used at full scale
# (times "estimate_weight", clamped to [0, CALIBRATE_MAX]). On held-out video the weight that
# fits the truth follows it (TRAINING.md): ~1 on textured clips, ~0.3 on smooth fog/smoke
# footage where the estimate's detail is grain and cost 2 dB at a fixed 0.75.
CALIBRATE_MAX = 1.5
CALIBRATE_MIN_PX = 8  # the input downscaled once more must be at least this (H and W)
# Weights with an upscale estimator (config.json "estimator", session 9) use its detail whole and
# uncalibrated: on the held-out clips 1.0 uncalibrated beat 1.0 and 0.75 x self-calibrated on
# every clip (vtest: a tie), and on a smooth synthetic fog, where the UNet's estimate lost 3.6 dB
# to bicubic, the estimator gains 0.7 dB (TRAINING.md, session 9).
ESTIMATOR_DEFAULTS: dict[str, Any] = {
    "estimate_weight": {"inpaint": 1.0, "upscale": 1.0},
    "calibrate": [],
}
# Removal's start: the structure fill noised to sigma 0.0128 (one network call, then the skipped
# call at sigma_min). 0.2 beat 0.3 on real removal with the band guidance on every score and is
# 25% faster; 0.3's extra step left grain in big holes (TRAINING.md, session 10).
INPAINT_STRENGTH = 0.2
INPAINT_START, INPAINT_FILL = "base", "structure"
# Steps of a full run: with the paper's fixed-length guidance step, 25 steps measured worse than
# 10 on the demo's inpainting (more pushes in the last, low-noise steps: TRAINING.md).
DEFAULT_STEPS = 10
# Weights saved before "start" / "strength" were in config.json ran from the base b, at these;
# before "fill" / "calibrate": the push-pull fill, no calibration.
LEGACY_START = "base"
LEGACY_STRENGTH = {"inpaint": 0.5, "upscale": 0.25}
STARTS = ("estimate", "base")
# How the hole of the inpainting condition is filled before the network sees it (config.json
# "fill"): "push-pull" (smooth, what the weights were trained on), "telea" (OpenCV's Telea: it
# carries edges and colours into the hole along isophotes, but pushed the demo's red cup up
# through its white rim, and flickers as the mask moves) or "structure" (the shipped one:
# warpcore.holes.structure_fill, a harmonic fill with the structures that cross the hole
# continued). Training always uses push-pull.
FILLS = ("push-pull", "telea", "structure")

DEFAULT_CONFIG: dict[str, Any] = {
    "block_out_channels": [32, 64, 128],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sigma_data": [0.25, 0.125],
    "sigma_min": 0.002,
    "sigma_max": 20.0,
    "gp_length_scale_px": 2.0 / math.pi,
    "residual": True,
    "start": {"inpaint": INPAINT_START, "upscale": "estimate"},
    "strength": {"inpaint": INPAINT_STRENGTH, "upscale": UPSCALE_STRENGTH},
    "estimate_weight": {"inpaint": 1.0, "upscale": UPSCALE_ESTIMATE_WEIGHT},
    "calibrate": ["upscale"],
    "fill": INPAINT_FILL,
}


def build_unet(config: dict[str, Any]) -> nn.Module:
    """The network F (:class:`warpcore.models.unet.UNet`): no attention, 7 in / 3 out channels."""
    return UNet(
        in_channels=7,
        out_channels=3,
        widths=tuple(config["block_out_channels"]),
        layers_per_block=int(config["layers_per_block"]),
        groups=int(config["norm_num_groups"]),
        classes=len(TASKS),
    )


class EDMUNet(nn.Module):
    """``D(x, sigma, cond) = b + c_skip (x - b) + c_out F(c_in (x - b), c_noise, cond)``.

    EDM preconditioning around a base ``b``: the condition image (``residual``; the upsampled
    low-res frame, or the frame with its hole filled smoothly), else 0. As
    ``x - b = (x0 - b) + sigma e``, the diffusion runs on the residual ``x0 - b`` (the detail
    bicubic lacks, the hole's texture) while the interface stays ``D(x) ~ E[x0 | x]``; an
    untrained ``F`` (output 0) already gives the classical result ``b``.

    ``cond``: (N, 4, H, W) condition image (3, in [-1, 1]) and mask (1); ``task``: (N,) long.
    Any H, W: inputs are reflect-padded to the UNet's downsampling multiple and cropped back.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = {**DEFAULT_CONFIG, **config}
        self.unet = build_unet(self.config)
        sd = self.config["sigma_data"]
        sd = [float(sd)] * 2 if isinstance(sd, (int, float)) else [float(v) for v in sd]
        self.register_buffer("sigma_data", torch.tensor(sd), persistent=False)
        self.multiple = 2 ** (len(self.config["block_out_channels"]) - 1)
        self.residual = bool(self.config["residual"])
        # The upscale task's one-call estimate (config.json "estimator"; weights from before it
        # existed have none and estimate with the UNet at sigma_max).
        self.estimator: BlockNet | None = None
        if self.config.get("estimator") is not None:
            if not self.residual:
                raise InvalidInput('config.json: an estimator needs "residual": true')
            self.estimator = BlockNet.from_config(dict(self.config["estimator"]))
        # The UNet's activations' layout (``BuiltinDenoiser`` makes it channels-last on CPU).
        self.memory_format = torch.contiguous_format

    def base(self, cond: torch.Tensor) -> torch.Tensor:
        """The base ``b`` of the preconditioning: the condition image, or 0 if not residual."""
        return cond[:, :3] if self.residual else torch.zeros_like(cond[:, :3])

    def estimate(self, cond: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The one-call estimate of ``E[x0 | cond]``: for upscaling the estimator's (when the
        weights have one), else ``D(b, sigma_max)`` (trained as such)."""
        base = self.base(cond)
        upscale = task == TASK_INDEX["upscale"]
        if self.estimator is not None and bool(upscale.all()):
            return self.estimator(base)
        sigma = torch.full((cond.shape[0],), float(self.config["sigma_max"]), device=cond.device)
        out = self(base, sigma, cond, task)
        if self.estimator is not None and bool(upscale.any()):
            out = out.clone()
            out[upscale] = self.estimator(base[upscale])
        return out

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, task: torch.Tensor
    ) -> torch.Tensor:
        sd = self.sigma_data.to(x.dtype)[task].reshape(-1, 1, 1, 1)
        s = sigma.to(x.dtype).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, 1, 1)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1.0 / (s**2 + sd**2).sqrt()
        c_noise = s.flatten().log() / 4.0
        cond = cond.to(x.dtype)
        base = self.base(cond)
        h, w = x.shape[-2:]
        inp = _pad_to(torch.cat([c_in * (x - base), cond], dim=1), self.multiple)
        inp = inp.contiguous(memory_format=self.memory_format)
        out = self.unet(inp, 1000.0 * c_noise, task)
        return base + c_skip * (x - base) + c_out * out[..., :h, :w]


def start_mode(config: dict[str, Any], task: str) -> str:
    """config.json's ``"start"`` for ``task``: one of :data:`STARTS`, for every task or per
    task (``{"inpaint": "base", "upscale": "estimate"}``)."""
    value = config["start"]
    mode = value.get(task) if isinstance(value, dict) else value
    if mode not in STARTS:
        raise InvalidInput(f"config.json: start {value!r}; accepted: {', '.join(STARTS)}")
    return str(mode)


def telea_fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """OpenCV's Telea inpainting (radius 3, on 8 bits) of the hole (``mask`` 1) of (N, 3, H, W)
    frames in [0, 1]; known pixels are returned unchanged."""
    import cv2
    import numpy as np

    out = []
    for frame, hole in zip(image, mask, strict=True):
        rgb = frame.detach().permute(1, 2, 0).float().cpu().numpy()
        u8 = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
        m8 = (hole[0].detach().cpu().numpy() > 0.5).astype(np.uint8)
        done = cv2.inpaint(u8, m8, 3, cv2.INPAINT_TELEA).astype(np.float32) / 255.0
        out.append(torch.from_numpy(done).permute(2, 0, 1))
    filled = torch.stack(out).to(image.device, image.dtype)
    return mask * filled + (1.0 - mask) * image


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def structure_fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`warpcore.holes.structure_fill` (harmonic, structures continued) of the hole
    (``mask`` 1) of (N, 3, H, W) frames in [0, 1]; known pixels are returned unchanged."""
    import numpy as np

    out = []
    for frame, hole in zip(image, mask, strict=True):
        rgb = np.ascontiguousarray(frame.detach().permute(1, 2, 0).float().cpu().numpy())
        filled = holes.structure_fill(rgb, hole[0].detach().cpu().numpy() > 0.5)
        out.append(torch.from_numpy(filled).permute(2, 0, 1))
    filled = torch.stack(out).to(image.device, image.dtype)
    return mask * filled + (1.0 - mask) * image


def fill_hole(image: torch.Tensor, mask: torch.Tensor, fill: str = "push-pull") -> torch.Tensor:
    """(N, 3, H, W) frames in [0, 1] with the hole (``mask`` > 0.5) filled by ``fill``
    (:data:`FILLS`); known pixels unchanged."""
    m = (mask > 0.5).to(image.dtype)
    if fill == "structure":
        return structure_fill(image, m)
    return telea_fill(image, m) if fill == "telea" else push_pull_fill(image, m)


def condition_tensor(
    task: str,
    image: torch.Tensor,
    mask: torch.Tensor | None = None,
    fill: str | None = "push-pull",
) -> torch.Tensor:
    """The 4 condition channels (image in [-1, 1], mask) from images at OUTPUT resolution.

    ``image``: (N, 3, H, W) in [0, 1] (for upscale: already upsampled); ``mask``: (N, 1, H, W);
    ``fill``: how the hole of the condition image is filled (:data:`FILLS`); None: ``image``'s
    hole is already filled (:func:`fill_hole` on the whole frame before it was tiled).
    """
    if task == "inpaint":
        if mask is None:
            raise InvalidInput("mask: required for task 'inpaint' (1, H, W) with 1 = fill")
        m = (mask > 0.5).to(image.dtype)
        filled = image if fill is None else fill_hole(image, m, fill)
        return torch.cat([2.0 * filled - 1.0, m], dim=1)
    zeros = torch.zeros_like(image[:, :1])
    return torch.cat([2.0 * image - 1.0, zeros], dim=1)


@dataclass(frozen=True)
class BuiltinPrepared:
    """Condition channels at output resolution and the task label (batch of one); for
    super-resolution also the low-resolution frame (1, 3, h, w) in [0, 1] and the scale."""

    cond: torch.Tensor
    task: torch.Tensor
    lowres: torch.Tensor | None = None
    scale: int = 1
    detail_weight: float | None = None  # measured on the whole frame (Condition.detail_weight)


class BuiltinDenoiser:
    """The built-in model behind the :class:`warpcore.models.base.Denoiser` interface."""

    name = "builtin"
    channels = 3
    downscale = 1

    def __init__(
        self, net: EDMUNet, task: Task, device: torch.device, *, project: bool = False
    ) -> None:
        self.net = net.to(device).eval().requires_grad_(False)
        if torch.device(device).type == "cpu":  # oneDNN convolutions: ~18% less CPU a call
            self.net.to(memory_format=torch.channels_last)
            self.net.memory_format = torch.channels_last
        self.project = project
        self.device = device
        self.dtype = torch.float32
        self.sigma_min = float(net.config["sigma_min"])
        self.sigma_max = float(net.config["sigma_max"])
        self.tasks = TASKS  # one network does both; ``task`` is the one the caller asked for
        self.task = task
        self.default_strength = float(net.config["strength"][task])
        self.default_steps = DEFAULT_STEPS
        start_mode(net.config, task)  # checks config.json's "start"
        if net.config["fill"] not in FILLS:
            raise InvalidInput(
                f"config.json: fill {net.config['fill']!r}; accepted: {', '.join(FILLS)}"
            )

    def prepare(self, cond: Condition) -> BuiltinPrepared:
        """Check the condition and build its channels at output resolution."""
        if cond.task not in self.tasks:
            raise InvalidInput(f"task: got {cond.task!r}; accepted: {', '.join(self.tasks)}")
        image = _check_image(cond.image).to(self.device, self.dtype)[None]
        if cond.task == "upscale":
            if cond.scale not in SCALES:
                raise InvalidInput(f"scale: got {cond.scale!r}; accepted: 2, 4, 8")
            channels = condition_tensor("upscale", upsample_lowres(image, cond.scale))
            label = torch.tensor([TASK_INDEX[cond.task]], device=self.device)
            return BuiltinPrepared(
                channels, label, lowres=image, scale=cond.scale, detail_weight=cond.detail_weight
            )
        mask = _check_mask(cond.mask, tuple(image.shape[-2:]))
        fill = None if cond.filled else str(self.net.config["fill"])
        channels = condition_tensor(
            "inpaint", image, mask.to(self.device, self.dtype)[None], fill=fill
        )
        label = torch.tensor([TASK_INDEX[cond.task]], device=self.device)
        return BuiltinPrepared(cond=channels, task=label)

    def whole_frame(self, cond: Condition) -> Condition:
        """What must be computed on the whole frame before a tiler cuts it: the hole's fill (a
        tile lying wholly inside the hole has no known pixel to fill from) and the start's
        calibrated detail weight (per tile it cost a model call a tile and gave each tile its
        own weight, blended across the overlaps)."""
        if cond.task == "inpaint" and cond.mask is not None and not cond.filled:
            image = _check_image(cond.image).to(self.device, self.dtype)[None]
            mask = _check_mask(cond.mask, tuple(image.shape[-2:])).to(self.device, self.dtype)
            filled = fill_hole(image, mask[None], str(self.net.config["fill"]))[0]
            return replace(cond, image=filled, filled=True)
        calibrate = self.task in self.net.config.get("calibrate", ())
        if (
            cond.task == "upscale"
            and calibrate
            and cond.detail_weight is None
            and cond.scale in SCALES
        ):
            low = _check_image(cond.image).to(self.device, self.dtype)[None]
            return replace(cond, detail_weight=self._calibrate(low, int(cond.scale)))
        return cond

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
        denoised = self.net(x, sigma, cond, prepared.task.expand(n))
        if not self.project or prepared.lowres is None:
            return denoised
        # Consistency with the input: the estimate's box average IS the low-resolution frame.
        image = project_lowres((denoised + 1.0) / 2.0, prepared.lowres.to(x.dtype), prepared.scale)
        return 2.0 * image - 1.0

    def start(self, prepared: Any) -> torch.Tensor | None:
        """A partial-strength run starts from the one-call estimate ``E[x0 | b]`` (one network
        call at ``sigma_max``): the default upscale is that estimate refined by the last few
        low-noise steps, the default fill adds texture to it (TRAINING.md). Weights whose
        config.json says ``"start": "base"`` start from ``b`` itself; ``"estimate_weight"``
        (per task) moves the start only that share of the way from ``b`` to the estimate."""
        if not isinstance(prepared, BuiltinPrepared):
            raise InvalidInput("prepared: expected the result of BuiltinDenoiser.prepare(cond)")
        base = prepared.cond[:, :3]
        if start_mode(self.net.config, self.task) == "base":
            return base  # weights from before the estimate was trained; a Telea-filled hole
        weight = float(self.net.config.get("estimate_weight", {}).get(self.task, 1.0))
        if self.task in self.net.config.get("calibrate", ()):
            measured = prepared.detail_weight
            weight *= self.calibrated_weight(prepared) if measured is None else measured
        return base + weight * (self.net.estimate(prepared.cond, prepared.task) - base)

    def calibrated_weight(self, prepared: BuiltinPrepared) -> float:
        """The start's detail weight for this prepared frame (:meth:`_calibrate`); 1 without
        a low-resolution frame."""
        if prepared.lowres is None:
            return 1.0
        return self._calibrate(prepared.lowres, prepared.scale)

    @torch.no_grad()
    def _calibrate(self, low: torch.Tensor, s: int) -> float:
        """The least-squares weight of the estimate's detail one scale down (see
        ``CALIBRATE_MAX``): the low-resolution frame (1, 3, h, w), area-downscaled by ``s``
        again and rounded to 8 bits, upscaled by the model's one-call estimate; the weight
        ``w`` that makes ``b' + w (estimate' - b')`` closest to the real low-resolution frame,
        in [0, CALIBRATE_MAX]. 1 where the frame is too small to measure, or the detail is 0."""
        h, w = (low.shape[-2] // s) * s, (low.shape[-1] // s) * s
        if min(h, w) < CALIBRATE_MIN_PX * s:
            return 1.0
        target = low[..., :h, :w].to(self.dtype)
        coarse = torch.round(F.avg_pool2d(target, s) * 255.0) / 255.0
        cond = condition_tensor("upscale", upsample_lowres(coarse, s))
        base = cond[:, :3].double()
        label = torch.tensor([TASK_INDEX["upscale"]], device=self.device)
        detail = self.net.estimate(cond, label).double() - base
        norm2 = float((detail**2).sum())
        if norm2 <= 0.0:
            return 1.0
        fit = float(((2.0 * target.double() - 1.0 - base) * detail).sum()) / norm2
        return min(max(fit, 0.0), CALIBRATE_MAX)

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


ESTIMATOR_PREFIX = "estimator."  # its weights' keys in model.safetensors; the UNet's have none


def save_weights(
    net: EDMUNet,
    state: dict[str, torch.Tensor],
    folder: str | Path,
    part: str = "unet",
) -> Path:
    """Write ``model.safetensors`` and ``config.json``: ``state`` holds the weights of ``part``
    (``"unet"`` or ``"estimator"``, e.g. their EMA), the other part is ``net``'s own."""
    from safetensors.torch import save_file

    if part not in ("unet", "estimator"):
        raise InvalidInput(f"part: got {part!r}; accepted: unet, estimator")
    unet = state if part == "unet" else net.unet.state_dict()
    tensors = dict(unet)
    if net.estimator is not None:
        estimator = state if part == "estimator" else net.estimator.state_dict()
        tensors.update({ESTIMATOR_PREFIX + k: v for k, v in estimator.items()})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
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
    config = json.loads(config_path.read_text())
    config.setdefault("residual", False)  # weights saved before the residual form existed
    config.setdefault("start", LEGACY_START)  # ... before the one-call estimate was trained
    config.setdefault("strength", dict(LEGACY_STRENGTH))
    config.setdefault("calibrate", [])  # ... before the upscale weight was self-calibrated
    config.setdefault("fill", "push-pull")  # ... before the Telea fill
    net = EDMUNet(config)
    tensors = load_file(str(path))
    estimator = {
        k[len(ESTIMATOR_PREFIX) :]: v for k, v in tensors.items() if k.startswith(ESTIMATOR_PREFIX)
    }
    unet = {k: v for k, v in tensors.items() if not k.startswith(ESTIMATOR_PREFIX)}
    if (net.estimator is None) != (not estimator):
        raise InvalidInput(
            f"built-in model: {path} and {config_path} disagree: config.json "
            + ("has no" if net.estimator is None else "has an")
            + ' "estimator", the weights '
            + ("have one" if estimator else "have none")
        )
    net.unet.load_state_dict(unet)
    if net.estimator is not None:
        net.estimator.load_state_dict(estimator)
    return net


def load_builtin(
    task: str,
    device: str | torch.device = "cpu",
    weights: str | Path | None = None,
    *,
    project: bool = False,
) -> BuiltinDenoiser:
    """The shipped built-in model (or ``weights``: a model.safetensors or its folder).

    ``project``: make every super-resolution estimate consistent with the low-resolution frame
    (its ``scale`` x ``scale`` box averages equal the input; see :func:`project_lowres`). It
    raises PSNR (+0.42 dB over bicubic on held-out real video with weights trained through it,
    against +0.26 without) but re-imposes the input's own aliasing on every frame: the warping
    error rose 12% on those clips and 45% on the demo, past its check (1.79x the truth's own;
    TRAINING.md). A flicker-free product keeps it off; it is an option for stills.
    """
    if task not in TASKS:
        raise InvalidInput(f"task: got {task!r}; accepted: {', '.join(TASKS)}")
    net = load_net(weights)
    return BuiltinDenoiser(net, task, torch.device(device), project=project)  # type: ignore[arg-type]
