"""Find and load an SDXL diffusers folder (or a hub id already in the local HF cache).

A folder holds ``unet/ vae/ text_encoder_2/ tokenizer_2/ scheduler/`` (and usually
``text_encoder/ tokenizer/`` and ``model_index.json``), safetensors weights only: the standard
diffusers layout that ``save_pretrained`` and ``huggingface-cli download`` produce. fp16-variant
weights (``*.fp16.safetensors``) are used when they are the only ones present. Nothing is ever
downloaded: hub ids resolve with ``local_files_only=True``.

A fine-tune exported as a lone ``unet/`` folder loads with ``base=`` naming the full model that
provides the VAE, text encoders, tokenizers and scheduler.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from warpcore.errors import InvalidInput, ModelNotFound
from warpcore.models.sdxl import SDXLDenoiser

REQUIRED = ("unet", "vae", "text_encoder_2", "tokenizer_2", "scheduler")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
SUGGESTED = {
    "inpaint": ("SDXL inpainting", "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"),
    "upscale": ("SDXL super-resolution", "stabilityai/stable-diffusion-xl-base-1.0"),
}


def how_to_get(task: str) -> str:
    """The sentence every ModelNotFound ends with: what to download and how to point at it."""
    what, repo = SUGGESTED.get(task, SUGGESTED["inpaint"])
    extra = (
        " (or pass the folder of a GP super-resolution fine-tune, UNet in_channels=8; a "
        "4-channel base model runs zero-shot with strength < 1)"
        if task == "upscale"
        else ""
    )
    return (
        f"download {repo} with `huggingface-cli download {repo} --local-dir PATH` on a machine "
        f"with internet and pass --model PATH{extra}"
    )


def resolve_model_dir(spec: str, task: str, required: tuple[str, ...] = REQUIRED) -> Path:
    """A diffusers folder for ``spec``: an existing folder, or a hub id in the local HF cache."""
    what = SUGGESTED.get(task, SUGGESTED["inpaint"])[0]
    path = Path(spec).expanduser()
    if path.is_file():
        raise InvalidInput(
            f"model: {spec} is a single file; single-file checkpoints are not supported, pass a "
            "diffusers folder (unet/, vae/, text_encoder_2/, ...) instead"
        )
    if path.is_dir():
        check_folder(path, task, required)
        return path
    if HUB_ID.fullmatch(spec):
        cached = _from_hf_cache(spec)
        if cached is not None:
            check_folder(cached, task, required)
            return cached
        raise ModelNotFound(
            f"{what} weights not found: {spec!r} is neither a folder ({path.resolve()}) nor in the "
            f"local Hugging Face cache (downloads are off); {how_to_get(task)}"
        )
    raise ModelNotFound(f"{what} weights not found at {path.resolve()}; {how_to_get(task)}")


def check_folder(path: Path, task: str, required: tuple[str, ...] = REQUIRED) -> None:
    missing = [name for name in required if not (path / name).is_dir()]
    if missing:
        what = SUGGESTED.get(task, SUGGESTED["inpaint"])[0]
        raise ModelNotFound(
            f"{what} weights incomplete at {path}: missing {', '.join(m + '/' for m in missing)} "
            f"(a diffusers folder needs {', '.join(r + '/' for r in REQUIRED)}; a lone unet/ "
            f"fine-tune needs the base= option); {how_to_get(task)}"
        )


def unet_in_channels(path: Path) -> int:
    """The UNet's input channels from its config, without loading weights."""
    return int(_read_json(path / "unet" / "config.json").get("in_channels", 4))


def load_sdxl(
    path: Path,
    *,
    base: Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    vae_tiling: bool = True,
) -> SDXLDenoiser:
    """Load a checked diffusers folder into an :class:`SDXLDenoiser`.

    With ``base``, only the UNet comes from ``path``; everything else from ``base``.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    parts = base or path
    index_file = parts / "model_index.json"
    index = _read_json(index_file) if index_file.is_file() else {}
    encoders, tokenizers = [], []
    if (parts / "text_encoder").is_dir() and (parts / "tokenizer").is_dir():
        encoders.append(_load(CLIPTextModel, parts, "text_encoder"))
        tokenizers.append(CLIPTokenizer.from_pretrained(parts / "tokenizer"))
    encoders.append(_load(CLIPTextModelWithProjection, parts, "text_encoder_2"))
    tokenizers.append(CLIPTokenizer.from_pretrained(parts / "tokenizer_2"))
    return SDXLDenoiser(
        unet=_load(UNet2DConditionModel, path, "unet"),
        vae=_load(AutoencoderKL, parts, "vae"),
        text_encoders=encoders,
        tokenizers=tokenizers,
        scheduler_config=_read_json(parts / "scheduler" / "scheduler_config.json"),
        name=f"sdxl:{path.name}",
        device=device,
        dtype=dtype,
        force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)),
        vae_tiling=vae_tiling,
    )


def _load(cls: Any, path: Path, sub: str) -> Any:
    folder = path / sub
    names = [f.name for f in folder.glob("*.safetensors")]
    if not names:
        found = sorted(f.name for f in folder.iterdir() if f.is_file())
        raise ModelNotFound(
            f"no safetensors weights in {folder} (found: {', '.join(found) or 'nothing'}); pickled "
            "checkpoints are not loaded: download the safetensors files of the model"
        )
    plain = any(".fp16" not in n for n in names)
    return cls.from_pretrained(folder, use_safetensors=True, variant=None if plain else "fp16")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelNotFound(f"missing {path}: the model folder is incomplete")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}: expected a JSON config, could not read it ({exc})") from exc


def _from_hf_cache(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a malformed id: not found
        return None
