"""``warpdiff bench sampler``: seconds per sampler step with and without equivariance guidance.

For the tiny SDXL inpainting model (the real diffusers classes, random weights) at a 64x64 latent
(512x512 frames) and for the built-in model at its demo size, on a real photograph panning by
whole latent cells (flows exact). Every guidance variant runs on the same clip and seed:

- ``unguided``: GP warping alone (lambda = 0);
- ``paper``: the paper's normalised (DPS) step, lambda = 1, gradient through the network, every
  step;
- ``paper_late``: the same on the second half of the steps only (where it matters: guiding only
  the first half was measured worse than no guidance);
- ``output``: the paper's step with an identity-Jacobian gradient (no backward pass; the product
  default before the band step);
- ``newton``: Gauss-Newton steps, lambda = 0.5, gradient through the network;
- ``newton_output``: the same with the identity-Jacobian gradient;
- ``blend``: docs/guidance.md, lambda 0.5, no backward pass;
- ``band``: upscaling's default: blend compared through the warp's blur
  (docs/guidance.md), lambda 0.8;
- ``unguided_est``, ``band_est``: the same two with the restorer's own flows instead of the
  exact ones (DIS, and the camera's motion where it fits: warpcore/camera.py), and
  ``band_est_dis``: band with DIS's flows alone (``camera_motion`` off).

Seconds per frame: for each frame >= 1 (frame 0 is never guided) the time from the previous
frame's last progress event to its own (everything the frame costs: flows, noise, the start,
every step and its guidance), then the median over those frames; ``s_per_step`` is that over
the steps a frame runs, and ``ratio`` compares frames, what a user waits for (a step at
sigma_min calls no network, so steps are not all alike: warpcore.sampler).

``warp_err`` is the pixel self-warping error w.r.t. the previous frame (warpcore.metrics, DIS
flow on the inputs), averaged over the clip: its floor is the inputs' own score (2.6e-6 at 512
px, 4.3e-6 at 128 px). ``warp_err_exact`` is the same against the exact whole-pixel shift (each
output against the previous one moved by ``shift`` pixels, no interpolation), which has no
floor. Propagation is off: it copies hole pixels along its own DIS plate flows before the
sampler runs, and on this clip its flicker (2e-5 with the built-in model, against 9e-9 without
it) hid the step's effect.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skimage import data, transform

from warpcore.bench.common import machine
from warpcore.bench.schema import MACHINE, AnyOf, MapOf
from warpcore.errors import ModelNotFound
from warpcore.metrics import ClipScorer
from warpcore.progress import Event
from warpcore.request import RestoreRequest
from warpcore.restore import restore_clip

VARIANTS: dict[str, dict] = {
    "unguided": {"guidance": 0.0},
    "paper": {"guidance": 1.0, "guidance_rule": "dps", "guidance_grad": "network"},
    "paper_late": {
        "guidance": 1.0,
        "guidance_rule": "dps",
        "guidance_grad": "network",
        "guidance_range": (0.5, 1.0),
    },
    "output": {"guidance": 1.0, "guidance_rule": "dps", "guidance_grad": "output"},
    "newton": {"guidance": 0.5, "guidance_rule": "newton", "guidance_grad": "network"},
    "newton_output": {"guidance": 0.5, "guidance_rule": "newton", "guidance_grad": "output"},
    "blend": {"guidance": 0.5, "guidance_rule": "blend"},
    "band": {"guidance": 0.8, "guidance_rule": "band"},
    "unguided_est": {"guidance": 0.0, "own_flows": True},
    "band_est": {"guidance": 0.8, "guidance_rule": "band", "own_flows": True},
    "band_est_dis": {
        "guidance": 0.8,
        "guidance_rule": "band",
        "own_flows": True,
        "camera_motion": False,
    },
}
CHEAP_GUIDED = "band"  # upscaling's default (docs/guidance.md): no backward pass


def _clip(n: int, size: int, shift: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A photograph panning right by ``shift`` pixels a frame, and a moving box matte."""
    photo = transform.resize(data.astronaut(), (size + n * shift, size + n * shift))
    frames, masks = [], []
    for j in range(n):
        x0 = n * shift - j * shift
        frames.append(photo[:size, x0 : x0 + size].astype(np.float32))
        m = np.zeros((size, size), np.float32)
        m[size // 4 : size // 2, size // 3 : size // 3 + size // 4] = 1.0
        masks.append(np.roll(m, j * shift, axis=1))
    return frames, masks


def _exact_flow(shift: int):
    def flow_fn(_j: int, prev: torch.Tensor, cur: torch.Tensor) -> tuple[torch.Tensor, ...]:
        fwd = torch.zeros(2, *prev.shape[-2:])
        fwd[0] = shift
        return fwd, -fwd

    return flow_fn


def _run_variant(model, frames, masks, steps: int, shift: int, fields: dict) -> dict:
    fields = dict(fields)
    flow_fn = None if fields.pop("own_flows", False) else _exact_flow(shift)
    request = RestoreRequest(
        task="inpaint", model=model.name, noise="gp", steps=steps, propagate=0, **fields
    )
    stamps: list[tuple[int, int, float]] = []

    def on_event(e: Event) -> None:
        if e.kind == "progress":
            stamps.append((e.frame, e.step, time.perf_counter()))

    scorer = ClipScorer(flow="dis")
    clip = restore_clip(request, model, frames, masks, on_event=on_event, flow_fn=flow_fn)
    outs = []
    for (_, out), inp, m in zip(clip, frames, masks, strict=False):
        scorer.add(out, inp, mask=m)
        outs.append(out)
    pairs = zip(outs, outs[1:], strict=False)  # frame j at x + shift shows frame j-1 at x
    exact = [float(((b[:, shift:] - a[:, :-shift]) ** 2).mean()) for a, b in pairs]
    last = {f: t for f, _, t in stamps}  # each frame's last progress event
    steps_run = {f: k + 1 for f, k, _ in stamps}
    per_frame = {f: last[f] - last[f - 1] for f in sorted(last) if f - 1 in last}
    per_step = [t / steps_run[f] for f, t in per_frame.items()]
    summary = scorer.summary()
    return {
        "s_per_frame": round(statistics.median(per_frame.values()), 6),
        "s_per_step": round(statistics.median(per_step), 6),
        "warp_err": summary["mean"]["warp_pixel_prev"],
        "warp_err_exact": statistics.fmean(exact) if exact else None,
    }


def _bench_model(model, frames, masks, steps: int, shift: int, names: tuple[str, ...]) -> dict:
    variants = {
        name: _run_variant(model, frames, masks, steps, shift, VARIANTS[name]) for name in names
    }
    base = variants["unguided"]["s_per_frame"]
    for v in variants.values():
        v["ratio"] = round(v["s_per_frame"] / max(base, 1e-9), 3)
    best = variants[CHEAP_GUIDED]
    return {
        "s_per_frame_unguided": base,
        "s_per_frame_guided": best["s_per_frame"],
        "ratio": best["ratio"],
        "warp_err_unguided": variants["unguided"]["warp_err"],
        "warp_err_guided": best["warp_err"],
        "guided_variant": CHEAP_GUIDED,
        "variants": variants,
    }


def _tiny_sdxl(folder: Path):
    """The tiny SDXL without VAE tiling: its VAE tiles above 128 px (so the tests reach the
    tiled path), and tiles sit at fixed frame positions while the content moves, so a tiled
    decode is not shift-equivariant: with it every guided rule stopped at 1.0e-5 (4.4x below
    unguided; band reaches 5e-8 without it). SDXL's own VAE tiles above 1024 px, so at this
    512 px size the real model decodes whole frames as this one now does."""
    from warpcore.models import load_denoiser
    from warpcore.models.sdxl_tiny import make_tiny_sdxl

    folder = make_tiny_sdxl(folder / "tiny_sdxl_inpaint", 9)
    return load_denoiser(str(folder), "inpaint", vae_tiling=False)


_VARIANT = {
    "s_per_frame": float,
    "s_per_step": float,
    "warp_err": (float, None),
    "warp_err_exact": (float, None),
    "ratio": float,
}
_MODEL = {
    "s_per_frame_unguided": float,
    "s_per_frame_guided": float,
    "ratio": float,
    "warp_err_unguided": (float, None),
    "warp_err_guided": (float, None),
    "guided_variant": str,
    "variants": MapOf(_VARIANT),  # every name of VARIANTS; --smoke: unguided and output
}
# {"models": {"<model>-<latent or frame size>": {...} or {"skipped": why}}, ...}
SCHEMA = {
    "models": MapOf(AnyOf((_MODEL, {"skipped": str}))),
    "steps": int,
    "frames": int,
    "machine": MACHINE,
}


def run_benchmark(quick: bool = False, smoke: bool = False) -> dict:
    """{"models": {name: {...}}, "machine": {...}}; quick: fewer frames and steps; smoke: the
    smallest sizes (a 16x16 latent, 64x64 built-in frames), 2 frames of 3 steps, and only the
    unguided and the default guided variants."""
    n, steps = (2, 3) if smoke else (3, 3) if quick else (4, 8)
    names = ("unguided", CHEAP_GUIDED) if smoke else tuple(VARIANTS)
    sdxl_size, builtin_size = (128, 64) if smoke else (512, 128)
    models: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sdxl = _tiny_sdxl(Path(tmp))
        frames, masks = _clip(n, sdxl_size, shift=8)  # one latent cell a frame
        models[f"tiny-sdxl-{sdxl_size // 8}"] = _bench_model(sdxl, frames, masks, steps, 8, names)
    try:
        from warpcore.models.builtin import load_builtin

        builtin = load_builtin("inpaint")
    except (ModelNotFound, FileNotFoundError) as exc:
        models["builtin"] = {"skipped": str(exc)}
    else:
        frames, masks = _clip(n, builtin_size, shift=2)
        models[f"builtin-{builtin_size}"] = _bench_model(builtin, frames, masks, steps, 2, names)
    return {"models": models, "steps": steps, "frames": n, "machine": machine()}


def _g(value: float | None) -> str:
    return f"{'-':>10}" if value is None else f"{value:>10.3g}"


def format_result(result: dict) -> str:
    head = (
        f"{'model':<14} {'variant':<13} {'s/frame':>8} {'s/step':>8} {'ratio':>6} {'warp err':>10}"
    )
    lines = [f"{head} {'exact':>10}"]
    for name, m in result["models"].items():
        if "skipped" in m:
            lines.append(f"{name:<14} skipped: {m['skipped']}")
            continue
        for v, row in m["variants"].items():
            lines.append(
                f"{name:<14} {v:<13} {row['s_per_frame']:>8.4f} {row['s_per_step']:>8.4f} "
                f"{row['ratio']:>6.2f} "
                f"{_g(row['warp_err'])} {_g(row['warp_err_exact'])}"
            )
    return "\n".join(lines)
