"""Crop inpainting: restore only a window around the remaining hole, at the model's working scale.

A shot's window (:class:`CropPlanner`) is the hole's bounding box plus context padding plus slack,
chosen on the first frame. It keeps its size and position while the hole (plus padding) stays
inside it, re-centres on the hole when it leaves it, and grows only when the hole outgrows
it, so the crop does not jitter. The window is resized by one scale per shot to the model's working
scale (``native_pixels`` of the denoiser: about one megapixel for SDXL; the built-in model works at
the frame's own pixel scale, its training scale), restored by an inner :class:`ClipRestorer` on
the window's grid, resized back and composited at full resolution. Pixels outside the matte (the
hole, or a feathered window edge without compositing) are the input's, bit for bit.

Noise: the GP field lives on the whole frame at the working scale (a virtual frame of
``scale * (W, H)`` model pixels, its length scale the model's 2/pi px); the crop's noise is that
field at the crop's pixel positions, warped along the flow by the same displacement composition as
:class:`warpcore.warps.GPWarper` with the window offsets folded into the flows. So the noise stays
attached to the scene when the window moves, and two windows of one frame share it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from warpcore import flow as flowlib
from warpcore.flow import warp
from warpcore.models.base import Denoiser
from warpcore.progress import EventSink, ShouldStop, never_stop, no_events
from warpcore.request import RestoreRequest
from warpcore.warps import GPWarper

ALIGN = 16  # window sides in frame pixels are multiples of this (pixel-space models)
FLOW_MARGIN = 48  # frame pixels of context around the two windows when estimating their flow
FEATHER = 16  # width in frame pixels of the window edge's ramp when nothing is composited


@dataclass(frozen=True)
class Window:
    """A crop window in frame pixels: rows y0..y0+h, columns x0..x0+w."""

    y0: int
    x0: int
    h: int
    w: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y0 + self.h), slice(self.x0, self.x0 + self.w)

    def contains(self, y0: int, x0: int, y1: int, x1: int) -> bool:
        return y0 >= self.y0 and x0 >= self.x0 and y1 <= self.y0 + self.h and x1 <= self.x0 + self.w


class CropPlanner:
    """One window per shot that follows the hole with hysteresis (see the module docstring).

    ``pad``: context around the hole's bounding box, frame pixels (None: half the box's longer
    side, at least 48). ``slack``: extra room on each side, as a fraction of the padded box, that
    the hole can move through before the window moves. ``min_side``: the smallest window side.
    """

    def __init__(
        self,
        frame_size: tuple[int, int],
        *,
        pad: int | None = None,
        slack: float = 0.25,
        min_side: int = 128,
        align: int = ALIGN,
    ) -> None:
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.pad, self.slack, self.min_side, self.align = pad, slack, min_side, align
        self.window: Window | None = None

    def required(self, mask: np.ndarray) -> tuple[int, int, int, int] | None:
        """The hole's bounding box plus padding (y0, x0, y1, x1), clipped; None without a hole."""
        ys, xs = np.nonzero(mask > 0)
        if ys.size == 0:
            return None
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        pad = self.pad if self.pad is not None else max(48, max(y1 - y0, x1 - x0) // 2)
        h, w = self.frame_size
        return max(0, y0 - pad), max(0, x0 - pad), min(h, y1 + pad), min(w, x1 + pad)

    def update(self, mask: np.ndarray) -> Window:
        """The window for this frame's mask (H, W)."""
        box = self.required(mask)
        h, w = self.frame_size
        if box is None:  # nothing left to generate: keep the window (or a central one)
            if self.window is None:
                side_h, side_w = self._side(self.min_side, h), self._side(self.min_side, w)
                self.window = Window((h - side_h) // 2, (w - side_w) // 2, side_h, side_w)
            return self.window
        win = self.window
        if win is not None and win.contains(*box):
            return win
        by0, bx0, by1, bx1 = box
        need_h, need_w = by1 - by0, bx1 - bx0
        if win is None or need_h > win.h or need_w > win.w:  # first frame, or the hole outgrew it
            grow_h = need_h + 2 * round(self.slack * need_h)
            grow_w = need_w + 2 * round(self.slack * need_w)
            wh = self._side(max(grow_h, self.min_side, win.h if win else 0), h)
            ww = self._side(max(grow_w, self.min_side, win.w if win else 0), w)
            cy, cx = (by0 + by1) // 2, (bx0 + bx1) // 2
            y0, x0 = cy - wh // 2, cx - ww // 2
        else:  # same size, re-centred on the box: the slack lasts before it moves again
            wh, ww = win.h, win.w
            y0 = win.y0 if by0 >= win.y0 and by1 <= win.y0 + wh else (by0 + by1 - wh) // 2
            x0 = win.x0 if bx0 >= win.x0 and bx1 <= win.x0 + ww else (bx0 + bx1 - ww) // 2
        y0, x0 = min(max(0, y0), h - wh), min(max(0, x0), w - ww)
        self.window = Window(y0, x0, wh, ww)
        return self.window

    def _side(self, side: int, limit: int) -> int:
        return min(limit, -(-side // self.align) * self.align)


class CropGPWarper(GPWarper):
    """:class:`GPWarper` on a crop's grid: the field is the whole frame's at the working scale.

    ``virtual``: (H, W) of the whole frame on the model grid at the working scale; ``origin``:
    the top-left corner (y, x) there of the window the chain started on. Flows handed to
    :meth:`next` carry the window's offset change (they map frame j's crop pixels to positions in
    frame j-1's crop grid), so crop pixel p of any frame sits at ``origin + p + displacement(p)``
    of frame 0. :meth:`grown` continues the chain on a window of another size.
    """

    def __init__(
        self,
        channels: int,
        grid: tuple[int, int],
        virtual: tuple[int, int],
        origin: tuple[float, float],
        seed: int,
        device: str | torch.device,
        n_features: int = 3000,
    ) -> None:
        gp = {"n_features": n_features, "length_scale": None, "res": (virtual[1], virtual[0])}
        super().__init__(gp, channels, grid[0], grid[1], seed, str(device))
        self.virtual, self.origin = virtual, (float(origin[0]), float(origin[1]))
        _, h, w = self.shape
        f64 = {"dtype": torch.float64, "device": self.device}
        ys = (self.origin[0] + torch.arange(h, **f64) + 0.5) / virtual[0]
        xs = (self.origin[1] + torch.arange(w, **f64) + 0.5) / virtual[1]
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        self._unit = torch.stack((gx, gy))  # (2, h, w): unit coordinates in the whole frame
        self._scale = torch.tensor([1.0 / virtual[1], 1.0 / virtual[0]], **f64)
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def _noise(self) -> torch.Tensor:
        coords = self._unit + self.displacement * self._scale[:, None, None]
        return self.field.at(coords.permute(1, 2, 0))

    def _start(self) -> torch.Tensor:
        self.displacement = torch.zeros(
            (2, *self.shape[1:]), dtype=torch.float64, device=self.device
        )
        return self._noise()

    def _step(self, forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
        back = backward.double()
        previous, _ = warp(self.displacement, back, mode="bilinear", padding="border")
        self.displacement = back + previous
        return self._noise()

    def first(self) -> torch.Tensor:
        if self._pending is not None:  # a grown window: one step from the old chain
            old, backward = self._pending
            self._pending, self.displacement = None, old
            return self._step(backward, backward)
        return super().first()

    def grown(self, grid: tuple[int, int], backward: torch.Tensor) -> CropGPWarper:
        """The chain continued on a window of ``grid`` (model cells) whose next frame's backward
        flow (to the old window's grid, offsets folded in) is ``backward``: the next ``first()``
        takes that step instead of restarting."""
        new = CropGPWarper(
            self.shape[0],
            grid,
            self.virtual,
            self.origin,
            self.seed,
            self.device,
            self.field.n_features,
        )
        new.field, new.frame = self.field, self.frame + 1
        new._pending = (self.displacement, backward.to(self.device))
        return new


class CropInpainter:
    """Inpaints a shot through one window per frame; :class:`ClipRestorer` delegates to it.

    On the first frame it decides: when the window would cover more than ``MAX_FRACTION`` of
    the frame, the shot runs whole-frame (the crop would save nothing), else through the window.
    ``make_restorer`` builds the inner restorer (the ``ClipRestorer`` class: no import cycle).
    """

    MAX_FRACTION = 0.5

    def __init__(
        self,
        request: RestoreRequest,
        denoiser: Denoiser,
        frame_size: tuple[int, int],
        n_frames: int | None,
        flow_fn: Callable | None,
        make_restorer: Callable,
    ) -> None:
        self.request = dataclasses.replace(request, crop=False)
        self.denoiser = denoiser
        self.frame_size = frame_size
        self.n_frames = n_frames
        self.flow_fn = flow_fn
        self._make = make_restorer
        self.planner = CropPlanner(frame_size)
        self.whole: bool | None = None  # decided on the first frame
        self.scale: float | None = None  # working pixels per frame pixel, fixed per shot
        self.inner: Any = None
        self.window: Window | None = None
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self._flows: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- sizes --------------------------------------------------------------------------------
    def _multiple(self) -> int:
        ds = self.denoiser.downscale
        return 1 if ds == 1 else ds * 8

    def working(self, win: Window) -> tuple[int, int]:
        """The window's size at the working scale (pixels), a multiple the model accepts."""
        m = self._multiple()
        if self.scale is None:
            native = getattr(self.denoiser, "native_pixels", None)
            self.scale = 1.0 if native is None else math.sqrt(float(native) / (win.h * win.w))
        gh = max(m, round(win.h * self.scale / m) * m)
        gw = max(m, round(win.w * self.scale / m) * m)
        return gh, gw

    def _virtual(self) -> tuple[int, int]:
        assert self.scale is not None
        ds = self.denoiser.downscale
        h, w = self.frame_size
        return max(1, round(h * self.scale / ds)), max(1, round(w * self.scale / ds))

    # -- one frame ----------------------------------------------------------------------------
    def process(
        self,
        index: int,
        frame: np.ndarray,
        mask: np.ndarray,
        on_event: EventSink = no_events,
        should_stop: ShouldStop = never_stop,
    ) -> np.ndarray:
        if self.whole is None:
            first = self.planner.update(mask)
            h, w = self.frame_size
            self.planner.window = None
            if first.h * first.w > self.MAX_FRACTION * h * w:
                self.inner = self._make(
                    self.request, self.denoiser, self.frame_size, self.n_frames, self.flow_fn
                )
                self.whole = True
            else:
                self.whole = False
        if self.whole:
            return self.inner.process(index, frame, mask, on_event, should_stop)
        prev_win = self.window
        win = self.planner.update(mask)
        grid = self.working(win)
        inner, flows = self.inner, None
        if prev_win is not None and self._prev is not None:
            flows = self._crop_flows(index, frame, mask, prev_win, win, grid)
        if inner is None or prev_win is None or (win.h, win.w) != (prev_win.h, prev_win.w):
            inner = self._new_inner(win, grid, flows)
        self._flows = flows
        ys, xs = win.slices()
        crop = _resize(frame[ys, xs, :3], grid)
        hole = np.clip(_resize(mask[ys, xs].astype(np.float32), grid), 0.0, 1.0)
        inner.next_index = index
        try:
            out = inner.process(index, crop, hole, on_event, should_stop)
        except BaseException:
            self.planner.window = prev_win  # a cancelled or failed frame changes no state
            raise
        self.inner, self.window, self._prev = inner, win, (frame, mask)
        return self._composite(frame, mask, win, out)

    def _new_inner(
        self,
        win: Window,
        grid: tuple[int, int],
        flows: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> Any:
        """A restorer on the window's grid; a grown window continues the old noise chain."""
        inner = self._make(self.request, self.denoiser, grid, self.n_frames, self._flow_fn)
        if self.request.noise != "gp":
            return inner  # other schemes warp on the crop grid itself
        ds = self.denoiser.downscale
        cells = (grid[0] // ds, grid[1] // ds)
        old = self.inner.warper if self.inner is not None else None
        if isinstance(old, CropGPWarper) and flows is not None:
            inner.warper = old.grown(cells, flowlib.to_model_grid(flows[1], ds))
        else:
            sy, sx = grid[0] / win.h, grid[1] / win.w
            inner.warper = CropGPWarper(
                self.denoiser.channels,
                cells,
                self._virtual(),
                (win.y0 * sy / ds, win.x0 * sx / ds),
                self.request.seed,
                self.denoiser.device,
            )
        return inner

    def _flow_fn(
        self, index: int, prev: torch.Tensor, cur: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._flows is None:
            raise RuntimeError("crop flows were not prepared for this frame")
        return self._flows

    def _crop_flows(
        self,
        index: int,
        frame: np.ndarray,
        mask: np.ndarray,
        prev_win: Window,
        win: Window,
        grid: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Plate flows at the working scale, offsets folded in: forward on the previous window's
        grid (to positions in this window's), backward on this window's (to the previous)."""
        assert self._prev is not None
        prev_frame, prev_mask = self._prev
        h, w = self.frame_size
        given, ry0, rx0 = None, 0, 0  # flows, and the frame position of their top-left
        if self.flow_fn is not None:  # whole-frame flows already estimated (propagation)?
            given = self.flow_fn(index, _tensor(prev_frame), _tensor(frame))
        region = getattr(self.flow_fn, "region", None)  # or regional ones (propagate.PlateFlows)
        if given is None and region is not None:
            (oy, ox), rf, rb = region(index)
            area = Window(oy, ox, rf.shape[1], rf.shape[2])
            if all(area.contains(v.y0, v.x0, v.y0 + v.h, v.x0 + v.w) for v in (prev_win, win)):
                given, ry0, rx0 = (rf, rb), oy, ox
        if given is not None:
            fwd, bwd = given
        else:  # estimated on the region around both windows only
            ry0 = max(0, min(prev_win.y0, win.y0) - FLOW_MARGIN)
            rx0 = max(0, min(prev_win.x0, win.x0) - FLOW_MARGIN)
            ry1 = min(h, max(prev_win.y0 + prev_win.h, win.y0 + win.h) + FLOW_MARGIN)
            rx1 = min(w, max(prev_win.x0 + prev_win.w, win.x0 + win.w) + FLOW_MARGIN)
            r = (slice(ry0, ry1), slice(rx0, rx1))
            fwd, bwd = flowlib.plate_flow_pair(
                _tensor(prev_frame[r]),
                _tensor(frame[r]),
                torch.from_numpy(np.ascontiguousarray(prev_mask[r], np.float32))[None],
                torch.from_numpy(np.ascontiguousarray(mask[r], np.float32))[None],
                self.request.flow,
                camera=self.request.camera_motion,
            )
        dy, dx = win.y0 - prev_win.y0, win.x0 - prev_win.x0
        py, px = prev_win.y0 - ry0, prev_win.x0 - rx0
        cy, cx = win.y0 - ry0, win.x0 - rx0
        fwd_c = fwd[:, py : py + prev_win.h, px : px + prev_win.w].clone()
        bwd_c = bwd[:, cy : cy + win.h, cx : cx + win.w].clone()
        fwd_c[0] -= dx
        fwd_c[1] -= dy
        bwd_c[0] += dx
        bwd_c[1] += dy
        prev_grid = self.working(prev_win)
        return _resize_flow(fwd_c, prev_grid), _resize_flow(bwd_c, grid)

    def _composite(
        self, frame: np.ndarray, mask: np.ndarray, win: Window, crop_out: np.ndarray
    ) -> np.ndarray:
        ys, xs = win.slices()
        restored = _resize(crop_out, (win.h, win.w))
        out = np.array(frame[..., :3], dtype=np.float32, copy=True)
        if self.request.composite:
            matte = mask[ys, xs].astype(np.float32)
        else:
            matte = feather_matte(win, self.frame_size)
        m = matte[..., None]
        region = out[ys, xs]
        out[ys, xs] = np.where(m > 0, region * (1.0 - m) + restored * m, region)
        return out

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The inner restorer's state plus the window, the scale and the previous full frame."""
        if self.whole is None:
            return {"crop.mode": torch.tensor(-1)}
        state = {f"inner.{k}": v for k, v in self.inner.state_dict().items()}
        state["crop.mode"] = torch.tensor(0 if self.whole else 1)
        if not self.whole:
            assert self.window is not None and self._prev is not None and self.scale is not None
            win = self.window
            state["crop.window"] = torch.tensor([win.y0, win.x0, win.h, win.w])
            state["crop.scale"] = torch.tensor(self.scale, dtype=torch.float64)
            state["crop.prev_frame"] = torch.from_numpy(
                np.ascontiguousarray(self._prev[0], np.float32)
            )
            state["crop.prev_mask"] = torch.from_numpy(
                np.ascontiguousarray(self._prev[1], np.float32)
            )
            if isinstance(self.inner.warper, CropGPWarper):
                state["crop.origin"] = torch.tensor(self.inner.warper.origin, dtype=torch.float64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        mode = int(state["crop.mode"])
        inner_state = {k[6:]: v for k, v in state.items() if k.startswith("inner.")}
        if mode < 0:
            return
        self.whole = mode == 0
        if self.whole:
            self.inner = self._make(
                self.request, self.denoiser, self.frame_size, self.n_frames, self.flow_fn
            )
            self.inner.load_state_dict(inner_state)
            return
        y0, x0, h, w = (int(v) for v in state["crop.window"])
        self.window = self.planner.window = Window(y0, x0, h, w)
        self.scale = float(state["crop.scale"])
        self._prev = (state["crop.prev_frame"].numpy(), state["crop.prev_mask"].numpy())
        grid = self.working(self.window)
        inner = self._make(self.request, self.denoiser, grid, self.n_frames, self._flow_fn)
        if "crop.origin" in state:
            ds = self.denoiser.downscale
            inner.warper = CropGPWarper(
                self.denoiser.channels,
                (grid[0] // ds, grid[1] // ds),
                self._virtual(),
                (float(state["crop.origin"][0]), float(state["crop.origin"][1])),
                self.request.seed,
                self.denoiser.device,
            )
        inner.load_state_dict(inner_state)
        self.inner = inner


def feather_matte(win: Window, frame_size: tuple[int, int]) -> np.ndarray:
    """1 inside the window, ramping to 0 over ``FEATHER`` px at its edges inside the frame."""
    h, w = frame_size

    def ramp(n: int, start: int, end_inside: bool, start_inside: bool) -> np.ndarray:
        i = np.arange(n, dtype=np.float32) + 0.5
        r = np.ones(n, np.float32)
        if start_inside:
            r = np.minimum(r, i / FEATHER)
        if end_inside:
            r = np.minimum(r, (n - i) / FEATHER)
        return np.clip(r, 0.0, 1.0)

    ry = ramp(win.h, win.y0, win.y0 + win.h < h, win.y0 > 0)
    rx = ramp(win.w, win.x0, win.x0 + win.w < w, win.x0 > 0)
    return ry[:, None] * rx[None, :]


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a[..., :3], np.float32)).permute(2, 0, 1)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (h, w[, c]) float32 array to ``size`` (h, w); identity when equal."""
    if a.shape[:2] == tuple(size):
        return np.ascontiguousarray(a, np.float32)
    shrink = size[0] < a.shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    out = cv2.resize(np.ascontiguousarray(a, np.float32), (size[1], size[0]), interpolation=interp)
    return np.clip(out, 0.0, 1.0) if a.ndim == 3 else out


def _resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow.contiguous()
    out = F.interpolate(flow[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    out[0] *= size[1] / w
    out[1] *= size[0] / h
    return out
