"""``warpdiff eval``: run every noise scheme (with and without guidance) and the classical
baselines over evaluation suites; write report.json, report.md and PNG plots.

Default suites and sizes are chosen so that the built-in model runs them all on a 2-core CPU in
under 15 minutes; ``--clips``, ``--frames``, ``--size`` and ``--steps`` scale them up.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from warpcore.commands.job import add_guidance_overrides, add_run_options
from warpcore.request import FLOW_METHODS

DEFAULT_SUITES = ("shift-inpaint", "motion-inpaint", "motion-sr", "demo")
# Per-suite defaults (clips, frames, output size): the 15-minute budget on a 2-core CPU.
SUITE_DEFAULTS: dict[str, tuple[int, int, tuple[int, int]]] = {
    "shift-inpaint": (2, 8, (64, 64)),
    "motion-inpaint": (2, 8, (64, 64)),
    "motion-sr": (2, 8, (64, 64)),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite", action="append", default=None,
        help=f"suite to run (repeat for several); default: {', '.join(DEFAULT_SUITES)}",
    )  # fmt: skip
    parser.add_argument(
        "--videos", default=None, metavar="DIR",
        help="your own footage: a folder of clips (CLIP_mask.* beside a clip to inpaint it; "
        "clips without a mask are downscaled and super-resolved back)",
    )  # fmt: skip
    parser.add_argument(
        "--model", default="builtin",
        help="builtin (default), gaussian, an SDXL folder, or a built-in checkpoint folder",
    )  # fmt: skip
    parser.add_argument("--out", "-o", required=True, help="folder for the report")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--steps", type=int, default=10, help="sampler steps (default 10)")
    parser.add_argument("--clips", type=int, default=None, help="clips per suite")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument(
        "--methods", nargs="+", default=["default"],
        help="method names, 'default' or 'all' (adds gp-fixed, gp-resample, gp-nearest)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    add_guidance_overrides(parser)
    parser.add_argument("--flow", default="dis", choices=FLOW_METHODS, help="restorer flow")
    parser.add_argument(
        "--oracle-flow", action="store_true", help="give the restorer the suites' exact flows"
    )
    parser.add_argument(
        "--metric-flow", default="exact", choices=("exact", "estimated"),
        help="flows the metrics warp with where a suite knows them (default exact)",
    )  # fmt: skip
    parser.add_argument("--scale", type=int, default=4, choices=(2, 4, 8), help="--videos SR")
    add_run_options(parser)


def build_clips(args: argparse.Namespace) -> list[Any]:
    """The clips of every asked suite (validated before any compute)."""
    from warpcore.suites import DemoConfig, SuiteConfig, demo_clips, suite_clips, video_suite

    if args.videos:
        return video_suite(args.videos, scale=args.scale, max_frames=args.frames)
    clips = []
    for name in args.suite or DEFAULT_SUITES:
        if name == "demo":
            size = tuple(args.size) if args.size else DemoConfig.size
            frames = args.frames or DemoConfig.frames
            clips += demo_clips(DemoConfig(size=size, frames=frames, seed=args.seed))
            continue
        clips_n, frames, size = SUITE_DEFAULTS.get(name, (2, 8, (64, 64)))
        config = SuiteConfig(
            clips=args.clips or clips_n,
            frames=args.frames or frames,
            size=tuple(args.size) if args.size else size,
            seed=args.seed,
        )
        clips += suite_clips(name, config)
    return clips


def run(args: argparse.Namespace) -> int:
    from warpcore.commands.job import _ctrl_c_sets
    from warpcore.evaluate import EvalConfig, choose_threads, evaluate
    from warpcore.report import write_report

    config = EvalConfig(
        model=args.model, steps=args.steps, seed=args.seed, methods=tuple(args.methods),
        flow=args.flow, oracle_flow=args.oracle_flow, metric_flow=args.metric_flow,
        guidance=args.guidance, guidance_rule=args.guidance_rule, strength=args.strength,
        device=args.device,
    )  # fmt: skip
    clips = build_clips(args)
    threads = choose_threads(args.threads)
    stop = threading.Event()
    bar = StepBar(quiet=args.quiet)
    with _ctrl_c_sets(stop):
        try:
            result = evaluate(clips, config, on_event=bar.update, should_stop=stop.is_set)
        finally:
            bar.close()
    result["threads"] = threads
    paths = write_report(result, args.out, title="Warped Diffusion evaluation")
    if args.json:
        json.dump(summary(result), sys.stdout, indent=1)
        sys.stdout.write("\n")
    print(
        f"report: {paths['markdown']} (JSON {paths['json']}, plots in {args.out})", file=sys.stderr
    )
    return 130 if result["partial"] else 0


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The report without per-frame lists: config, timing and each group's means and checks."""
    groups = []
    for g in result["groups"]:
        methods = {
            n: {"mean": s["mean"], "std": s["std"], "seconds_per_frame": s["seconds_per_frame"]}
            for n, s in g["methods"].items()
        }
        truth = g["truth"]["mean"] if g.get("truth") else None
        groups.append({
            "suite": g["suite"], "task": g["task"], "scale": g["scale"], "clips": g["clips"],
            "methods": methods, "truth": truth, "checks": g.get("checks", []),
        })  # fmt: skip
    return {
        "config": result["config"], "partial": result["partial"],
        "wall_seconds": result["wall_seconds"], "groups": groups,
    }  # fmt: skip


class StepBar:
    """A tqdm bar over the evaluation's model steps, fed by ``Event("progress")``."""

    def __init__(self, quiet: bool = False) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=0, unit="step", disable=quiet, file=sys.stderr, dynamic_ncols=True)

    def update(self, event: Any) -> None:
        data = event.data or {}
        if "total" in data and self._bar.total != data["total"]:
            self._bar.total = data["total"]
            self._bar.refresh()
        if "done" in data:
            self._bar.update(max(0, data["done"] - self._bar.n))
        if event.message and event.kind == "progress":
            self._bar.set_description(event.message, refresh=False)

    def close(self) -> None:
        self._bar.close()
