"""``warpdiff bench noise``: median ms per frame of ``warper.next()`` for every noise scheme.

Grids 128x128x4 (SDXL latents at 1024^2) and 1024x1024x4, GP at J = 3000, under a smooth
rotation + zoom about the centre (1 degree and 1 % per frame) whose flows are exact.
Also times ``GPNoise.grid`` and ``GPNoise.at`` alone on 128x128x4 (``.at`` both as chosen
automatically, FINUFFT type 3 where installed, and by the exact sum).
"""

from __future__ import annotations

import math

import torch

from warpcore.bench.common import machine, median_ms
from warpcore.bench.schema import MACHINE, MapOf
from warpcore.noise import GPNoise, grid_coords, nufft_available
from warpcore.warps import SCHEMES, make_warper

SIZES = (128, 1024)


def rotation_zoom(size: int, degrees: float = 1.0, zoom: float = 1.01) -> tuple:
    """Exact (forward, backward) flows (2, size, size) of a rotation + zoom about the centre."""
    r = torch.arange(size, dtype=torch.float64)
    ys, xs = torch.meshgrid(r, r, indexing="ij")
    c = (size - 1) / 2.0

    def move(a: float, s: float) -> torch.Tensor:
        dx, dy = xs - c, ys - c
        x = c + s * (math.cos(a) * dx - math.sin(a) * dy)
        y = c + s * (math.sin(a) * dx + math.cos(a) * dy)
        return torch.stack((x - xs, y - ys)).float()

    a = math.radians(degrees)
    return move(a, zoom), move(-a, 1.0 / zoom)


SMOKE_SIZE = 32

# {"schemes": {name: {"ms_<size>": ms}}, "gp_noise": {...}, "machine": {...}}
SCHEMA = {
    "schemes": MapOf(MapOf(float)),
    "gp_noise": {
        "grid_ms_128": float,
        "at_ms_128": float,
        "at_exact_ms_128": float,
        "at_method": str,
    },
    "machine": MACHINE,
}


def run_benchmark(quick: bool = False, smoke: bool = False) -> dict:
    """Median ms per frame of every scheme at each grid size; ``smoke``: one tiny grid."""
    schemes: dict[str, dict[str, float]] = {name: {} for name in SCHEMES}
    quick = quick or smoke
    for size in (SMOKE_SIZE,) if smoke else SIZES:
        flows = rotation_zoom(size)
        slow = size >= 1024
        for name in SCHEMES:
            gp_heavy = name in ("gp", "gp-resample", "gp-nearest")
            repeats = 1 if quick or (slow and gp_heavy) else (3 if slow or gp_heavy else 15)
            warper = make_warper(name, 4, size, size, seed=0)
            warper.first()
            ms = median_ms(lambda w=warper, f=flows: w.next(*f), repeats, warmup=1)
            schemes[name][f"ms_{size}"] = round(ms, 2)
    field = GPNoise(channels=4, n_features=3000, res=128)
    coords = grid_coords(128, 128)
    reps = 1 if smoke else 3 if quick else 15
    gp = {
        "grid_ms_128": round(median_ms(lambda: field.grid(128, 128), reps), 2),
        "at_ms_128": round(median_ms(lambda: field.at(coords), reps), 2),
        "at_exact_ms_128": round(
            median_ms(lambda: field.at(coords, method="exact"), max(reps // 3, 1)), 2
        ),
        "at_method": "nufft" if nufft_available() else "exact",
    }
    return {"schemes": schemes, "gp_noise": gp, "machine": machine()}


def format_result(result: dict) -> str:
    """A small table for people."""
    sizes = next(iter(result["schemes"].values()))
    lines = [f"{'scheme':<12} " + " ".join(f"{k.removeprefix('ms_') + '^2 ms':>10}" for k in sizes)]
    for name, row in result["schemes"].items():
        lines.append(f"{name:<12} " + " ".join(f"{v:>10.2f}" for v in row.values()))
    gp = result["gp_noise"]
    lines.append(
        f"GPNoise.grid 128^2: {gp['grid_ms_128']:.2f} ms, .at: {gp['at_ms_128']:.2f} ms"
        f" ({gp['at_method']}; exact {gp['at_exact_ms_128']:.2f} ms)"
    )
    lines.append(f"machine: {result['machine']}")
    return "\n".join(lines)
