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


class Propagator:
    """Fills frame ``t``'s hole from frames ``t - radius .. t + radius`` of a clip.

    ``n_frames`` None: the clip ends where ``load`` first returns None.
    """

    def __init__(
        self, load: Loader, n_frames: int | None = None, radius: int = 8, flow: str = "dis"
    ) -> None:
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
            raise InvalidInput(f"propagate: expected a frame radius >= 0, got {radius!r}")
        if n_frames is not None and (
            isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1
        ):
            raise InvalidInput(f"n_frames: expected an integer >= 1, got {n_frames!r}")
        self.load, self.n_frames, self.radius, self.flow = load, n_frames, radius, flow
        self._frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._flows: dict[tuple[int, int], torch.Tensor] = {}  # (i, j), |i - j| = 1: i -> j
        self._size: tuple[int, int] | None = None

    def fill(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``t`` with its hole filled where another frame shows it, and what is left."""
        if t < 0 or not self.has(t):
            raise InvalidInput(f"frame: expected an index in [0, {self.n_frames}), got {t}")
        self._evict(t)
        frame, mask = self._get(t)
        remaining = torch.from_numpy(mask > HOLE)
        out = torch.from_numpy(np.ascontiguousarray(frame[..., :3], np.float32)).permute(2, 0, 1)
        out = out.clone()
        chains: dict[int, torch.Tensor] = {}  # direction -> flow t -> t + k * direction
        for k in range(1, self.radius + 1):
            if not remaining.any():
                break
            for direction in (1, -1):
                s = t + k * direction
                if s < 0 or not self.has(s):
                    continue
                step = self.plate_flows(s - direction, s)[0]
                prev = chains.get(direction)
                chains[direction] = step if prev is None else flowlib.compose(prev, step)
                self._take(out, remaining, s, chains[direction])
        result = out.permute(1, 2, 0).numpy()
        if frame.shape[2] == 4:  # keep an alpha channel the caller may read the mask from
            result = np.concatenate([result, frame[..., 3:]], axis=2)
        return np.ascontiguousarray(result, np.float32), remaining.numpy().astype(np.float32)

    # -- helpers ------------------------------------------------------------------------------
    def _take(self, out: torch.Tensor, remaining: torch.Tensor, s: int, flow: torch.Tensor) -> None:
        frame, mask = self._get(s)
        src = torch.from_numpy(np.ascontiguousarray(frame[..., :3], np.float32)).permute(2, 0, 1)
        both = torch.cat([src, torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None]])
        sampled, inside = flowlib.warp(both, flow)
        usable = remaining & (inside[0] > 0.5) & (sampled[3] < VISIBLE)
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

    def plate_flows(self, i: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean plate's flows between adjacent frames: i -> j on i's grid, j -> i on j's
        (:func:`warpcore.flow.plate_flow_pair` on the input frames and masks), estimated once."""
        if (i, j) not in self._flows:
            (a, mask_a), (b, mask_b) = self._get(i), self._get(j)
            fwd, bwd = flowlib.plate_flow_pair(a, b, mask_a, mask_b, self.flow)
            self._flows[(i, j)], self._flows[(j, i)] = fwd, bwd
        return self._flows[(i, j)], self._flows[(j, i)]

    def flows(self, j: int, _prev: object = None, _cur: object = None) -> tuple[torch.Tensor, ...]:
        """A restorer ``flow_fn``: the plate flows of pair (j-1, j), which propagating frame j
        has already estimated (within the window, so never evicted before they are asked)."""
        return self.plate_flows(j - 1, j)

    def _evict(self, t: int) -> None:
        lo, hi = t - self.radius, t + self.radius
        for i in [i for i in self._frames if not lo <= i <= hi]:
            del self._frames[i]
        for key in [k for k in self._flows if not (lo <= k[0] <= hi and lo <= k[1] <= hi)]:
            del self._flows[key]


class PropagatedClip:
    """``(filled frame, remaining mask)`` per ``(frame, mask)`` pair, read lazily and at most
    ``radius`` frames ahead; :meth:`flows` hands the restorer the plate flows already made."""

    def __init__(
        self, pairs: Iterable[tuple[np.ndarray, np.ndarray]], radius: int = 8, flow: str = "dis"
    ) -> None:
        self._source = iter(pairs)
        self._ahead: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # read, not yet asked for
        self._read = 0
        self.propagator = Propagator(self._load, None, radius, flow)
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
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], radius: int = 8, flow: str = "dis"
) -> PropagatedClip:
    """Propagate a streamed clip: iterate the result for ``(filled frame, remaining mask)``."""
    return PropagatedClip(pairs, radius, flow)
