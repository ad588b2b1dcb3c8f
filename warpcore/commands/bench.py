"""``warpdiff bench TARGET --json``: benchmark commands (never timed tests)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json

from warpcore.bench.schema import check
from warpcore.errors import InvalidInput

TARGETS = {
    "memory": "warpcore.bench.memory",
    "noise": "warpcore.bench.noise",
    "propagate": "warpcore.bench.propagate",
    "ray": "server.bench_ray",
    "sampler": "warpcore.bench.sampler",
    "server": "server.bench",
    "soak": "server.soak",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=sorted(TARGETS), help="what to benchmark")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    size.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest sizes, one repeat: checks the command and its JSON, not speed",
    )
    parser.add_argument(
        "--device", default=None, help="where to run (targets that take it: memory: cpu, cuda)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="which model (targets that take it: memory: builtin, or sdxl-random: full-size "
        "SDXL, random weights; with --device cpu single UNet calls, ~14 GB RAM, minutes each)",
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="how long to run (targets that take it: soak)"
    )


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(TARGETS[args.target])
    kwargs = {"quick": args.quick, "smoke": args.smoke}
    if args.seconds is not None:
        if "seconds" not in inspect.signature(module.run_benchmark).parameters:
            raise InvalidInput(f"--seconds: bench {args.target} runs a fixed amount of work")
        if not args.seconds > 0:
            raise InvalidInput(f"--seconds: expected a number > 0, got {args.seconds}")
        kwargs["seconds"] = args.seconds
    if args.device is not None:
        if "device" not in inspect.signature(module.run_benchmark).parameters:
            raise InvalidInput(f"--device: bench {args.target} runs on the CPU only")
        from warpcore.devices import check_device

        kwargs["device"] = check_device(args.device)
    if args.model is not None:
        if "model" not in inspect.signature(module.run_benchmark).parameters:
            raise InvalidInput(f"--model: bench {args.target} runs its own model")
        kwargs["model"] = args.model
    result = module.run_benchmark(**kwargs)
    check(result, module.SCHEMA)  # the documented shape, or a clear error naming the key
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(module.format_result(result) if hasattr(module, "format_result") else result)
    return 0
