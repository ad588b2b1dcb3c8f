"""``warpdiff metrics OUTPUT --input INPUT``: score any video, made by anything, the same way.

Prints one JSON object with ``--json`` (means and per-frame lists), else a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from warpcore.flow import FLOW_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="the video to score: a video file, frame folder or image")
    parser.add_argument("--input", required=True, help="the input video its flows come from")
    parser.add_argument("--reference", help="ground truth for PSNR / SSIM / MSE")
    parser.add_argument(
        "--mask", help="inpainting mask (video, folder, one image, or 'alpha'): PSNR/SSIM/MSE "
        "inside it, and input flows filled there from the surroundings"
    )  # fmt: skip
    parser.add_argument("--flow", default="dis", choices=FLOW_METHODS, help="flow method")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from warpcore.metrics import ClipScorer, score_clip
    from warpcore.video import open_frames, open_masks

    output, inp = open_frames(args.output), open_frames(args.input)
    _same_length("input", inp, output)
    reference = open_frames(args.reference) if args.reference else None
    if reference is not None:
        _same_length("reference", reference, output)
    masks = open_masks(args.mask, inp if args.mask == "alpha" else output) if args.mask else None
    result = score_clip(
        output.rgb(),
        inp.rgb(),
        reference.rgb() if reference is not None else None,
        masks,
        scorer=ClipScorer(flow=args.flow),
        n_frames=len(output),
    )
    result = {
        "output": str(args.output),
        "input": str(args.input),
        "reference": args.reference,
        "mask": args.mask,
        **result,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_table(result))
    return 0


def _same_length(name: str, clip: Any, output: Any) -> None:
    from warpcore.errors import InvalidInput

    if len(clip) != len(output):
        raise InvalidInput(
            f"{name}: {clip.path} has {len(clip)} frames but the output {output.path} has "
            f"{len(output)}; expected the same number"
        )


# What each number measures, where, in what unit, and which way is better (the table's legend).
LEGEND: dict[str, str] = {
    "warp_pixel_prev": "flicker: output frame vs the previous output frame moved by the input's "
    "flow; whole frame (moving pixels in view); squared error of [0,1] values; lower is better",
    "warp_pixel_first": "drift: output frame vs the first output frame moved by the composed "
    "flows; whole frame; squared error of [0,1] values; lower is better",
    "warp_latent_prev": "as warp_pixel_prev on the model grid ({latent}, 1/{factor} of the "
    "size), where diffusion noise shows; squared error; lower is better",
    "warp_latent_first": "as warp_pixel_first on the model grid ({latent}, 1/{factor} of the "
    "size); squared error; lower is better",
    "e_warp": "E_warp (Lai et al. 2018): previous frame vs the next one warped back, "
    "unoccluded pixels only; squared error of [0,1] values (Lai's is 3x); lower is better",
    "mse": "vs --reference, inside --mask (else whole frame); squared error of [0,1] values; "
    "lower is better",
    "psnr": "vs --reference, inside --mask (else whole frame); dB, capped at 100; higher is better",
    "ssim": "vs --reference, inside --mask (else whole frame); structural similarity in "
    "[-1, 1]; higher is better",
}


def format_table(result: dict[str, Any]) -> str:
    """A human-readable table (metric, mean, min, max over frames) and its legend."""
    lines = [
        f"{result['output']}: {result['frames']} frames, flow {result['flow']}",
        f"{'metric':<20}{'mean':>12}{'min':>12}{'max':>12}",
    ]
    shown = []
    for key, mean in result["mean"].items():
        values = [v for v in result["per_frame"][key] if v is not None]
        if not values:
            continue
        shown.append(key)
        lines.append(f"{key:<20}{mean:>12.6g}{min(values):>12.6g}{max(values):>12.6g}")
    lines += ["", "what the numbers measure (per frame pair; mean/min/max over the clip):"]
    for key in shown:
        text = LEGEND.get(key, "see warpcore/metrics.py")
        text = text.format(latent=result["latent"], factor=result["latent_factor"])
        lines.append(f"  {key}: {text}")
    if result["latent"] == "latent_proxy" and any(k.startswith("warp_latent") for k in shown):
        factor = result["latent_factor"]
        lines.append(
            f"  latent_proxy: no VAE was given, so {factor}x{factor} block averages of RGB "
            "stand in for the model's encoder"
        )
    return "\n".join(lines)
