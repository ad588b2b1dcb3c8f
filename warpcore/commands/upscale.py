"""``warpdiff upscale INPUT --scale 4 -o OUTPUT``: super-resolve a video."""

from __future__ import annotations

import argparse

from warpcore.commands.job import add_common_arguments, run_job
from warpcore.request import SCALES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--scale", type=int, default=4, choices=SCALES, help="upscaling factor")


def run(args: argparse.Namespace) -> int:
    return run_job(args, "upscale")
