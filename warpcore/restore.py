"""Whole-clip restoration: Algorithm 1 of the paper, one frame at a time.

``ClipRestorer`` holds the only state that crosses frames (the noise warper's state, the previous
input frame and mask, and the previous frame's denoised estimate at every step), so memory is
constant in clip length and a killed job resumes from ``state_dict()``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from warpcore import flow as flowlib
from warpcore.crops import CropInpainter
from warpcore.errors import InvalidInput
from warpcore.guidance import CURRENT_GRID_RULES, EquivarianceGuidance, active_steps
from warpcore.models.base import Condition, Denoiser
from warpcore.models.zeroshot import ZeroShotSR
from warpcore.progress import Event, EventSink, ShouldStop, never_stop, no_events
from warpcore.request import RestoreRequest
from warpcore.sampler import StepInfo, noise_reaches_output, sample, start_noise
from warpcore.schedule import karras_sigmas, truncate
from warpcore.tiles import TiledDenoiser, resolve_tile
from warpcore.warps import make_warper

DEFAULT_STEPS = 25  # a model without its own default_steps (SDXL)

# (index j, frame j-1, frame j) at output resolution -> the clean plate's flows (forward j-1 -> j
# on j-1's grid, backward j -> j-1 on j's grid): given flows (exact ones in evaluation, or those
# propagation already estimated). Flows smaller than the restorer's padded grid are extended.
# None: none given for this pair (regional propagation): the restorer estimates its own.
FlowFn = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]


class ClipRestorer:
    """Restores the frames of one clip in order: ``process(0, ...)``, ``process(1, ...)``, ..."""

    def __init__(
        self,
        request: RestoreRequest,
        denoiser: Denoiser,
        frame_size: tuple[int, int],
        n_frames: int | None = None,
        flow_fn: FlowFn | None = None,
    ) -> None:
        if request.task not in denoiser.tasks:
            raise InvalidInput(
                f"task: model {denoiser.name!r} does {', '.join(denoiser.tasks)}, "
                f"not {request.task!r}"
            )
        self.request, self.denoiser = request, denoiser
        self.strength = resolve_strength(request, denoiser)
        if isinstance(denoiser, ZeroShotSR) and self.strength >= 1.0:
            raise InvalidInput(
                "strength: zero-shot super-resolution starts from the noised upsampled frame and "
                "needs strength < 1 (0.3-0.6 is typical); at 1 the frame would be forgotten"
            )
        self.flow_fn = flow_fn
        self.n_frames = n_frames
        self.in_size = _check_size(frame_size)
        # Inpainting through a window around the hole (crops.py): it runs inner restorers.
        self._crop: CropInpainter | None = None
        if request.task == "inpaint" and request.crop:
            self._crop = CropInpainter(
                request, denoiser, self.in_size, n_frames, flow_fn, ClipRestorer
            )
        scale = request.scale if request.task == "upscale" else 1
        self.scale = scale
        self.out_size = (self.in_size[0] * scale, self.in_size[1] * scale)
        multiple = denoiser.downscale if denoiser.downscale == 1 else denoiser.downscale * 8
        self.pad_in = padded_size(self.in_size, denoiser.downscale)
        self.pad_out = (self.pad_in[0] * scale, self.pad_in[1] * scale)
        self.grid = (self.pad_out[0] // denoiser.downscale, self.pad_out[1] // denoiser.downscale)
        self.steps = resolve_steps(request, denoiser)
        # Frames larger than the model's working size go through it in blended tiles (tiles.py);
        # the sampler, the noise and the guidance still see the whole frame.
        self.tile = resolve_tile(request.tile, denoiser)
        if self._crop is None and self.tile and max(self.pad_out) > self.tile:
            unit = multiple * scale
            overlap = max(unit, self.tile // 4 // unit * unit)
            self.denoiser = TiledDenoiser(denoiser, self.tile, overlap, unit)
        sigmas = karras_sigmas(self.steps, denoiser.sigma_min, denoiser.sigma_max)
        self.sigmas = truncate(sigmas, self.strength)
        n_steps = len(self.sigmas) - 1
        self.active = active_steps(n_steps, *request.guidance_range)
        # (In crop mode the inner restorers hold the noise; the frame's field is never built.)
        self.warper = (
            make_warper(
                request.noise,
                denoiser.channels,
                *self.grid,
                seed=request.seed,
                device=denoiser.device,
            )
            if self._crop is None
            else make_warper(request.noise, denoiser.channels, 1, 1, request.seed)
        )
        self.next_index = 0
        self._prev: dict[str, torch.Tensor] | None = None
        # Flow pairs start_at was given, composed only once a frame needs the noise (_catch_up).
        self._pending: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._step_times: deque[float] = deque(maxlen=50)  # recent steps, for the ETA

    # -- public -------------------------------------------------------------------------------
    def process(
        self,
        index: int,
        frame: np.ndarray,
        mask: np.ndarray | None = None,
        on_event: EventSink = no_events,
        should_stop: ShouldStop = never_stop,
    ) -> np.ndarray:
        """Restore frame ``index`` (H, W, 3) float32 in [0, 1]; returns (H', W', 3) float32."""
        if index != self.next_index:
            raise InvalidInput(
                f"index: frames must come in order; expected frame {self.next_index}, got {index}"
            )
        if self._crop is not None:
            _check_frame(frame, self.in_size)
            _check_mask(mask, self.in_size)
            out = self._crop.process(index, frame, mask, on_event, should_stop)
            self.next_index += 1
            return out
        image, hole = self._inputs(frame, mask)
        cond = Condition(
            task=self.request.task,
            image=image
            if self.scale == 1
            else _pad(_to_tensor(frame), self.pad_in).to(image.device),
            mask=hole,
            scale=self.scale,
            prompt=self.request.prompt,
            negative_prompt=self.request.negative_prompt,
            cfg_scale=self.request.cfg_scale,
        )
        prepared = self.denoiser.prepare(cond)
        start = self.denoiser.start(prepared)
        # Where the noise cannot reach the output (the built-in upscale default), no GP field
        # is warped for it: 3 of a 1080p frame's 5.2 s (TRAINING.md, session 9).
        needed = noise_reaches_output(self.sigmas, start)
        noise, guidance = self._noise_and_guidance(index, image, hole, needed)
        x = start_noise(noise, self.sigmas, start)
        result = sample(
            lambda u, s: self.denoiser(u, s, prepared),
            x,
            self.sigmas,
            method=self.request.sampler,
            guidance=guidance,
            callback=self._progress(index, on_event),
            should_stop=should_stop,
            start=start,
        )
        with torch.no_grad():
            out = self.denoiser.decode(result.x)[0].float().clamp(0, 1)
        # Everything below only runs once the frame is done: a cancelled frame changes no state.
        self._prev = {"image": image, "mask": hole, "denoised": result.denoised}
        self.next_index += 1
        return self._finish(out, frame, hole)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything the next frame needs (safetensors-ready)."""
        state = {"next_index": torch.tensor(self.next_index)}
        if self._crop is not None:
            state.update(self._crop.state_dict())
            return state
        for k, v in (self._prev or {}).items():
            if v is not None:
                state[f"prev.{k}"] = v.detach().cpu().contiguous()
        for k, v in self.warper.state_dict().items():
            state[f"warper.{k}"] = v.detach().cpu().contiguous()
        return state

    def start_at(
        self,
        index: int,
        previous: tuple[np.ndarray, np.ndarray | None],
        backward: Sequence[tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        """Make frame ``index`` the next one, as a chunk of a long shot starts (warpcore/chunks):
        the noise warper is to be advanced through the flows (forward, backward) of frames
        1 .. index-1 (at output resolution, as ``flow_fn`` gives them), so frame ``index`` gets
        exactly the noise of the sequential run; ``previous`` = (frame, mask) of frame
        ``index - 1`` for the next flow. Frame ``index`` has no guidance (there are no
        estimates of frame index-1): a chunk's first frames re-establish it and are dropped.

        The flows are composed when a frame first needs the noise, not here: where the noise
        cannot reach the output (:func:`warpcore.sampler.noise_reaches_output`: the built-in
        upscale default) they never are, and ``backward`` may be a lazy sequence."""
        if self._crop is not None:
            raise InvalidInput("start_at: crop inpainting runs a shot in order from frame 0")
        if index < 1 or len(backward) != index - 1:
            raise InvalidInput(
                f"start_at: frame {index} needs index >= 1 and the {index - 1} flow pairs of "
                f"frames 1..{index - 1}; got {len(backward)}"
            )
        self._pending = backward
        image, hole = self._inputs(*previous)
        self._prev = {"image": image, "mask": hole, "denoised": None}
        self.next_index = index

    def _catch_up(self) -> None:
        """Advance the noise warper through the flows :meth:`start_at` was given (a GP
        warper composes them: 0.11 s a pair at 1080p, so about 110 s for a chunk at frame
        1000), and forget them."""
        if self._pending is None:
            return
        from warpcore.warps import fast_forward

        pending, self._pending = self._pending, None
        ds = self.denoiser.downscale

        def model_grid(flow: torch.Tensor) -> torch.Tensor:
            return flowlib.to_model_grid(_pad_flow(flow, self.pad_out), ds).to(self.denoiser.device)

        self.warper.first()
        fast_forward(self.warper, ((model_grid(f), model_grid(b)) for f, b in pending))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        dev = self.denoiser.device
        self.next_index = int(state["next_index"])
        self._pending = None
        if self._crop is not None:
            if "crop.mode" not in state:
                raise InvalidInput("state: saved without crop; resume with the same request")
            self._crop.load_state_dict(state)
            return
        prev = {k[5:]: v.to(dev) for k, v in state.items() if k.startswith("prev.")}
        self._prev = None
        if prev:
            self._prev = {
                "image": prev["image"],
                "mask": prev.get("mask"),
                "denoised": prev["denoised"],
            }
        self.warper.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("warper.")})

    # -- steps of a frame ----------------------------------------------------------------------
    def _inputs(
        self, frame: np.ndarray, mask: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The frame at output resolution (padded) for flow and conditioning, and the mask."""
        _check_frame(frame, self.in_size)
        image, hole = padded_input(frame, mask, self.request.task, self.pad_in, self.scale)
        dev = self.denoiser.device
        return image.to(dev), None if hole is None else hole.to(dev)

    def _noise(
        self, fwd: torch.Tensor | None, bwd: torch.Tensor | None, needed: bool
    ) -> torch.Tensor:
        """The frame's warped noise (the first field without flows), or zeros where it cannot
        reach the output (:func:`warpcore.sampler.noise_reaches_output`)."""
        if not needed:
            size = (1, self.denoiser.channels, *self.grid)
            return torch.zeros(size, device=self.denoiser.device)
        self._catch_up()
        return (self.warper.first() if fwd is None else self.warper.next(fwd, bwd))[None]

    def _noise_and_guidance(
        self, index: int, image: torch.Tensor, hole: torch.Tensor | None, noise_needed: bool
    ) -> tuple[torch.Tensor, EquivarianceGuidance | None]:
        """Algorithm 1 step 1 (warped noise, or zeros where it cannot reach the output) and
        the guidance for this frame."""
        if self._prev is None:
            return self._noise(None, None, noise_needed), None
        # Flow is estimated on the CPU (OpenCV) on the input at output resolution.
        prev_img, cur_img = self._prev["image"].cpu(), image.cpu()
        prev_hole = None if self._prev["mask"] is None else self._prev["mask"].cpu()
        cur_hole = None if hole is None else hole.cpu()
        given = None if self.flow_fn is None else self.flow_fn(index, prev_img, cur_img)
        if given is not None:  # given plate flows, extended to the padded grid
            size = tuple(image.shape[-2:])
            fwd, bwd = (_pad_flow(f, size) for f in given)
        else:
            fwd, bwd = pair_flows(
                prev_img, cur_img, prev_hole, cur_hole, self.request.flow,
                self.request.camera_motion,
            )  # fmt: skip
        ds = self.denoiser.downscale
        fwd_m = flowlib.to_model_grid(fwd, ds).to(image.device)
        bwd_m = flowlib.to_model_grid(bwd, ds).to(image.device)
        noise = self._noise(fwd_m, bwd_m, noise_needed)
        if self.request.guidance <= 0 or self._prev["denoised"] is None:
            return noise, None  # (no estimates of frame j-1: the first frame of a chunk)

        def guide_mask(a: torch.Tensor, b: torch.Tensor, inputs: tuple) -> torch.Tensor:
            """Where frame a (flow ``a`` to b, ``b`` back; ``inputs``: a, b and their holes)
            may be guided."""
            valid = torch.ones_like(a[:1])
            if self.request.occlusion_mask:
                valid = flowlib.occlusion_mask(a, b).to(valid)
            if self.request.flow_check > 0:  # only where the flow moves one input onto the other
                valid = valid * _flow_check(a, *inputs, self.request.flow_check)
            if cur_hole is not None and self.request.composite:
                # Only the generated region reaches the output (the rest is composited from the
                # frame): guide there, plus a rim for its seam. The DPS step has a fixed length,
                # so spending it on known pixels would leave almost nothing for the hole.
                generated = torch.maximum(prev_hole, cur_hole)
                rim = 4 * ds + 1
                valid = valid * F.max_pool2d(generated[None], rim, 1, rim // 2)[0]
            # A latent cell is valid only if every pixel of its block is.
            return (F.avg_pool2d(valid[None], ds)[0] > 0.999).float() if ds > 1 else valid

        valid = guide_mask(fwd, bwd, (prev_img, cur_img, prev_hole, cur_hole))  # j-1's grid
        blend = self.request.guidance_rule in CURRENT_GRID_RULES
        guidance = EquivarianceGuidance(
            strength=self.request.guidance,
            forward=fwd_m,
            mask=valid.to(image.device),
            previous=self._prev["denoised"],
            active=self.active,
            grad_mode=self.request.guidance_grad,
            rule=self.request.guidance_rule,
            backward=bwd_m if blend else None,
            backward_mask=(
                guide_mask(bwd, fwd, (cur_img, prev_img, cur_hole, prev_hole)).to(image.device)
                if blend
                else None
            ),
            measurement_scale=self.scale if ds == 1 else 1,
            keep_mean_in=None if cur_hole is None else _on_grid(cur_hole, ds).to(image.device),
        )
        return noise, guidance

    def _finish(
        self, out: torch.Tensor, frame: np.ndarray, hole: torch.Tensor | None
    ) -> np.ndarray:
        h, w = self.out_size
        img = out[:, :h, :w].permute(1, 2, 0).cpu().numpy()
        if hole is not None and self.request.composite:
            m = hole[0, :h, :w].cpu().numpy()[..., None]
            img = frame[..., :3] * (1.0 - m) + img * m
        return np.ascontiguousarray(img, dtype=np.float32)

    def _progress(self, index: int, on_event: EventSink) -> Callable[[StepInfo], None]:
        last = [time.perf_counter()]

        def callback(info: StepInfo) -> None:
            now = time.perf_counter()
            self._step_times.append(now - last[0])
            last[0] = now
            per_step = sum(self._step_times) / len(self._step_times)
            left = info.n_steps - info.k - 1
            if self.n_frames is not None:
                left += (self.n_frames - index - 1) * info.n_steps
            on_event(
                Event(
                    "progress",
                    frame=index,
                    n_frames=self.n_frames or 0,
                    step=info.k,
                    n_steps=info.n_steps,
                    eta_s=left * per_step,
                    data={"sigma": info.sigma, "warp_error": info.warp_error},
                )
            )

        return callback


def restore_clip(
    request: RestoreRequest,
    denoiser: Denoiser,
    frames: Iterable[np.ndarray],
    masks: Iterable[np.ndarray] | None = None,
    *,
    n_frames: int | None = None,
    on_event: EventSink = no_events,
    should_stop: ShouldStop = never_stop,
    flow_fn: FlowFn | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Restore a clip in order, yielding ``(index, frame)`` as soon as each frame is done.

    Inpainting with ``request.propagate`` > 0 first fills each hole from the neighbouring
    frames (reading that many frames ahead), then generates what is left.
    """
    if request.task == "inpaint" and masks is None:
        raise InvalidInput("masks: the inpaint task needs a mask for every frame")
    pairs = _with_masks(frames, masks)
    if request.task == "inpaint" and request.propagate > 0:
        from warpcore.propagate import propagate_clip

        # Crop inpainting needs flows only around the hole: propagation estimates them there.
        propagated = propagate_clip(
            pairs, request.propagate, request.flow, request.crop, request.camera_motion
        )
        pairs = iter(propagated)
        flow_fn = flow_fn or propagated.flows  # its plate flows: not estimated twice
    restorer: ClipRestorer | None = None
    for index, (frame, mask) in enumerate(pairs):
        if restorer is None:
            restorer = ClipRestorer(request, denoiser, frame.shape[:2], n_frames, flow_fn)
        out = restorer.process(index, frame, mask, on_event, should_stop)
        on_event(Event("frame", frame=index, n_frames=n_frames or 0))
        yield index, out
    if restorer is None:
        raise InvalidInput("frames: the clip has no frames")
    on_event(Event("finished", n_frames=restorer.next_index))


def _flow_check(
    flow: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    a_hole: torch.Tensor | None,
    b_hole: torch.Tensor | None,
    shift_px: float,
) -> torch.Tensor:
    """Where guidance may follow ``flow`` (a->b, on a's grid): it moves input ``b`` onto ``a``
    (:func:`warpcore.flow.photometric_mask`; hole pixels of either frame, ``b``'s moved onto
    a's grid, pass) and it does not scatter (:func:`warpcore.flow.coherence_mask`)."""
    known = None
    if a_hole is not None and b_hole is not None:
        moved, _ = flowlib.warp(b_hole.to(flow), flow, padding="border")
        known = (1.0 - torch.maximum(a_hole.to(flow), moved)).clamp(0, 1)
    return flowlib.photometric_mask(a, b, flow, shift_px, known) * flowlib.coherence_mask(flow)


# -- helpers ------------------------------------------------------------------------------------
def _on_grid(hole: torch.Tensor, downscale: int) -> torch.Tensor:
    """A (1, H, W) hole on the model grid: a cell is in it if any of its pixels is."""
    return (F.max_pool2d(hole[None], downscale)[0] > 0).float() if downscale > 1 else hole


def padded_size(size: tuple[int, int], downscale: int) -> tuple[int, int]:
    """The input grid a model of ``downscale`` works on: ``size`` padded to its multiple."""
    multiple = downscale if downscale == 1 else downscale * 8
    return tuple(-(-s // multiple) * multiple for s in size)  # type: ignore[return-value]


def pair_flows(
    prev_img: torch.Tensor,
    image: torch.Tensor,
    prev_hole: torch.Tensor | None,
    hole: torch.Tensor | None,
    method: str,
    camera: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The restorer's own flows between two padded inputs (CPU): the clean plate's when there
    is a hole (the background, not the removed object), else the frames'; ``camera``: following
    the camera's motion where it fits (:mod:`warpcore.camera`)."""
    if hole is not None and prev_hole is not None:
        return flowlib.plate_flow_pair(prev_img, image, prev_hole, hole, method, camera=camera)
    return flowlib.flow_pair(prev_img, image, method, camera)


def padded_input(
    frame: np.ndarray, mask: np.ndarray | None, task: str, pad_in: tuple[int, int], scale: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A checked frame (and mask) as the restorer sees it, on the CPU: padded, upsampled."""
    _check_frame(frame, (frame.shape[0], frame.shape[1]))
    hole = None
    if task == "inpaint":
        _check_mask(mask, frame.shape[:2])
        hole = _pad(torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None], pad_in)
    elif mask is not None:
        raise InvalidInput("mask: only the inpaint task takes a mask; upscale takes none")
    image = _pad(_to_tensor(frame), pad_in)
    return (_upsample(image, scale) if scale > 1 else image), hole


def resolve_steps(request: RestoreRequest, denoiser: Denoiser) -> int:
    """The request's step count, or the model's default when the request has None."""
    if request.steps is not None:
        return int(request.steps)
    return int(getattr(denoiser, "default_steps", DEFAULT_STEPS))


def resolve_strength(request: RestoreRequest, denoiser: Denoiser) -> float:
    """The request's strength, or the model's default for its task when the request has None."""
    if request.strength is not None:
        return float(request.strength)
    return float(getattr(denoiser, "default_strength", 1.0))


def _with_masks(
    frames: Iterable[np.ndarray], masks: Iterable[np.ndarray] | None
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """``(frame, mask)`` pairs, read lazily; a mask short or left over is an error."""
    mask_iter = iter(masks) if masks is not None else None
    count = 0
    for frame in frames:
        mask = None
        if mask_iter is not None:
            mask = next(mask_iter, None)
            if mask is None:
                raise InvalidInput(
                    f"masks: the mask ran out at frame {count}; one mask per frame needed"
                )
        yield frame, mask
        count += 1
    if mask_iter is not None and next(mask_iter, None) is not None:
        raise InvalidInput(f"masks: more masks than the clip's {count} frames")


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or any(not isinstance(s, (int, np.integer)) or s < 1 for s in size):
        raise InvalidInput(f"frame_size: expected (height, width) >= 1, got {size!r}")
    return int(size[0]), int(size[1])


def _check_frame(frame: np.ndarray, size: tuple[int, int]) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] not in (3, 4):
        shape = getattr(frame, "shape", type(frame).__name__)
        raise InvalidInput(f"frame: expected an (H, W, 3) or (H, W, 4) array, got {shape}")
    if frame.shape[:2] != size:
        raise InvalidInput(
            f"frame: all frames of a clip must have one size; expected {size[0]}x{size[1]} "
            f"(HxW), got {frame.shape[0]}x{frame.shape[1]}"
        )
    if not np.issubdtype(frame.dtype, np.floating) or not np.isfinite(frame).all():
        raise InvalidInput("frame: expected finite float values in [0, 1] (no NaN or inf)")


def _check_mask(mask: np.ndarray | None, size: tuple[int, int]) -> None:
    if mask is None:
        raise InvalidInput("mask: the inpaint task needs an (H, W) mask for every frame")
    if not isinstance(mask, np.ndarray) or mask.shape != size:
        shape = getattr(mask, "shape", type(mask).__name__)
        raise InvalidInput(f"mask: expected shape {size} like the frame, got {shape}")
    if not np.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise InvalidInput("mask: expected finite values in [0, 1] (1 = region to fill)")
    if mask.min() >= 0.5:
        raise InvalidInput("mask: covers the whole frame; nothing is left to condition on")


def _pad_flow(flow: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    flowlib.validate_flow(flow)
    dh, dw = size[0] - flow.shape[1], size[1] - flow.shape[2]
    if dh < 0 or dw < 0:
        raise InvalidInput(f"flow_fn: flows of {tuple(flow.shape[1:])} exceed the grid {size}")
    if dh == 0 and dw == 0:
        return flow
    return F.pad(flow[None], (0, dw, 0, dh), mode="replicate")[0]


def _to_tensor(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame[..., :3], np.float32)).permute(2, 0, 1)


def _pad(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    dh, dw = size[0] - image.shape[-2], size[1] - image.shape[-1]
    if dh == 0 and dw == 0:
        return image
    mode = "reflect" if dh < image.shape[-2] and dw < image.shape[-1] else "replicate"
    return F.pad(image[None], (0, dw, 0, dh), mode=mode)[0]


def _upsample(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling (OpenCV's, as a user's bicubic baseline) of a (3, h, w) tensor."""
    arr = image.permute(1, 2, 0).numpy()
    up = cv2.resize(arr, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(np.clip(up, 0, 1)).permute(2, 0, 1).contiguous()
