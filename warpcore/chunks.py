"""One long shot in parallel: chunks of K frames, each warmed up by O overlap frames.

The GP noise of frame j depends only on frame 0's field and the composed flow 0 -> j
(``warps.GPWarper``), so a chunk that starts at frame s gets exactly the sequential run's noise
once its warper has composed the flows of frames 1..s-1 (:meth:`ClipRestorer.start_at`). Only
the guidance needs the previous frame's estimates: a chunk first runs the O frames before s
(the overlap, outputs dropped) to re-establish that chain, then delivers frames s..s+K-1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from warpcore.errors import InvalidInput
from warpcore.request import RestoreRequest
from warpcore.restore import padded_input, padded_size, pair_flows

# Overlap, from the seam cost (warping error of the chunked run over the sequential run's at
# each seam and the frame after; motion-sr + motion-inpaint, 32 frames, 64 px; the same for
# K = 4, 8, 16): overlap 0: +38%, 1: +5%, 2: +0.3-0.5%, 4: 0. Over the whole clip, overlap 2
# costs +0.03% (K 16) to +0.16% (K 4). Overlap 2 makes a seam all but free at half the compute
# of overlap 4. The chunk size K is then set by parallel efficiency alone (measured start-up
# of a chunk: flows fetched, warper fast-forwarded, about 0.3 frame times):
#   K                                     12    14    16    18    20    22    24
#   busy cluster, K / (K + 2.3)          .84   .86   .87   .89   .90   .91   .91
#   one shot alone, mean over N = 24..240 frames on A = 2..8 actors (this plan, FIFO):
#                                        .72   .68   .67   .70   .70   .69   .62
# 18-22 is best on the two together; 20 chosen.
DEFAULT_CHUNK = 20  # frames a chunk delivers
DEFAULT_OVERLAP = 2  # frames run before a chunk's first frame and dropped


@dataclass(frozen=True)
class Chunk:
    """Deliver frames ``[start, stop)``; the model runs from ``warm`` (<= start)."""

    start: int
    stop: int
    warm: int

    def __post_init__(self) -> None:
        if not 0 <= self.warm <= self.start < self.stop:
            raise InvalidInput(f"chunk: expected 0 <= warm <= start < stop, got {self}")

    @property
    def frames(self) -> range:
        return range(self.start, self.stop)


def plan_chunks(
    missing: list[int], size: int, overlap: int, workers: int | None = None
) -> list[Chunk]:
    """Chunks covering the frame indices ``missing`` (sorted, unique): runs of consecutive
    missing frames cut into pieces of at most ``size``; each piece warms up on the ``overlap``
    frames before it (never before frame 0). Frames not listed are never delivered again.

    ``workers``: how many actors run the chunks side by side (None: cut at ``size`` only).
    With 1, each run is one chunk (cutting it would only add overlap frames to run in series).
    When a run needs no more pieces than there are workers, they all run at once: the cuts
    then give every piece the same work (frames run, overlap included), so none finishes
    early and idles; the first piece of a run at frame 0 has no overlap to run and delivers
    up to ``overlap`` frames more than ``size``."""
    if size < 1:
        raise InvalidInput(f"chunk size: expected an integer >= 1, got {size}")
    if overlap < 0:
        raise InvalidInput(f"overlap: expected an integer >= 0, got {overlap}")
    if workers is not None and workers < 1:
        raise InvalidInput(f"workers: expected an integer >= 1, got {workers}")
    if any(b <= a for a, b in zip(missing, missing[1:], strict=False)) or (
        missing and missing[0] < 0
    ):
        raise InvalidInput("missing: expected sorted, unique frame indices >= 0")
    chunks: list[Chunk] = []
    for start, stop in _runs(missing):
        pieces = -(-(stop - start) // size)
        if workers == 1:
            cuts = [start, stop]
        elif workers is not None and pieces <= workers:
            cuts = _balanced_cuts(start, stop, pieces, overlap)
        else:
            cuts = [*range(start, stop, size), stop]
        chunks += [Chunk(a, b, max(0, a - overlap)) for a, b in zip(cuts, cuts[1:], strict=False)]
    return chunks


def _runs(missing: list[int]) -> list[tuple[int, int]]:
    """[start, stop) of each run of consecutive indices."""
    runs: list[tuple[int, int]] = []
    for i in missing:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _balanced_cuts(start: int, stop: int, pieces: int, overlap: int) -> list[int]:
    """Cuts of [start, stop) into ``pieces`` whose work (overlap + frames) is as equal as the
    integers allow; every piece delivers at least one frame."""
    cuts = [start]
    for k in range(pieces, 0, -1):  # the rest of the run shared by the k pieces left
        a = cuts[-1]
        warm = min(overlap, a)
        work = (stop - a) + warm + (k - 1) * overlap  # frames the k pieces still run
        share = -(-work // k)
        cuts.append(min(stop - (k - 1), max(a + 1, a + share - warm)))
    cuts[-1] = stop
    return cuts


def chunkable(request: RestoreRequest) -> str | None:
    """None when a shot can be split into chunks; else why not (it then runs whole, in order,
    on one worker: shots still run in parallel)."""
    if request.noise != "gp":
        return f"noise {request.noise!r}: only gp noise is a function of the composed flow"
    if request.task == "inpaint" and request.crop:
        return "crop inpainting follows the hole through the shot in order"
    if request.task == "inpaint" and request.propagate > 0:
        return "propagation fills each hole from its neighbours in order"
    return None


def flows_between(
    request: RestoreRequest,
    downscale: int,
    prev: tuple[np.ndarray, np.ndarray | None],
    cur: tuple[np.ndarray, np.ndarray | None],
) -> tuple[np.ndarray, np.ndarray]:
    """The flows (forward, backward) (2, H', W') float32 between frames j-1 and j, exactly as a
    sequential :class:`ClipRestorer` of a model with ``downscale`` estimates them (on the padded
    input at output resolution); computed once per shot and given to every chunk."""
    scale = request.scale if request.task == "upscale" else 1
    pad_in = padded_size(prev[0].shape[:2], downscale)
    a, hole_a = padded_input(prev[0], prev[1], request.task, pad_in, scale)
    b, hole_b = padded_input(cur[0], cur[1], request.task, pad_in, scale)
    fwd, bwd = pair_flows(a, b, hole_a, hole_b, request.flow, request.camera_motion)
    return fwd.numpy().astype(np.float32), bwd.numpy().astype(np.float32)


def as_flow_fn(flows: dict[int, tuple[np.ndarray, np.ndarray]]):  # noqa: ANN201
    """A ``ClipRestorer`` ``flow_fn`` that returns the given flows of frame j (index j)."""

    def flow_fn(index: int, _prev: torch.Tensor, _cur: torch.Tensor):  # noqa: ANN202
        if index not in flows:
            raise InvalidInput(f"flows: frame {index} has no flows; the chunk was given others")
        fwd, bwd = flows[index]
        return torch.from_numpy(np.array(fwd)), torch.from_numpy(np.array(bwd))

    return flow_fn


class FlowPairs(Sequence):
    """``flows[j]`` for j in ``frames`` as torch (forward, backward), converted when read: a
    chunk at frame 1000 of a 1080p shot holds no 1000 copies (33 GB) of flows it may never
    compose (:meth:`ClipRestorer.start_at`)."""

    def __init__(self, flows: Mapping[int, tuple[np.ndarray, np.ndarray]], frames: range) -> None:
        self.flows, self.frames = flows, frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        fwd, bwd = self.flows[self.frames[i]]  # (an index past the end raises IndexError)
        return torch.from_numpy(np.array(fwd)), torch.from_numpy(np.array(bwd))


def run_chunk(
    restorer: object,
    chunk: Chunk,
    source: object,
    flows: dict[int, tuple[np.ndarray, np.ndarray]],
    **process_kwargs: object,
):  # noqa: ANN201
    """Run ``chunk`` on a fresh ``restorer`` (made with ``flow_fn=as_flow_fn(flows)``): yields
    ``(index, frame)`` from ``chunk.warm`` on; the caller keeps those >= ``chunk.start``.
    ``source(i)`` -> (frame, mask); ``flows[j]`` = (forward, backward) of frame j."""
    if chunk.warm > 0:
        restorer.start_at(  # type: ignore[attr-defined]
            chunk.warm,
            source(chunk.warm - 1),  # type: ignore[operator]
            FlowPairs(flows, range(1, chunk.warm)),
        )
    for index in range(chunk.warm, chunk.stop):
        frame, mask = source(index)  # type: ignore[operator]
        yield index, restorer.process(index, frame, mask, **process_kwargs)  # type: ignore[attr-defined]
