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
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from warpcore.errors import Cancelled, InvalidInput
from warpcore.progress import Event
from warpcore.request import (
    FLOW_METHODS,
    GUIDANCE_GRADS,
    GUIDANCE_RULES,
    NOISE_SCHEMES,
    SAMPLERS,
    RestoreRequest,
)

if TYPE_CHECKING:
    from warpcore.colour import ColourPlan
    from warpcore.outputs import OutputPlan
    from warpcore.video import FrameSource, MaskSource
    from warpcore.writers import FrameWriter


STRENGTH_HELP = (
    "how much of the diffusion run to do: a run of strength S takes the last round(S x steps) "
    "steps (at least 1), starting from the noised input, so 0.5 with 10 steps runs 5 steps and "
    "stays closer to the input; 1 = a full run from noise (default: the model's: built-in "
    "inpaint 0.5, upscale 0.25; SDXL fine-tunes 1; zero-shot SDXL upscale 0.5)"
)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input",
        help="a video (mp4/mov/mkv/avi/webm), a folder of PNG/TIFF/EXR frames "
        "(plate.1001.exr ...), or one image",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="a video (.mp4/.mov/.mkv: sound, rate, timecode and colour tags are kept), a "
        "folder (frames keep the input's names and numbers), or a pattern such as "
        "out/shot_clean.####.exr; an existing output needs --overwrite",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output; old frames of the folder that this job does not "
        "write again are removed, so no mixed sequence is left",
    )
    parser.add_argument(
        "--model",
        default="builtin",
        help="'builtin' (default), 'gaussian', an SDXL diffusers folder or hub id",
    )
    parser.add_argument("--noise", default="gp", choices=NOISE_SCHEMES, help="noise scheme")
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="equivariance self-guidance strength lambda (0 = off; default 0.8 for band, 0.5 "
        "for blend and newton, 1 for dps as in the paper); band, blend: the residual's fraction "
        "removed per step",
    )
    parser.add_argument(
        "--guidance-rule",
        default=None,
        choices=GUIDANCE_RULES,
        help="band (upscaling's default): pull toward the previous estimate warped onto this "
        "frame, compared through the warp's blur (docs/guidance.md); blend: the same on "
        "whole-pixel motion only; dps: the paper's normalised step (inpainting's default); "
        "newton: Gauss-Newton steps",
    )
    parser.add_argument(
        "--flow-check",
        type=float,
        default=1.0,
        help="guidance skips pixels where the flow moves the previous input frame onto this "
        "one worse than a flow misplaced by this many pixels would, or scatters (default 1; "
        "0 = both checks off)",
    )
    add_camera_motion(parser)
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
        help="ODE steps of a full run (default: the model's; built-in 10, SDXL 25); "
        "--strength runs a share of them",
    )
    parser.add_argument("--sampler", default="euler", choices=SAMPLERS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt", default="")
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale")
    parser.add_argument("--strength", type=float, default=None, help=STRENGTH_HELP)
    parser.add_argument("--flow", default="dis", choices=FLOW_METHODS)
    parser.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="PX",
        help="frames larger than PX a side go through the model in blended tiles "
        "(default: the model's native size, 1024; 0 = whole frames)",
    )
    parser.add_argument(
        "--colorspace",
        default=None,
        metavar="NAME",
        help="the input's colourspace (OCIO name or alias, from $OCIO or the built-in studio "
        "config); default by type: video, PNG, TIFF srgb_tx (sRGB / Rec.709), EXR lin_rec709 "
        "(scene-linear); e.g. ACEScg, acescct, g24_rec709",
    )
    parser.add_argument(
        "--output-colorspace",
        default=None,
        metavar="NAME",
        help="the output's colourspace (default: the input's; a display-referred input "
        "written to EXR becomes lin_rec709, a linear input written to video/PNG srgb_tx)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu (default), cuda, cuda:N or mps; an error lists what this build has",
    )
    parser.add_argument(
        "--memory-budget",
        default=None,
        metavar="SIZE",
        help="plan for this much memory (e.g. 8GiB): the largest tile that fits is chosen and a "
        "job that cannot fit is refused before any compute (default: a GPU's total memory; "
        "none on the CPU). README 'Memory planning'",
    )
    parser.add_argument(
        "--format",
        default=None,
        help="frame-folder format when it should not follow the input's: png, png8, png16, "
        "tiff, tiff16, exr, exr-half, exr-float (a video's format is its extension)",
    )
    parser.add_argument(
        "--server",
        default=None,
        metavar="ADDRESS",
        help="run on a warpdiff server (e.g. localhost:5557 or tcp://host:5557) instead of "
        "in-process; it must see the same files",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_propagate_argument(parser: argparse.ArgumentParser) -> None:
    """--propagate: inpainting only."""
    parser.add_argument(
        "--propagate",
        type=int,
        default=8,
        metavar="N",
        help="fill holes with the background seen up to N frames before and after "
        "(0 = off; default 8)",
    )
    parser.add_argument(
        "--no-crop",
        dest="crop",
        action="store_false",
        help="send the whole frame to the model instead of a window around the hole",
    )


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
    parser.add_argument(
        "--flow-check",
        type=float,
        default=None,
        help="guidance's flow checks, photometric and coherence (default: the engine's; 0 = off)",
    )
    add_camera_motion(parser)


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


def add_camera_motion(parser: argparse.ArgumentParser) -> None:
    """--camera-motion on / off (default None: the task's, RestoreRequest.camera_motion)."""
    parser.add_argument(
        "--camera-motion",
        choices=("on", "off"),
        default=None,
        help="the restorer's flows follow the camera's motion, fitted on the whole frame, where "
        "it fits (warpcore/camera.py; default: on for inpainting, off for upscaling)",
    )


def camera_choice(value: str | None) -> bool | None:
    """``--camera-motion`` on / off / not given -> True / False / None (the task's default)."""
    return None if value is None else value == "on"


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
        flow_check=args.flow_check,
        camera_motion=camera_choice(args.camera_motion),
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        cfg_scale=args.cfg,
        strength=args.strength,
        propagate=getattr(args, "propagate", 8),  # upscale ignores it
        crop=getattr(args, "crop", True),
        tile=getattr(args, "tile", None),
        flow=args.flow,
        device=args.device,
    )


@dataclass
class _Job:
    """A checked job: its request, input, masks, output and colour plans."""

    request: RestoreRequest
    source: FrameSource
    masks: MaskSource | None
    out: OutputPlan
    colour: ColourPlan

    def writer(self) -> FrameWriter:
        from warpcore import colour as colourlib
        from warpcore.writers import FrameWriter

        exr = self.out.kind == "exr"
        return FrameWriter(
            self.out.path,
            fps=self.source.fps,
            like=self.source,
            fmt=self.out.fmt,
            naming=self.out.naming,
            chromaticities=colourlib.chromaticities(self.colour.output) if exr else None,
            meta=self.source.meta if self.out.is_video else None,
        )

    def finish(self, out: np.ndarray, original: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """A restored frame in the output space; pixels outside the hole copied from the
        input (bit-exact when both spaces agree); the input's alpha carried over."""
        rgb = self.colour.from_model(out[..., :3])
        if mask is not None:
            keep = mask <= 0.0
            rgb[keep] = self.colour.passthrough(original[..., :3])[keep]
        if original.shape[2] == 4:
            alpha = original[..., 3]
            if alpha.shape != rgb.shape[:2]:
                size = (rgb.shape[1], rgb.shape[0])
                alpha = np.clip(cv2.resize(alpha, size, interpolation=cv2.INTER_CUBIC), 0, 1)
            rgb = np.dstack((rgb, alpha))
        return rgb


def prepare_job(args: argparse.Namespace, task: str) -> _Job:
    """Every check of a job, before any compute: parameters, device, output, input, masks."""
    from warpcore import outputs, video
    from warpcore.colour import ColourPlan

    request = request_from_args(args, task)  # bad parameters fail here, before any IO
    if getattr(args, "memory_budget", None) is not None:
        from warpcore.memory import parse_bytes

        parse_bytes(args.memory_budget)
        if args.server:
            raise InvalidInput(
                "--memory-budget: a server plans with its own budget "
                "('warpdiff serve --memory-budget'); leave it out with --server"
            )
    if args.server:
        from server.client import normalize_address

        try:
            args.server = normalize_address(args.server)
        except ValueError as exc:
            raise InvalidInput(f"--server: {exc}") from None
    else:
        from warpcore.devices import check_device

        check_device(request.device)
    outputs.parse(args.output, args.format)  # the container first: no input needed
    source = video.open_frames(args.input)
    if len(source) < 1:
        raise InvalidInput(f"input: {args.input} has no frames")
    scale = request.scale if task == "upscale" else 1
    mask_spec = getattr(args, "mask", None)
    out = outputs.plan(
        args.output,
        args.format,
        source,
        (source.height * scale, source.width * scale),
        args.overwrite,
        inputs=(args.input, mask_spec),
    )
    colour = ColourPlan.make(source.kind, out.kind, args.colorspace, args.output_colorspace)
    masks = video.open_masks(mask_spec, source) if task == "inpaint" else None
    if masks is not None:
        _check_masks(masks)
    return _Job(request, source, masks, out, colour)


def run_job(args: argparse.Namespace, task: str) -> int:
    """Validate everything, then restore the clip frame by frame into the output."""
    job = prepare_job(args, task)
    if args.server:
        return _run_on_server(args, job)
    from warpcore.models import load_denoiser
    from warpcore.restore import resolve_steps, resolve_strength, restore_clip
    from warpcore.schedule import kept_steps

    request, source = job.request, job.source
    denoiser = load_denoiser(request.model, task, device=request.device, strength=request.strength)
    request = _plan_memory(args, request, denoiser, source)
    n_steps = kept_steps(resolve_steps(request, denoiser), resolve_strength(request, denoiser))
    stop = threading.Event()
    originals: dict[int, np.ndarray] = {}
    mattes: dict[int, np.ndarray] = {}

    def model_frames() -> Iterator[np.ndarray]:
        for i, frame in enumerate(source):
            originals[i] = frame
            yield job.colour.to_model(frame[..., :3])

    def kept_masks() -> Iterator[np.ndarray]:
        for i, mask in enumerate(job.masks or ()):
            mattes[i] = mask
            yield mask

    bar = _ProgressBar(len(source), n_steps, quiet=args.quiet)
    with _ctrl_c_sets(stop), _Output(job) as writer:
        frames = restore_clip(
            request,
            denoiser,
            model_frames(),
            kept_masks() if job.masks is not None else None,
            n_frames=len(source),
            on_event=bar.update,
            should_stop=stop.is_set,
        )
        try:
            for index, frame in frames:
                writer.write(job.finish(frame, originals.pop(index), mattes.pop(index, None)))
        finally:
            bar.close()
    return 0


def _plan_memory(
    args: argparse.Namespace, request: RestoreRequest, denoiser: object, source: object
) -> RestoreRequest:
    """The request with the tile that fits the memory budget, or OverBudget before compute."""
    from warpcore import memory

    stated = getattr(args, "memory_budget", None)
    budget, where = memory.device_budget(
        request.device, None if stated is None else memory.parse_bytes(stated)
    )
    if budget is None:
        return request
    size = (source.height, source.width)
    planned = memory.plan(request, denoiser, size, budget, source=where, n_frames=len(source))
    if planned.request.tile != request.tile and not getattr(args, "quiet", False):
        print(
            f"memory: {planned.estimate.tile} px tiles fit {memory.format_bytes(budget)} "
            f"({where}): estimated peak {planned.estimate.describe()}",
            file=sys.stderr,
        )
    return planned.request


class _Output:
    """The job's writer; on leaving (done, stopped or failed): old frames not written again
    are removed (``--overwrite``) and one line says what was written and what was not kept."""

    def __init__(self, job: _Job) -> None:
        self.job = job
        self.writer = job.writer()

    def __enter__(self) -> FrameWriter:
        return self.writer

    def __exit__(self, *exc: object) -> None:
        job, writer = self.job, self.writer
        try:
            writer.close()
        finally:
            if not job.out.is_video:
                job.out.remove_stale(writer.names)
            notes = []
            meta = job.source.meta
            if meta is not None and meta.audio:
                if not job.out.is_video:
                    notes.append("audio was not kept (a frame folder holds no sound)")
                elif writer.audio_error:
                    notes.append(writer.audio_error)
                else:
                    notes.append(f"audio copied ({writer.audio_packets} packets)")
            where = job.out.path
            if job.out.naming is not None:
                where = where / job.out.naming.pattern()
            tail = f"; {'; '.join(notes)}" if notes else ""
            print(
                f"wrote {len(writer)} of {len(job.source)} frames to {where}{tail}",
                file=sys.stderr,
            )


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


def _run_on_server(args: argparse.Namespace, job: _Job) -> int:
    """The same job on a warpdiff server. It reads the files itself (same machine) when the
    model sees them as stored; other colourspaces are converted here and sent as frames."""
    from pathlib import Path

    from server.client import Client, ServerError, Shot  # a client that needs no torch
    from warpcore import video

    request, source = job.request, job.source
    mask_spec = getattr(args, "mask", None)
    if _server_reads_files(job, mask_spec):
        shot = Shot(
            request=request.to_dict(),
            masks="alpha" if mask_spec == "alpha" else None,
            paths={
                "frames": str(Path(args.input).resolve()),
                "masks": str(Path(mask_spec).resolve())
                if mask_spec and mask_spec != "alpha"
                else None,
            },
        )
    else:
        shot = Shot(
            request=request.to_dict(),
            frames=[job.colour.to_model(f[..., :3]) for f in source],
            masks=list(job.masks) if job.masks is not None else None,
        )
    originals = video.open_frames(args.input)
    bar: _ProgressBar | None = None  # made at the first progress event: its total is known
    key = None
    with Client(args.server, connect_timeout=2.0) as client, _Output(job) as writer:
        try:
            key = client.submit(shot)
            for event in client.events(key):
                if event.kind == "progress":
                    if bar is None:
                        bar = _ProgressBar(len(source), event.n_steps, quiet=args.quiet)
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
                    index = event.frame
                    mask = job.masks.read(index) if job.masks is not None else None
                    writer.write(job.finish(event.image, originals.read(index), mask))
                elif event.kind == "cancelled":
                    raise Cancelled(event.message or "the server stopped the shot")
                elif event.kind == "error":
                    raise InvalidInput(f"server: {event.message}")
        except ServerError as exc:
            raise InvalidInput(f"server: {exc}") from None
        except KeyboardInterrupt:
            if key is not None:
                with contextlib.suppress(Exception):
                    client.cancel(key)
            raise Cancelled("stopped with Ctrl-C") from None
        finally:
            if bar is not None:
                bar.close()
    return 0


def _server_reads_files(job: _Job, mask_spec: str | None) -> bool:
    """True when the server can read the files as they are: the model's colourspace, and
    one matte per frame (or the alpha); else the frames and mattes are sent converted."""
    from warpcore import video
    from warpcore.colour import MODEL_SPACE, resolve

    plain = job.colour.input == resolve(MODEL_SPACE) and not job.colour.compress
    if job.masks is None or mask_spec == "alpha":
        return plain
    return plain and len(video.open_frames(mask_spec)) == len(job.source)


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
        total = self._n_frames * event.n_steps
        if event.n_steps and total != self._bar.total:  # only if a model changes its count
            self._bar.total = total
        self._bar.set_description_str(
            f"frame {event.frame + 1}/{self._n_frames} step {event.step + 1}/{event.n_steps}",
            refresh=False,
        )
        self._bar.update(event.frame * event.n_steps + event.step + 1 - self._bar.n)

    def close(self) -> None:
        self._bar.close()
