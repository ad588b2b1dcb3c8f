"""The main job shared by ``warpdiff inpaint`` and ``warpdiff upscale``: read, restore, write.

Frames stream in and out (constant memory); each finished frame is written at once, so Ctrl-C
or a crash keeps every finished frame on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

from warpcore.errors import InvalidInput
from warpcore.progress import Event
from warpcore.request import (
    FLOW_METHODS,
    GUIDANCE_GRADS,
    GUIDANCE_RULES,
    NOISE_SCHEMES,
    SAMPLERS,
    RestoreRequest,
)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a video (mp4/mov/...) or a folder of PNG/TIFF/EXR frames")
    parser.add_argument("-o", "--output", required=True, help="output video file or folder")
    parser.add_argument(
        "--model",
        default="builtin",
        help="'builtin' (default), 'gaussian', an SDXL diffusers folder or hub id",
    )
    parser.add_argument("--noise", default="gp", choices=NOISE_SCHEMES, help="noise scheme")
    parser.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="equivariance self-guidance strength lambda (0 = off; the paper's 1 by default)",
    )
    parser.add_argument(
        "--guidance-rule",
        default="dps",
        choices=GUIDANCE_RULES,
        help="dps: the paper's normalised step (default); newton: Gauss-Newton steps",
    )
    parser.add_argument(
        "--guidance-grad",
        default="output",
        choices=GUIDANCE_GRADS,
        help="output: identity Jacobian, no backward pass (default); network: the paper's",
    )
    parser.add_argument(
        "--guidance-range",
        type=float,
        nargs=2,
        default=(0.0, 1.0),
        metavar=("START", "STOP"),
        help="fractions of the steps to guide",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="ODE steps (default: the model's; built-in 10, SDXL 25)",
    )
    parser.add_argument("--sampler", default="euler", choices=SAMPLERS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt", default="")
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale")
    parser.add_argument(
        "--strength",
        type=float,
        default=None,
        help="< 1 starts from the noised condition, closer to the input (default: the model's: "
        "1 for SDXL fine-tunes, 0.5 zero-shot SDXL upscale; built-in: inpaint 0.5, upscale 0.25)",
    )
    parser.add_argument("--flow", default="dis", choices=FLOW_METHODS)
    parser.add_argument(
        "--propagate",
        type=int,
        default=8,
        metavar="N",
        help="inpaint: fill holes with the background seen up to N frames before and after "
        "(0 = off; default 8)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument(
        "--format",
        default=None,
        help="output format when it should not follow the input's (mp4, mov, mkv, png, tiff, exr)",
    )
    parser.add_argument(
        "--server",
        default=None,
        help="run on a warpdiff server at this address instead of in-process",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_guidance_overrides(parser: argparse.ArgumentParser) -> None:
    """--guidance / --guidance-rule / --strength, default None: "the engine's" (demo, eval)."""
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="self-guidance lambda of the guided methods (default: the engine's)",
    )
    parser.add_argument(
        "--guidance-rule",
        default=None,
        choices=GUIDANCE_RULES,
        help="guidance step rule (default: the engine's); dps is the paper's normalised step",
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=None,
        help="partial-run strength of every diffusion method (default: the model's)",
    )


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--device / --threads / --quiet of the commands that run many clips (demo, eval)."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: all cores, or 1 when the machine is already busy)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def request_from_args(args: argparse.Namespace, task: str) -> RestoreRequest:
    return RestoreRequest(
        task=task,
        scale=getattr(args, "scale", 4),
        model=args.model,
        noise=args.noise,
        guidance=args.guidance,
        guidance_range=tuple(args.guidance_range),
        guidance_rule=args.guidance_rule,
        guidance_grad=args.guidance_grad,
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        cfg_scale=args.cfg,
        strength=args.strength,
        propagate=args.propagate,
        flow=args.flow,
        device=args.device,
    )


def run_job(args: argparse.Namespace, task: str) -> int:
    """Validate everything, then restore the clip frame by frame into the output."""
    from warpcore import video

    request = request_from_args(args, task)  # bad parameters fail here, before any IO
    source = video.open_frames(args.input)
    if len(source) < 1:
        raise InvalidInput(f"input: {args.input} has no frames")
    masks = video.open_masks(args.mask, source) if task == "inpaint" else None
    if masks is not None:
        _check_masks(masks)
    if args.server:
        return _run_on_server(args, request, source)
    from warpcore.models import load_denoiser
    from warpcore.restore import restore_clip

    denoiser = load_denoiser(request.model, task, device=request.device, strength=request.strength)
    stop = threading.Event()
    bar = _ProgressBar(len(source), request.steps or 1, quiet=args.quiet)
    written = 0
    with (
        _ctrl_c_sets(stop),
        video.FrameWriter(args.output, fps=source.fps, like=source, fmt=args.format) as writer,
    ):
        try:
            frames = restore_clip(
                request,
                denoiser,
                iter(source),
                masks,
                n_frames=len(source),
                on_event=bar.update,
                should_stop=stop.is_set,
            )
            for _index, frame in frames:
                writer.write(frame)
                written += 1
        finally:
            bar.close()
            print(f"wrote {written} of {len(source)} frames to {args.output}", file=sys.stderr)
    return 0


def _check_masks(masks) -> None:
    """One cheap pass over the mattes before any compute: empty or full masks are errors."""
    any_hole = False
    for index, mask in enumerate(masks):
        if mask.min() >= 0.5:
            raise InvalidInput(
                f"mask: frame {index} is masked everywhere; nothing is left to condition on "
                f"(white = remove, black = keep)"
            )
        any_hole = any_hole or bool(mask.max() >= 0.5)
    if not any_hole:
        raise InvalidInput("mask: empty in every frame, nothing to remove (white = remove)")


def _run_on_server(args: argparse.Namespace, request: RestoreRequest, source) -> int:
    """The same job on a warpdiff server (which reads the files itself: same machine)."""
    from pathlib import Path

    from server.client import Client, Shot  # a client that needs no torch
    from warpcore import video

    masks = getattr(args, "mask", None)
    shot = Shot(
        request=request.to_dict(),
        masks="alpha" if masks == "alpha" else None,
        paths={
            "frames": str(Path(args.input).resolve()),
            "masks": str(Path(masks).resolve()) if masks and masks != "alpha" else None,
        },
    )
    bar = _ProgressBar(len(source), request.steps or 1, quiet=args.quiet)
    written, key = 0, None
    with (
        Client(args.server) as client,
        video.FrameWriter(args.output, fps=source.fps, like=source, fmt=args.format) as writer,
    ):
        try:
            key = client.submit(shot)
            for event in client.events(key):
                if event.kind == "progress":
                    bar.update(
                        Event(
                            "progress",
                            frame=event.frame,
                            step=event.step,
                            n_steps=event.n_steps,
                            eta_s=event.eta_s,
                        )
                    )
                elif event.kind == "frame" and event.image is not None:
                    writer.write(event.image)
                    written += 1
                elif event.kind in ("error", "cancelled"):
                    raise InvalidInput(f"server: shot {event.kind}: {event.message}")
        except KeyboardInterrupt:
            if key is not None:
                client.cancel(key)
            raise
        finally:
            bar.close()
            print(f"wrote {written} of {len(source)} frames to {args.output}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _ctrl_c_sets(flag: threading.Event) -> Iterator[None]:
    """Ctrl-C sets a flag the engine polls between steps; a second Ctrl-C aborts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):  # noqa: ARG001
        if flag.is_set():
            raise KeyboardInterrupt
        print("\nstopping after the current step (Ctrl-C again to abort)", file=sys.stderr)
        flag.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _ProgressBar:
    """A tqdm bar over all steps of all frames, showing frame, step and ETA."""

    def __init__(self, n_frames: int, n_steps: int, quiet: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=n_frames * n_steps,
            unit="step",
            disable=quiet,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self._n_frames = n_frames

    def update(self, event: Event) -> None:
        if event.kind != "progress":
            return
        done = event.frame * event.n_steps + event.step + 1
        self._bar.total = self._n_frames * event.n_steps
        self._bar.update(done - self._bar.n)
        self._bar.set_description(
            f"frame {event.frame + 1}/{self._n_frames} step {event.step + 1}/{event.n_steps}"
        )

    def close(self) -> None:
        self._bar.close()
