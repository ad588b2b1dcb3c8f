"""``warpdiff bench memory --json``: the estimated against the measured peak memory of requests.

CPU (default): the built-in model, 2 frames per case (frame 1 is the steady state: guidance
holds frame 0's estimates), the request's defaults otherwise: inpainting 1080p and 4K (a 120 px
hole moving 4 px a frame, crop and propagation on) and super-resolution x2 and x4 of a 480x270
clip (x4: 1080p, 6 tiles of 1024 px). Each case runs in a fresh Python process; **measured** =
the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` after the
imports and a tiny warm-up run) minus its resident set at that moment, so it counts everything
the request allocates (weights, tensors, numpy frames, OpenCV's buffers) on the device that
holds it all. **estimate** = :func:`warpcore.memory.estimate`
made in the same process after the run; **error** = estimate / measured - 1.

``--model sdxl-random --device cpu`` (opt-in: minutes per case and up to 14 GB; not in CI):
single calls of full-size SDXL's UNet (random weights, float32, 2 threads), forward at 512,
768 and 1024 px tiles and forward + backward at 256, 384 and 512 px, and the VAE's decode at
512 and 1024 px, each in a fresh process, measured by the RSS high-water mark as above against
:meth:`warpcore.memory.ModelCost.call` (the traced, calibrated per-call model the planner
uses; for the VAE ``vae_peak``) and the raw trace.

``--device cuda``: SDXL with random weights and its real configuration
(:mod:`warpcore.models.sdxl_random`, fp16, nothing downloaded): measured =
``torch.cuda.max_memory_allocated`` of each run (the weights included), and seconds per frame
(frame 1 of 2) unguided and guided at 1024x1024 and 1920x1080, plus 4x of a 1080p frame
(7680x4320) tiled as planned for a 24 GiB budget.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np

from warpcore.bench.common import machine
from warpcore.bench.schema import MEMORY_SCHEMA

SCHEMA = MEMORY_SCHEMA
METHOD = (
    "peak RSS (VmHWM reset by /proc/self/clear_refs) minus RSS at the reset, in a fresh "
    "process per case; the estimate made in that process"
)
CPU_CASES = {
    "inpaint-1080p": {"task": "inpaint", "size": [1080, 1920], "hole": 120},
    "inpaint-4k": {"task": "inpaint", "size": [2160, 3840], "hole": 120},
    "upscale-x2-480x270": {"task": "upscale", "size": [270, 480], "scale": 2},
    "upscale-x4-480x270": {"task": "upscale", "size": [270, 480], "scale": 4},
}
SMOKE_CASES = {
    "inpaint-smoke": {"task": "inpaint", "size": [72, 96], "hole": 16},
    "upscale-smoke": {"task": "upscale", "size": [32, 48], "scale": 2},
}
FRAMES = 2


def run_benchmark(
    quick: bool = False, smoke: bool = False, device: str = "cpu", model: str | None = None
) -> dict:
    """``model``: None / "builtin" (CPU requests) or "sdxl-random" (CUDA requests; on the CPU
    single UNet calls, :func:`unet_call_cases`)."""
    from warpcore.errors import InvalidInput

    if model not in (None, "builtin", "sdxl-random"):
        raise InvalidInput(f"--model: bench memory takes builtin or sdxl-random, got {model!r}")
    if model == "builtin" and device != "cpu":
        raise InvalidInput(f"--model builtin: bench memory runs it on the cpu, not {device!r}")
    if model == "sdxl-random" and device == "cpu":
        return {"device": "cpu", "method": UNET_METHOD, "machine": machine(),
                "cases": unet_call_cases(quick=quick, smoke=smoke)}  # fmt: skip
    if device.startswith("cuda"):
        return {"device": device, "method": "torch.cuda.max_memory_allocated per run",
                "machine": machine(), "cases": sdxl_cases(device, smoke=smoke)}  # fmt: skip
    if device != "cpu":
        raise InvalidInput(f"--device: bench memory runs on cpu or cuda, got {device!r}")
    cases = SMOKE_CASES if smoke else CPU_CASES
    if quick:
        cases = {k: v for k, v in cases.items() if "4k" not in k and "x4" not in k}
    out = {}
    for name, case in cases.items():
        out[name] = _in_fresh_process(case)
        print(f"bench memory: {name}: {json.dumps(out[name])}", file=sys.stderr, flush=True)
    return {"device": "cpu", "method": METHOD, "machine": machine(), "cases": out}


def _in_fresh_process(case: dict) -> dict:
    cmd = [sys.executable, "-m", "warpcore.bench.memory", json.dumps(case)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench memory case {case} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- one CPU case, in its own process -------------------------------------------------------------
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _clip(case: dict) -> tuple[Any, Any]:
    """Lazy frames of a panning photograph (and moving square holes): made while measured."""
    import cv2
    from skimage import data

    h, w = case["size"]
    big = cv2.resize(data.astronaut().astype(np.float32) / 255.0, (w + 8 * FRAMES, h + 4 * FRAMES))

    def frames() -> Any:
        for j in range(FRAMES):
            yield np.ascontiguousarray(big[2 * j : 2 * j + h, 8 * j : 8 * j + w])

    def masks() -> Any:
        hole = case.get("hole", 0)
        for j in range(FRAMES):
            m = np.zeros((h, w), np.float32)
            y, x = int(h * 0.55) - hole // 2, int(w * 0.45) - hole // 2 + 4 * j
            m[y : y + hole, x : x + hole] = 1.0
            yield m

    return frames, masks


def measure_case(case: dict) -> dict:
    """Run one case and return its estimate and measured peak (call in a fresh process)."""

    from warpcore.crops import CropPlanner
    from warpcore.memory import estimate
    from warpcore.models import load_denoiser
    from warpcore.request import RestoreRequest
    from warpcore.restore import restore_clip

    task, (h, w) = case["task"], case["size"]
    request = RestoreRequest(task=task, scale=case.get("scale", 4), tile=case.get("tile"))
    frames, masks = _clip(case)
    window = None
    if task == "inpaint":  # the window the crop planner opens on the first mask
        win = CropPlanner((h, w)).update(next(iter(masks())))
        window = (win.h, win.w)
    # A tiny run of the same task first: the code it pages in and the kernels it sets up are
    # the process's, not the request's.
    warm = {**case, "size": [48, 64], "hole": 8}
    wf, wm = _clip(warm)
    for _ in restore_clip(
        request, load_denoiser("builtin", task), wf(), wm() if task == "inpaint" else None
    ):
        pass
    del wf, wm
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status("VmRSS:")
    denoiser = load_denoiser("builtin", task)
    t0 = time.perf_counter()
    out = restore_clip(request, denoiser, frames(), masks() if task == "inpaint" else None)
    for _index, _frame in out:
        pass
    seconds = time.perf_counter() - t0
    measured = _status("VmHWM:") - before
    e = estimate(request, denoiser, (h, w), n_frames=FRAMES, window=window)
    return _row(case, e, measured, seconds / FRAMES)


def _row(case: dict, e: Any, measured: int, seconds: float) -> dict:
    h, w = case["size"]
    scale = case.get("scale", 1)
    return {
        "task": case["task"],
        "frame": f"{w}x{h}",
        "output": f"{w * scale}x{h * scale}",
        "tile": e.tile,
        "tiles": e.tiles,
        "estimate_bytes": e.peak,
        "measured_bytes": int(measured),
        "error": e.peak / max(1, measured) - 1.0,
        "parts": {
            "weights": e.weights,
            "model_call": e.call + e.graph,
            "vae": e.vae,
            "frame_state": e.state + max(e.sampling, e.ending),
            "host": e.host if e.host_counts else 0,
        },
        "seconds_per_frame": seconds,
        "budget_bytes": None,
    }


# -- SDXL (random weights) ------------------------------------------------------------------------
def sdxl_cases(device: str, *, smoke: bool = False, size: str | None = None) -> dict:
    """Full-size SDXL on ``device`` (tiny classes and sizes with ``size="tiny"`` / smoke)."""
    import torch

    from warpcore.memory import estimate, plan
    from warpcore.models.sdxl_random import random_sdxl
    from warpcore.request import RestoreRequest
    from warpcore.restore import ClipRestorer

    size = size or ("tiny" if smoke else "full")
    sizes = [(64, 64)] if size == "tiny" else [(1024, 1024), (1080, 1920)]
    sr_in = (64, 96) if size == "tiny" else (1080, 1920)  # tiny: 2 tiles of 256 px
    steps = 1 if size == "tiny" else 25
    cuda = torch.device(device).type == "cuda"

    def run(den: Any, req: RestoreRequest, hw: tuple[int, int]) -> tuple[int, float]:
        frames, masks = _clip({"size": list(hw), "hole": hw[0] // 4})
        ms = list(masks()) if req.task == "inpaint" else [None] * FRAMES
        restorer = ClipRestorer(req, den, hw, FRAMES)
        gc.collect()
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before = _status("VmRSS:")
        seconds = 0.0
        for j, frame in enumerate(frames()):
            t0 = time.perf_counter()
            restorer.process(j, frame, ms[j])
            if cuda:
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0  # frame 1: the guided steady state
        if cuda:
            return int(torch.cuda.max_memory_allocated(device)), seconds
        from warpcore.memory import model_cost

        return _status("VmHWM:") - before + model_cost(den).weights, seconds

    cases: dict = {}
    inpaint = random_sdxl(9, device, size=size)
    for hw in sizes:
        for mode, guidance in (("unguided", 0.0), ("guided", 1.0)):
            req = RestoreRequest(
                task="inpaint", model="sdxl", steps=steps, guidance=guidance, crop=False,
                propagate=0, device=device,
            )  # fmt: skip
            measured, seconds = run(inpaint, req, hw)
            e = estimate(req, inpaint, hw, n_frames=FRAMES)
            cases[f"inpaint-{hw[1]}x{hw[0]}-{mode}"] = _row(
                {"task": "inpaint", "size": list(hw)}, e, measured, seconds
            )
    del inpaint
    gc.collect()
    upscale = random_sdxl(8, device, size=size)
    req = RestoreRequest(task="upscale", scale=4, model="sdxl", steps=min(steps, 10), strength=1.0,
                         device=device)  # fmt: skip
    # a 24 GiB card; the tiny model gets a budget that needs 64 px tiles, to take the same path
    sr_budget = 24 * 2**30
    if size == "tiny":  # (its VAE phase outweighs its UNet: name the tile, budget it exactly)
        req = dataclasses.replace(req, tile=256)
        sr_budget = estimate(req, upscale, sr_in, n_frames=FRAMES).peak + 1
    planned = plan(req, upscale, sr_in, sr_budget, source="24 GiB card", n_frames=FRAMES)
    measured, seconds = run(upscale, planned.request, sr_in)
    row = _row({"task": "upscale", "size": list(sr_in), "scale": 4}, planned.estimate, measured,
               seconds)  # fmt: skip
    row["budget_bytes"] = sr_budget
    cases["upscale-x4-tiled"] = row
    return cases


# -- one SDXL UNet call on the CPU (``--model sdxl-random --device cpu``) -------------------------
# (part, latent side, backward): the UNet forward at 64, 96 and 128 (one 1024 px tile) and
# forward + backward (network-grad guidance) at 32, 48 and 64, float32: the backward's graph at
# 96 would take the process past 16 GB (10.3 GB of weights + 5.8 GB traced), more than a shared
# 24 GB machine has; the VAE's decode at 64 and 128 (the planner's VAE phase).
UNET_CASES = [("unet", 64, False), ("unet", 96, False), ("unet", 128, False),
              ("unet", 32, True), ("unet", 48, True), ("unet", 64, True),
              ("vae-decode", 64, False), ("vae-decode", 128, False)]  # fmt: skip
UNET_QUICK = [("unet", 64, False), ("unet", 32, True)]
UNET_SMOKE = [("unet", 8, True)]  # the tiny UNet class
UNET_METHOD = (
    "one SDXL UNet call (batch 1, 9 input channels, 77 text tokens; + its backward to the "
    "input where grad) or VAE decode, random weights, in a fresh process per case: peak RSS "
    "(VmHWM reset by /proc/self/clear_refs after the weights and a warm-up call) minus RSS at "
    "the reset; the estimate = warpcore.memory.ModelCost(...).call (VAE: vae_peak), traced on "
    "meta in that process"
)


def unet_call_cases(
    *, quick: bool = False, smoke: bool = False, dtype: str = "float32", threads: int = 2
) -> dict:
    """``warpdiff bench memory --model sdxl-random --device cpu``: measured against estimated
    peak of single UNet calls, each in its own process (at most one full-size UNet at a time)."""
    cases = UNET_SMOKE if smoke else UNET_QUICK if quick else UNET_CASES
    out = {}
    for part, latent, grad in cases:
        case = {"kind": "unet-call", "part": part, "size": "tiny" if smoke else "full",
                "latent": latent, "grad": grad, "dtype": dtype, "threads": threads}  # fmt: skip
        what = "decode" if part != "unet" else "backward" if grad else "forward"
        name = f"{part.split('-')[0]}-{case['size']}-{latent * 8}px-{what}"
        out[name] = _in_fresh_process(case)
        print(f"bench memory: {name}: {json.dumps(out[name])}", file=sys.stderr, flush=True)
    return out


def measure_unet_call(case: dict) -> dict:
    """One SDXL UNet call on the CPU, measured, and the estimator's number for it (call in a
    fresh process: the RSS high-water mark is the process's)."""
    import torch

    from warpcore.memory import ModelCost, _sdxl_call
    from warpcore.models.sdxl_random import random_sdxl, random_unet, random_vae

    torch.set_num_threads(int(case.get("threads", 2)))
    dtype, side, grad = getattr(torch, case["dtype"]), int(case["latent"]) * 8, bool(case["grad"])
    size, part = case.get("size", "full"), case.get("part", "unet")
    if part == "vae-decode":  # the decode of an SDXL frame (no tiling up to 1024 px)
        net = random_vae("cpu", dtype, size=size)
        grad = False

        def call(px: int) -> None:
            with torch.no_grad():
                z = torch.randn(1, 4, px // 8, px // 8, dtype=dtype)
                net.decode(z, return_dict=False)[0].float()
    else:
        net = random_unet(9, "cpu", dtype, size=size)

        def call(px: int) -> None:
            x, out = _sdxl_call(net, px, px, grad, 1)()
            if grad:  # the guidance's backward pass through the network, to the input
                torch.autograd.grad(out.sum(), x)

    call(64)  # warm-up: the code and kernels a first call sets up are the process's
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status("VmRSS:")
    t0 = time.perf_counter()
    call(side)
    seconds = time.perf_counter() - t0
    measured = _status("VmHWM:") - before
    weights = sum(t.numel() * t.element_size() for t in net.parameters())
    cost = ModelCost(random_sdxl(9, "meta", dtype, size=size), device="cpu")
    if part == "vae-decode":  # the planner's VAE phase: the larger of encode and decode
        estimate = cost.vae_peak(side, side)
        traced = cost._calls[side, side, "vae"][0]  # before the device's calibration
    else:
        estimate = cost.call(side, side, grad=grad)[0]
        traced = cost._trace(side, side, grad, False)[0]
    return {
        "model": f"sdxl-random-{size}",
        "part": part,
        "device": "cpu",
        "dtype": case["dtype"],
        "tile": f"{side}x{side}",
        "backward": grad,
        "threads": torch.get_num_threads(),
        "weights_bytes": weights,
        "traced_bytes": traced,
        "estimate_bytes": estimate,
        "measured_bytes": int(measured),
        "error": estimate / max(1, measured) - 1.0,
        "seconds": seconds,
    }


if __name__ == "__main__":
    _case = json.loads(sys.argv[1])
    _fn = measure_unet_call if _case.get("kind") == "unet-call" else measure_case
    print(json.dumps(_fn(_case)))
