"""Temporal propagation for object removal: fill each hole with background seen in other frames.

When the object (or the camera) moves, most of what it hides in frame ``t`` is visible in a
nearby frame. :class:`Propagator` carries those pixels along the optical flow into the hole, so
the diffusion model only has to generate what no frame of the window shows; its output is the
filled frame and the reduced mask (1 = still to generate), fed to the restorer in place of the
input frame and mask.

For frame ``t`` the frames ``t +- 1, t +- 2, ..., t +- radius`` are tried nearest first. The
flow from ``t`` to ``s`` is the composition of the consecutive flows between them
(:func:`warpcore.flow.compose`) of the clean plate: each estimated with both frames' holes
filled smoothly and continued inside them from the surrounding background
(:func:`warpcore.flow.plate_flow_pair`): behind the object the plate moves like the background.
A hole pixel takes frame ``s``'s colour (bilinear) where its flow lands inside frame ``s`` on a
pixel that ``s``'s mask leaves fully visible; pixels taken once are not overwritten.

Random access: ``fill(t)`` reads the frames it needs through ``load(i)``, so the server (which
has every frame of a shot on disk) and the streaming job (a look-ahead buffer) share it. Only
the window's frames, masks and consecutive flows are kept: memory is constant in clip length.

Regional (``regional=True``, what crop inpainting uses): each consecutive plate flow is estimated
only on the region around the two frames' holes (their bounding box grown by ``REGION_MARGIN``
plus its longer side: the room the hole's background can move through relative to the object
over a window), and the chains are composed only over frame ``t``'s hole. A chain point that
leaves a pair's region has no flow there and takes nothing (the model generates it). At 1080p
with a 120-pixel hole that is about a sixth of the pixels of whole-frame estimation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from warpcore import flow as flowlib
from warpcore.errors import InvalidInput

# frame index -> (frame (H, W, 3|4) float32 in [0, 1], mask (H, W) in [0, 1], 1 = remove), or
# None past the clip's end (for a clip of unknown length)
Loader = Callable[[int], tuple[np.ndarray, np.ndarray] | None]

HOLE = 0.5  # a mask value above this is part of the hole
VISIBLE = 0.01  # a source pixel is usable only where its frame's mask is below this
REGION_MARGIN = 128  # regional flows: frame pixels around the holes, plus the holes' longer side
REGION_MAX_FRACTION = 0.5  # a region larger than this share of the frame: the whole frame

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1) in frame pixels


class Propagator:
    """Fills frame ``t``'s hole from frames ``t - radius .. t + radius`` of a clip.

    ``n_frames`` None: the clip ends where ``load`` first returns None. ``regional``: flows only
    around the holes (module docstring); :meth:`flows` then has a pair's flows only where its
    region is the whole frame.
    """

    def __init__(
        self,
        load: Loader,
        n_frames: int | None = None,
        radius: int = 8,
        flow: str = "dis",
        regional: bool = False,
        camera: bool = False,
    ) -> None:
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
            raise InvalidInput(f"propagate: expected a frame radius >= 0, got {radius!r}")
        if n_frames is not None and (
            isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1
        ):
            raise InvalidInput(f"n_frames: expected an integer >= 1, got {n_frames!r}")
        self.load, self.n_frames, self.radius, self.flow = load, n_frames, radius, flow
        self.regional, self.camera = bool(regional), bool(camera)
        self._frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # (i, j), |i - j| = 1: i -> j on frame i's grid of the pair's region (top-left y, x)
        self._flows: dict[tuple[int, int], tuple[tuple[int, int], torch.Tensor]] = {}
        self._size: tuple[int, int] | None = None
        self.flows = PlateFlows(self)  # the restorer's flow_fn

    def fill(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``t`` with its hole filled where another frame shows it, and what is left."""
        if t < 0 or not self.has(t):
            raise InvalidInput(f"frame: expected an index in [0, {self.n_frames}), got {t}")
        self._evict(t)
        frame, mask = self._get(t)
        hole = mask > HOLE
        h, w = hole.shape
        box = _bbox(hole) if self.regional else (0, 0, h, w)
        result = np.array(frame, np.float32, copy=True)
        if box is None:  # nothing to fill
            return result, hole.astype(np.float32)
        y0, x0, y1, x1 = box
        remaining = torch.from_numpy(np.ascontiguousarray(hole[y0:y1, x0:x1]))
        out = torch.from_numpy(np.ascontiguousarray(frame[y0:y1, x0:x1, :3], np.float32))
        out = out.permute(2, 0, 1).clone()
        # direction -> (displacement t -> t + k * direction on the box, where it is known)
        chains: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for k in range(1, self.radius + 1):
            if not remaining.any():
                break
            for direction in (1, -1):
                s = t + k * direction
                if s < 0 or not self.has(s):
                    continue
                chains[direction] = self._advance(chains.get(direction), s - direction, s, box)
                self._take(out, remaining, s, *chains[direction], box)
        result[y0:y1, x0:x1, :3] = out.permute(1, 2, 0).numpy()
        left = np.zeros((h, w), np.float32)
        left[y0:y1, x0:x1] = remaining.numpy()
        return result, left

    # -- helpers ------------------------------------------------------------------------------
    def _advance(
        self,
        chain: tuple[torch.Tensor, torch.Tensor] | None,
        i: int,
        j: int,
        box: Box,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The chain to frame ``i`` continued by the plate flow ``i -> j``: displacement
        ``d + flow_ij(x + d)`` over the box, and where it is known (inside the pair's region)."""
        (ry, rx), step = self._pair_flow(i, j)
        y0, x0, y1, x1 = box
        rh, rw = step.shape[1:]
        if chain is None and ry <= y0 and rx <= x0 and y1 <= ry + rh and x1 <= rx + rw:
            flow = step[:, y0 - ry : y1 - ry, x0 - rx : x1 - rx]  # a slice: exact
            return flow, torch.ones(flow.shape[1:], dtype=torch.bool)
        if chain is None:
            disp = torch.zeros((2, y1 - y0, x1 - x0), dtype=step.dtype)
            known = torch.ones(disp.shape[1:], dtype=torch.bool)
        else:
            disp, known = chain
        shift = torch.tensor([x0 - rx, y0 - ry], dtype=disp.dtype)[:, None, None]
        sampled, inside = flowlib.warp(step, disp + shift, padding="border")
        if (ry, rx, rh, rw) != (0, 0, *self._size):  # outside a region the flow is unknown
            known = known & (inside[0] > 0.5)
        return disp + sampled, known

    def _take(
        self,
        out: torch.Tensor,
        remaining: torch.Tensor,
        s: int,
        disp: torch.Tensor,
        known: torch.Tensor,
        box: Box,
    ) -> None:
        """Copy frame ``s``'s colour at ``x + disp(x)`` into the hole where ``s`` shows it."""
        frame, mask = self._get(s)
        h, w = mask.shape
        y0, x0 = box[0], box[1]
        pts = flowlib.sample_points(disp)
        # Only the part of frame s the points can reach is converted (not the whole frame).
        ax0 = int(min(max(np.floor(float(pts[0].min())) + x0, 0), w - 1))
        ax1 = int(min(max(np.ceil(float(pts[0].max())) + x0 + 2, ax0 + 1), w))
        ay0 = int(min(max(np.floor(float(pts[1].min())) + y0, 0), h - 1))
        ay1 = int(min(max(np.ceil(float(pts[1].max())) + y0 + 2, ay0 + 1), h))
        src = np.ascontiguousarray(frame[ay0:ay1, ax0:ax1, :3], np.float32)
        both = torch.cat(
            [
                torch.from_numpy(src).permute(2, 0, 1),
                torch.from_numpy(np.ascontiguousarray(mask[ay0:ay1, ax0:ax1], np.float32))[None],
            ]
        )
        shift = torch.tensor([x0 - ax0, y0 - ay0], dtype=disp.dtype)[:, None, None]
        sampled, inside = flowlib.warp(both, disp + shift)
        # Inside the crop of s but outside s itself cannot happen: the crop is clamped to s, so
        # a point is inside s exactly when it is inside the crop, except at a clamped edge.
        gx, gy = pts[0] + x0, pts[1] + y0
        tol = 1e-4
        in_frame = (gx >= -tol) & (gx <= w - 1 + tol) & (gy >= -tol) & (gy <= h - 1 + tol)
        usable = remaining & known & in_frame & (inside[0] > 0.5) & (sampled[3] < VISIBLE)
        out[:, usable] = sampled[:3, usable]
        remaining &= ~usable

    def has(self, i: int) -> bool:
        """Whether the clip has a frame ``i`` (reads it when the length is not known yet)."""
        if self.n_frames is not None:
            return i < self.n_frames
        if i in self._frames:
            return True
        item = self.load(i)
        if item is None:
            self.n_frames = i  # the first index past the end: the clip's length
            return False
        self._store(i, item)
        return True

    def _get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in self._frames:
            item = self.load(i)
            if item is None:
                raise InvalidInput(f"frames: no frame {i}; the clip ended before it")
            self._store(i, item)
        return self._frames[i]

    def _store(self, i: int, item: tuple[np.ndarray, np.ndarray]) -> None:
        frame, mask = (np.asarray(a, np.float32) for a in item)
        if frame.ndim != 3 or frame.shape[2] not in (3, 4):
            raise InvalidInput(
                f"frame {i}: expected an (H, W, 3) or (H, W, 4) array, got {frame.shape}"
            )
        if self._size is None:
            self._size = frame.shape[:2]
        if frame.shape[:2] != self._size:
            h, w = self._size
            raise InvalidInput(
                f"frame {i}: all frames of a clip must have one size; expected {h}x{w} (HxW), "
                f"got {frame.shape[0]}x{frame.shape[1]}"
            )
        if mask.shape != frame.shape[:2]:
            raise InvalidInput(
                f"mask {i}: expected shape {frame.shape[:2]} like the frame, got {mask.shape}"
            )
        if not (np.isfinite(frame).all() and np.isfinite(mask).all()):
            raise InvalidInput(f"frame {i}: expected finite values in [0, 1] (no NaN or inf)")
        self._frames[i] = (frame, mask)

    def _pair_flow(self, i: int, j: int) -> tuple[tuple[int, int], torch.Tensor]:
        """The plate flow ``i -> j`` on frame i's grid of the pair's region, and its top-left.
        A pair is always estimated from its earlier frame (the camera's motion is fitted on the
        forward flow), so its flows do not depend on which direction was asked for first."""
        if (i, j) not in self._flows:
            lo, hi = min(i, j), max(i, j)
            (a, mask_a), (b, mask_b) = self._get(lo), self._get(hi)
            y0, x0, y1, x1 = self._region(mask_a, mask_b)
            r = (slice(y0, y1), slice(x0, x1))
            fwd, bwd = flowlib.plate_flow_pair(
                a[r], b[r], mask_a[r], mask_b[r], self.flow, camera=self.camera
            )
            self._flows[(lo, hi)], self._flows[(hi, lo)] = ((y0, x0), fwd), ((y0, x0), bwd)
        return self._flows[(i, j)]

    def _region(self, mask_a: np.ndarray, mask_b: np.ndarray) -> Box:
        """Where a pair's flows are estimated: the whole frame, or (regional) around its holes."""
        h, w = mask_a.shape
        box = _bbox((mask_a > HOLE) | (mask_b > HOLE)) if self.regional else None
        if box is None:
            return 0, 0, h, w
        y0, x0, y1, x1 = box
        grow = REGION_MARGIN + max(y1 - y0, x1 - x0)
        y0, x0, y1, x1 = max(0, y0 - grow), max(0, x0 - grow), min(h, y1 + grow), min(w, x1 + grow)
        if (y1 - y0) * (x1 - x0) > REGION_MAX_FRACTION * h * w:
            return 0, 0, h, w
        return y0, x0, y1, x1

    def plate_flows(self, i: int, j: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The clean plate's whole-frame flows between adjacent frames: i -> j on i's grid,
        j -> i on j's (:func:`warpcore.flow.plate_flow_pair` on the input frames and masks),
        estimated once; None where a regional propagator estimated them on a region only."""
        (origin, fwd), (_, bwd) = self._pair_flow(i, j), self._pair_flow(j, i)
        if origin != (0, 0) or tuple(fwd.shape[1:]) != self._size:
            return None
        return fwd, bwd

    def _evict(self, t: int) -> None:
        lo, hi = t - self.radius, t + self.radius
        for i in [i for i in self._frames if not lo <= i <= hi]:
            del self._frames[i]
        for key in [k for k in self._flows if not (lo <= k[0] <= hi and lo <= k[1] <= hi)]:
            del self._flows[key]


class PlateFlows:
    """A restorer ``flow_fn`` over the plate flows propagation already estimated (within the
    window, so never evicted before they are asked): ``(j, prev, cur)`` gives pair (j-1, j)'s
    whole-frame flows, or None where a regional propagator has them on a region only; then
    :meth:`region` gives them with the region's place (crop inpainting slices its windows)."""

    def __init__(self, propagator: Propagator) -> None:
        self._propagator = propagator

    def __call__(
        self, j: int, _prev: object = None, _cur: object = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self._propagator.plate_flows(j - 1, j)

    def region(self, j: int) -> tuple[tuple[int, int], torch.Tensor, torch.Tensor]:
        """Pair (j-1, j)'s flows on their region: its top-left (y, x) in the frame, forward
        (j-1 -> j on frame j-1's region) and backward (j -> j-1 on frame j's), in pixels."""
        (origin, fwd), (_, bwd) = (
            self._propagator._pair_flow(j - 1, j),
            self._propagator._pair_flow(j, j - 1),
        )
        return origin, fwd, bwd


class PropagatedClip:
    """``(filled frame, remaining mask)`` per ``(frame, mask)`` pair, read lazily and at most
    ``radius`` frames ahead; :meth:`flows` hands the restorer the plate flows already made."""

    def __init__(
        self,
        pairs: Iterable[tuple[np.ndarray, np.ndarray]],
        radius: int = 8,
        flow: str = "dis",
        regional: bool = False,
        camera: bool = False,
    ) -> None:
        self._source = iter(pairs)
        self._ahead: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # read, not yet asked for
        self._read = 0
        self.propagator = Propagator(self._load, None, radius, flow, regional, camera)
        self.flows = self.propagator.flows

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        while self._read <= i:
            pair = next(self._source, None)
            if pair is None:
                break
            if pair[1] is None:
                raise InvalidInput(f"masks: frame {self._read} has no mask; one per frame needed")
            self._ahead[self._read] = pair
            self._read += 1
        return self._ahead.pop(i, None)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        t = 0
        while self.propagator.has(t):
            yield self.propagator.fill(t)
            t += 1


def propagate_clip(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    radius: int = 8,
    flow: str = "dis",
    regional: bool = False,
    camera: bool = False,
) -> PropagatedClip:
    """Propagate a streamed clip: iterate the result for ``(filled frame, remaining mask)``."""
    return PropagatedClip(pairs, radius, flow, regional, camera)


def _bbox(hole: np.ndarray) -> Box | None:
    """The bounding box (y0, x0, y1, x1) of a boolean (H, W) array's set pixels, or None."""
    rows, cols = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1
