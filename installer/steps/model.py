"""The model: which weights the server loads (``--model``). Checked to exist locally; nothing is
downloaded. Recorded in the manifest's config and passed to the service's ``warpdiff serve``."""

from __future__ import annotations

import os
from pathlib import Path

from installer.context import Context, InstallError
from installer.paths import Platform

BUILTIN = ("builtin", "gaussian")  # shipped in the package
REQUIRED = ("unet", "vae", "text_encoder_2", "tokenizer_2", "scheduler")  # a diffusers SDXL folder


def hf_cache(platform: Platform) -> Path:
    env = platform.env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]) / "hub"
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else platform.home / ".cache"
    return base / "huggingface" / "hub"


def _missing(folder: Path) -> list[str]:
    return [name for name in REQUIRED if not (folder / name).is_dir()]


def locate(spec: str, platform: Platform) -> tuple[Path | None, str]:
    """(the weights folder or None for built-ins, a problem or ''), without importing anything."""
    if spec in BUILTIN:
        return None, ""
    path = Path(spec).expanduser()
    if path.is_dir():
        missing = _missing(path)
        if missing and (path / "unet").is_dir() and len(missing) < len(REQUIRED):
            return path, f"{path} lacks {', '.join(m + '/' for m in missing)}"
        if missing and not (path / "unet").is_dir():
            return path, f"{path} is not a diffusers folder (no unet/, vae/, ...)"
        return path, ""
    if path.exists():
        return path, f"{path} is a file; give a diffusers folder (unet/, vae/, text_encoder_2/...)"
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and os.sep not in spec[:1]:
        org, name = spec.split("/")
        snapshots = hf_cache(platform) / f"models--{org}--{name}" / "snapshots"
        found = sorted(p for p in snapshots.glob("*") if p.is_dir()) if snapshots.is_dir() else []
        for snap in found:
            if not _missing(snap):
                return snap, ""
        return None, (
            f"{spec!r} is not in the local Hugging Face cache ({hf_cache(platform)}); nothing is "
            f"downloaded: run `huggingface-cli download {spec}` or pass a folder"
        )
    return None, f"{spec!r}: no such folder; accepted: builtin, a diffusers folder or a hub id"


def plan(ctx: Context) -> str:
    return f"the server's model: {ctx.options.model}"


def apply(ctx: Context) -> str:
    folder, problem = locate(ctx.options.model, ctx.platform)
    if problem:
        raise InstallError(f"--model: {problem}")
    ctx.manifest.config["model"] = ctx.options.model
    return f"model {ctx.options.model}" + (f" ({folder})" if folder else " (in the package)")
