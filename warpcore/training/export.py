"""Export a run's weights (best or last EMA) as a shippable model folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import load_file

from warpcore.errors import InvalidInput
from warpcore.models.builtin import ASSET_DIR
from warpcore.training.config import TrainConfig


def export_run(run_dir: str | Path, which: str = "best", to: str | Path | None = None) -> Path:
    """Copy ``best/`` or the last checkpoint's EMA (else raw) weights to ``to``.

    Default destination: the package's built-in assets for the built-in model (what ships),
    ``RUN_DIR/export`` (a diffusers ``unet/`` folder) for an SDXL fine-tune.
    """
    from warpcore.training.loop import latest_checkpoint, make_backend

    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise InvalidInput(f"--export: {run} is not a training run (no config.json)")
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    dest = Path(to) if to else ASSET_DIR
    if (
        which == "best"
        and (run / "best" / "model.safetensors").is_file()
        and cfg.model == "builtin"
    ):
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "config.json", "metrics.json"):
            if (run / "best" / name).is_file():
                shutil.copyfile(run / "best" / name, dest / name)
        return dest / "model.safetensors"
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise InvalidInput(f"--export: {run} has no checkpoints yet")
    ema = ckpt / "ema.safetensors"
    state = load_file(str(ema if ema.is_file() else ckpt / "model.safetensors"))
    cfg.bank_size = 1  # the exporter needs the model, not the noise bank
    backend = make_backend(cfg)
    return backend.export(dest, state)
