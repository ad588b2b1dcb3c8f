"""``warpdiff inpaint INPUT --mask MASK -o OUTPUT``: remove an object from a video."""

from __future__ import annotations

import argparse

from warpcore.commands.job import add_common_arguments, add_propagate_argument, run_job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add_propagate_argument(parser)
    parser.add_argument(
        "--mask",
        required=True,
        help="matte of what to remove (white = remove): a video, a folder of "
        "frames, one image for every frame, or 'alpha' (the input's alpha)",
    )


def run(args: argparse.Namespace) -> int:
    return run_job(args, "inpaint")
