"""``warpdiff train``: train the built-in model or fine-tune an SDXL UNet with GP noise.

Examples::

    warpdiff train --run-dir runs/builtin                 # the built-in model, both tasks
    warpdiff train --run-dir runs/builtin --resume        # continue where it stopped
    warpdiff train --export runs/builtin                  # ship its best EMA weights
    warpdiff train --run-dir runs/est --part estimator --task upscale \
        --init warpcore/assets/builtin                    # only the upscale estimator
    warpdiff train --model /path/sdxl --task inpaint --run-dir runs/sdxl --crop 1024
"""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from typing import Any

from warpcore.errors import InvalidInput
from warpcore.training.config import TrainConfig

# CLI flag -> config field, for the options that override a config file
OVERRIDES = (
    "run_dir",
    "model",
    "noise",
    "steps",
    "batch",
    "crop",
    "lr",
    "schedule",
    "warmup",
    "ema_decay",
    "weight_decay",
    "grad_clip",
    "checkpoint_every",
    "validate_every",
    "val_steps",
    "val_crops",
    "mean_fraction",
    "seed",
    "threads",
    "init",
    "bank_size",
    "layers_per_block",
    "prompt",
    "part",
    "estimator_width",
    "estimator_blocks",
)

NUMBERS = (
    ("steps", int, "optimiser steps in all (default 6000; sets the cosine schedule's length)"),
    ("batch", int, "crops per step (default 12)"),
    ("crop", int, "training crop side in pixels (default 64; SDXL: e.g. 1024)"),
    ("lr", float, "peak learning rate (default 1e-3 built-in, 5e-6 SDXL)"),
    ("warmup", int, "linear warm-up steps (default 200 built-in, 0 SDXL)"),
    ("ema-decay", float, "EMA decay, 0 = no EMA (default 0.999 built-in, 0 SDXL)"),
    ("weight-decay", float, "AdamW weight decay (default 0 built-in, 1e-2 SDXL)"),
    ("grad-clip", float, "gradient norm clip (default 1.0)"),
    ("checkpoint-every", int, "steps between checkpoints (default 250)"),
    ("validate-every", int, "steps between validations, 0 = never (default 500)"),
    ("val-steps", int, "SDXL: Heun steps of the validation sampling (default 12)"),
    ("val-crops", int, "held-out crops per task for validation (default 16)"),
    ("mean-fraction", float, "built-in: share of samples that train the one-call estimate (0.4)"),
    ("seed", int, "seed of the weights, data order and noise (default 0)"),
    ("threads", int, "torch CPU threads (default 1)"),
    ("bank-size", int, "GP noise fields precomputed for training (default 64)"),
    ("layers-per-block", int, "built-in UNet resnets per level (default 1)"),
    ("estimator-width", int, "built-in upscale estimator: channels (default 64)"),
    ("estimator-blocks", int, "built-in upscale estimator: residual blocks (default 8)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="a .toml or .json file of TrainConfig fields")
    parser.add_argument("--run-dir", dest="run_dir", help="output folder (default runs/builtin)")
    parser.add_argument("--model", help="'builtin' (default) or a diffusers SDXL folder")
    parser.add_argument("--task", choices=["inpaint", "upscale", "both"], help="default: both")
    parser.add_argument("--noise", choices=["gp", "white"], help="training noise (default gp)")
    for name, kind, text in NUMBERS:
        parser.add_argument(f"--{name}", dest=name.replace("-", "_"), type=kind, help=text)
    parser.add_argument("--schedule", choices=["cosine", "constant"])
    parser.add_argument("--channels", help="built-in UNet widths, e.g. 16,32,64,128")
    parser.add_argument(
        "--part",
        choices=["unet", "estimator"],
        help="built-in: train the UNet (default) or, with --init and --task upscale, only the "
        "upscale estimator beside it",
    )
    parser.add_argument("--init", help="start from these built-in weights (model.safetensors)")
    parser.add_argument("--prompt", help="SDXL: the text prompt used while fine-tuning")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    parser.add_argument("--export", metavar="RUN_DIR", help="export a run's weights and exit")
    parser.add_argument("--which", choices=["best", "last"], default="best", help="for --export")
    parser.add_argument("--to", help="export folder (default: the package's built-in assets)")
    parser.add_argument(
        "--evaluate",
        metavar="WEIGHTS",
        help="score built-in weights (a model.safetensors or its folder; 'shipped') and exit",
    )


def _config(args: argparse.Namespace) -> TrainConfig:
    data: dict[str, Any] = {}
    if args.resume:
        saved = Path(args.run_dir or "runs/builtin") / "config.json"
        if not saved.is_file():
            raise InvalidInput(f"--resume: {saved} not found; start the run without --resume")
        data = json.loads(saved.read_text())
    elif args.config:
        data = TrainConfig.from_file(args.config).to_dict()
    for name in OVERRIDES:
        value = getattr(args, name, None)
        if value is not None:
            data[name] = value
    if args.task:
        data["tasks"] = ["inpaint", "upscale"] if args.task == "both" else [args.task]
    if args.channels:
        try:
            data["block_out_channels"] = [int(c) for c in args.channels.split(",")]
        except ValueError as exc:
            raise InvalidInput(
                f"--channels: expected integers like 16,32,64, got {args.channels!r}"
            ) from exc
    return TrainConfig.from_dict(data)


def run(args: argparse.Namespace) -> int:
    if args.evaluate:
        from warpcore.training.evaluate import evaluate_weights

        weights = None if args.evaluate == "shipped" else args.evaluate
        print(json.dumps(evaluate_weights(weights), indent=1))
        return 0
    if args.export:
        from warpcore.training.export import export_run

        path = export_run(args.export, args.which, args.to)
        print(f"exported {args.which} weights of {args.export} to {path}")
        return 0
    from warpcore.training.loop import train

    cfg = _config(args)
    stop = {"flag": False}

    def _on_signal(signum: int, _frame: object) -> None:
        print(f"signal {signum}: saving a checkpoint after this step", flush=True)
        stop["flag"] = True

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        summary = train(
            cfg,
            resume=args.resume,
            should_stop=lambda: stop["flag"],
            log=lambda m: print(m, flush=True),
        )
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    print(json.dumps(summary))
    return 130 if stop["flag"] else 0
