"""``warpdiff bench TARGET --json``: benchmark commands (never timed tests)."""

from __future__ import annotations

import argparse
import importlib
import json

TARGETS = {
    "noise": "warpcore.bench.noise",
    "propagate": "warpcore.bench.propagate",
    "sampler": "warpcore.bench.sampler",
    "server": "server.bench",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=sorted(TARGETS), help="what to benchmark")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(TARGETS[args.target])
    result = module.run_benchmark(quick=args.quick)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(module.format_result(result) if hasattr(module, "format_result") else result)
    return 0
