"""``warpdiff``: the one console command. Subcommands are imported lazily, so that
``warpdiff --help`` and the light subcommands stay fast and need no torch.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from warpcore.errors import Cancelled, InvalidInput, ModelNotFound

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "inpaint": (
        "warpcore.commands.inpaint",
        "remove an object from a video (mask = what to remove)",
    ),
    "upscale": ("warpcore.commands.upscale", "super-resolve a video"),
    "demo": ("warpcore.commands.demo", "run the main job on the bundled clip and write a report"),
    "metrics": ("warpcore.commands.metrics", "score any video: warping errors, E_warp, PSNR/SSIM"),
    "eval": ("warpcore.commands.eval", "run an evaluation suite over every noise scheme"),
    "train": ("warpcore.commands.train", "train or fine-tune a conditional UNet with GP noise"),
    "noise-demo": ("warpcore.commands.noise_demo", "video of every noise scheme on a camera move"),
    "serve": ("server.commands", "run the local GPU server"),
    "panel": ("ui.command", "the preview panel: tune a shot, compare runs, see flicker"),
    "bench": ("warpcore.commands.bench", "benchmarks: noise, sampler, server"),
    "install": ("installer.cmd_install", "install the server environment, host plugins, service"),
    "uninstall": ("installer.cmd_uninstall", "remove exactly what 'warpdiff install' wrote"),
    "doctor": ("installer.cmd_doctor", "check the install: environment, GPU, server, plugins"),
}


DESCRIPTION = (
    "Warped Diffusion for editors: flicker-free video inpainting (remove an object) and "
    "super-resolution with an image diffusion model, on this machine or on a warpdiff server."
)
EPILOG = (
    "Run 'warpdiff COMMAND --help' for a command's options. Inputs: videos, PNG/TIFF/EXR frame "
    "folders (plate.1001.exr ...); outputs keep frame names, sound, rate and colourspace (see "
    "the README's Pipelines section)."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warpdiff", description=DESCRIPTION, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; accepted: {', '.join(COMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"warpdiff {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    args.command = name
    try:
        return int(module.run(args) or 0)
    except (InvalidInput, ModelNotFound) as exc:
        print(f"warpdiff {name}: error: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, TimeoutError) as exc:
        print(f"warpdiff {name}: error: {exc}", file=sys.stderr)
        return 1
    except (Cancelled, KeyboardInterrupt):  # one word, locally and through a server
        print(f"warpdiff {name}: cancelled; finished frames were kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
