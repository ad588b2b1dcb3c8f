"""``load_denoiser``: one entry point from a model spec to a :class:`Denoiser`.

Specs:

- ``"builtin"``: the small model shipped with the package (``warpcore.models.builtin``; option
  ``project``, default False: super-resolution estimates made consistent with the input frame);
- ``"gaussian"``: the analytic Gaussian denoiser (options: its constructor's keywords);
- a diffusers SDXL folder, or a hub id already in the local Hugging Face cache.

For SDXL the task must fit the UNet (``in_channels`` 9 = inpainting, 8 = super-resolution
fine-tune). ``task="upscale"`` with a 4-channel UNet selects zero-shot super-resolution
(:class:`warpcore.models.zeroshot.ZeroShotSR`): the run must start from the noised upsampled frame,
so a ``strength`` option, when given, must be < 1 (the request's ``strength``; 0.3-0.6 is typical).
Every spec accepts ``strength`` (pass the request's); only zero-shot SR checks it.

A fine-tune exported as a lone ``unet/`` folder loads with ``base=`` a full SDXL folder or hub id.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from warpcore.errors import InvalidInput, ModelNotFound
from warpcore.models.base import Denoiser

TASKS = ("inpaint", "upscale")
SDXL_OPTIONS = ("vae_tiling", "strength", "project", "base")
GAUSSIAN_OPTIONS = (
    "channels",
    "data_std",
    "data_lengthscale",
    "noise_lengthscale",
    "sigma_min",
    "sigma_max",
    "tol",
    "max_radius",
    "conditioned",
)


def load_denoiser(
    spec: str,
    task: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    **options: Any,
) -> Denoiser:
    """Load the model named by ``spec`` for ``task`` ("inpaint" or "upscale")."""
    if task not in TASKS:
        raise InvalidInput(f"task: got {task!r}; accepted: {', '.join(TASKS)}")
    if not isinstance(spec, str) or not spec:
        raise InvalidInput("model: expected 'builtin', 'gaussian', a diffusers folder or a hub id")
    if spec == "builtin":
        _no_options(spec, options, ("strength", "project"))
        return _load_builtin(task, device, project=bool(options.get("project", False)))
    if spec == "gaussian":
        _no_options(spec, options, (*GAUSSIAN_OPTIONS, "strength"))
        options.pop("strength", None)
        from warpcore.models.gaussian import GaussianDenoiser

        return GaussianDenoiser(device=device, dtype=dtype, **options)
    _no_options(spec, options, SDXL_OPTIONS)
    return _load_sdxl(spec, task, device, dtype, **options)


def _load_sdxl(
    spec: str,
    task: str,
    device: str | torch.device,
    dtype: torch.dtype | None,
    *,
    vae_tiling: bool = True,
    strength: float | None = None,
    project: bool = True,
    base: str | None = None,
) -> Denoiser:
    from warpcore.models.sdxl_load import (
        REQUIRED,
        how_to_get,
        load_sdxl,
        resolve_model_dir,
        unet_in_channels,
    )
    from warpcore.models.zeroshot import ZeroShotSR

    base_dir = resolve_model_dir(base, task) if base else None
    path = resolve_model_dir(spec, task, ("unet",) if base_dir else REQUIRED)
    channels = unet_in_channels(path)
    fits = {9: "inpaint", 8: "upscale", 4: "upscale"}
    if fits.get(channels) != task:
        kind = {9: "an inpainting", 8: "a super-resolution", 4: "a text-to-image"}.get(
            channels, f"a {channels}-input-channel"
        )
        raise InvalidInput(
            f"model {spec}: {kind} UNet (in_channels={channels}) does not fit task {task!r}; "
            f"{how_to_get(task)}"
        )
    if channels == 4 and strength is not None and not 0 < strength < 1:
        raise InvalidInput(
            f"strength: zero-shot super-resolution with a 4-channel model starts from the noised "
            f"upsampled frame, so strength must be in (0, 1) (e.g. 0.5), got {strength!r}; "
            "or use a super-resolution fine-tune (in_channels=8) at strength 1"
        )
    denoiser = load_sdxl(path, base=base_dir, device=device, dtype=dtype, vae_tiling=vae_tiling)
    return ZeroShotSR(denoiser, project=project) if channels == 4 else denoiser


def _load_builtin(task: str, device: str | torch.device, *, project: bool = False) -> Denoiser:
    try:
        module = importlib.import_module("warpcore.models.builtin")
    except ModuleNotFoundError as exc:
        if exc.name != "warpcore.models.builtin":
            raise
        raise ModelNotFound(
            "model 'builtin': this installation has no built-in model (warpcore.models.builtin "
            "is missing); reinstall the package, or pass --model gaussian or a diffusers folder"
        ) from exc
    return module.load_builtin(task, device, project=project)


def _no_options(spec: str, options: dict[str, Any], accepted: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InvalidInput(
            f"model {spec!r}: unknown options {unknown}; accepted: {', '.join(accepted) or 'none'}"
        )
