"""``warpdiff bench TARGET --json``: benchmark commands (never timed tests)."""

from __future__ import annotations

import argparse
import importlib
import json

from warpcore.bench.schema import check

TARGETS = {
    "noise": "warpcore.bench.noise",
    "propagate": "warpcore.bench.propagate",
    "sampler": "warpcore.bench.sampler",
    "server": "server.bench",
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


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(TARGETS[args.target])
    result = module.run_benchmark(quick=args.quick, smoke=args.smoke)
    if hasattr(module, "SCHEMA"):
        check(result, module.SCHEMA)  # the documented shape, or a clear error naming the key
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(module.format_result(result) if hasattr(module, "format_result") else result)
    return 0
