"""Chunks of a long shot (warpcore/chunks.py): the plan, and a chunk's noise = the sequential
run's noise (exact frames with guidance off), fast-forwarded warper state bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data, transform

from warpcore.chunks import Chunk, as_flow_fn, chunkable, flows_between, plan_chunks, run_chunk
from warpcore.errors import InvalidInput
from warpcore.models import load_denoiser
from warpcore.request import RestoreRequest
from warpcore.restore import ClipRestorer
from warpcore.warps import fast_forward, make_warper


def moving_clip(n: int, size: int = 16) -> list[np.ndarray]:
    """A photograph panning by a sub-pixel-ish, varying amount (so flows are not trivial)."""
    photo = transform.resize(data.astronaut(), (96, 96), anti_aliasing=True).astype(np.float32)
    return [
        np.ascontiguousarray(photo[30 + j : 30 + j + size, 20 + 2 * j : 20 + 2 * j + size])
        for j in range(n)
    ]


def test_plan_chunks_covers_missing_frames_once() -> None:
    chunks = plan_chunks([0, 1, 2, 3, 4, 5, 6, 9, 10], size=3, overlap=2)
    assert chunks == [Chunk(0, 3, 0), Chunk(3, 6, 1), Chunk(6, 7, 4), Chunk(9, 11, 7)]
    delivered = [i for c in chunks for i in c.frames]
    assert delivered == [0, 1, 2, 3, 4, 5, 6, 9, 10]
    with pytest.raises(InvalidInput, match="chunk size"):
        plan_chunks([0], 0, 1)
    with pytest.raises(InvalidInput, match="sorted"):
        plan_chunks([2, 1], 3, 1)


def test_plan_chunks_for_workers_balances_the_work_or_runs_whole() -> None:
    # Two pieces on two workers run at once: equal work (frames run, overlap included), so
    # neither idles at the end: 17 frames, then 2 overlap + 15 (not 16, then 2 + 16).
    two = plan_chunks(list(range(32)), 16, 2, workers=2)
    assert two == [Chunk(0, 17, 0), Chunk(17, 32, 15)]
    assert [c.stop - c.warm for c in two] == [17, 17]
    four = plan_chunks(list(range(5, 64)), 16, 2, workers=4)  # a run that does not start at 0
    work = [c.stop - c.warm for c in four]
    assert max(work) - min(work) <= 1 and [i for c in four for i in c.frames] == list(range(5, 64))
    # One worker: the run whole (cuts would only add overlap frames run in series).
    assert plan_chunks(list(range(32)), 16, 2, workers=1) == [Chunk(0, 32, 0)]
    assert plan_chunks([0, 1, 5, 6], 16, 2, workers=1) == [Chunk(0, 2, 0), Chunk(5, 7, 3)]
    # More pieces than workers: cut at the chunk size, as without workers.
    assert plan_chunks(list(range(9)), 3, 1, workers=2) == plan_chunks(list(range(9)), 3, 1)
    with pytest.raises(InvalidInput, match="workers"):
        plan_chunks([0], 3, 1, workers=0)


def test_fast_forward_is_bit_identical_to_next() -> None:
    gen = torch.Generator().manual_seed(3)
    flows = [
        (torch.randn(2, 12, 10, generator=gen), torch.randn(2, 12, 10, generator=gen))
        for _ in range(4)
    ]
    seq = make_warper("gp", 3, 12, 10, seed=5)
    seq.first()
    for f, b in flows:
        expected = seq.next(f, b)
    ff = make_warper("gp", 3, 12, 10, seed=5)
    ff.first()
    fast_forward(ff, flows[:-1])
    assert torch.equal(ff.next(*flows[-1]), expected)
    assert torch.equal(ff.state_dict()["displacement"], seq.state_dict()["displacement"])


def _sequential(request, denoiser, frames):  # noqa: ANN001, ANN202
    r = ClipRestorer(request, denoiser, frames[0].shape[:2], len(frames))
    return [r.process(i, f) for i, f in enumerate(frames)]


def _chunked(request, denoiser, frames, size, overlap):  # noqa: ANN001, ANN202
    flows = {
        j: flows_between(request, denoiser.downscale, (frames[j - 1], None), (frames[j], None))
        for j in range(1, len(frames))
    }
    out: dict[int, np.ndarray] = {}
    for chunk in plan_chunks(list(range(len(frames))), size, overlap):
        r = ClipRestorer(request, denoiser, frames[0].shape[:2], len(frames), as_flow_fn(flows))
        for i, frame in run_chunk(r, chunk, lambda i: (frames[i], None), flows):
            if i >= chunk.start:
                assert i not in out, "a frame delivered twice"
                out[i] = frame
    return [out[i] for i in range(len(frames))]


def test_chunks_equal_the_sequential_run_without_guidance() -> None:
    denoiser = load_denoiser("builtin", "upscale")
    frames = moving_clip(7)
    request = RestoreRequest(task="upscale", scale=2, guidance=0.0, steps=3, strength=1.0)
    seq = _sequential(request, denoiser, frames)
    chunked = _chunked(request, denoiser, frames, size=3, overlap=1)
    for i in range(7):  # every frame: without guidance nothing crosses frames but the noise
        np.testing.assert_array_equal(chunked[i], seq[i], err_msg=f"frame {i}")
    # and the noise really moves: another seed changes the frames
    other = _sequential(
        RestoreRequest(**{**request.to_dict(), "seed": 1, "guidance_range": (0.0, 1.0)}),
        denoiser,
        frames[:1],
    )
    assert not np.array_equal(other[0], seq[0])


def test_chunkable_names_what_runs_in_order() -> None:
    assert chunkable(RestoreRequest(task="upscale")) is None
    assert "crop" in chunkable(RestoreRequest(task="inpaint", propagate=0))
    assert "propagation" in chunkable(RestoreRequest(task="inpaint", crop=False))
    assert chunkable(RestoreRequest(task="inpaint", crop=False, propagate=0)) is None
    assert "noise" in chunkable(RestoreRequest(task="upscale", noise="integral"))


@pytest.mark.parametrize("strength", [None, 1.0])
def test_a_chunk_composes_the_flows_before_it_only_when_the_noise_reaches_the_output(
    strength: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The built-in upscale default refines its start at sigma_min only, where the sampler
    drops the noise: a chunk at frame s then composes none of the s-1 flow pairs before it
    (at 1080p 0.11 s a pair) and still equals the sequential run; with the noise used it
    composes every one of them."""
    from warpcore.warps import GPWarper

    denoiser = load_denoiser("builtin", "upscale")
    frames = moving_clip(6)
    request = RestoreRequest(task="upscale", scale=2, guidance=0.0, strength=strength)
    seq = _sequential(request, denoiser, frames)
    composed: list[int] = []
    real_compose = GPWarper.compose
    monkeypatch.setattr(
        GPWarper, "compose", lambda self, b: (composed.append(1), real_compose(self, b))[1]
    )
    flows = {
        j: flows_between(request, denoiser.downscale, (frames[j - 1], None), (frames[j], None))
        for j in range(1, len(frames))
    }
    chunk = Chunk(start=5, stop=6, warm=4)
    r = ClipRestorer(request, denoiser, frames[0].shape[:2], len(frames), as_flow_fn(flows))
    out = dict(run_chunk(r, chunk, lambda i: (frames[i], None), flows))
    np.testing.assert_array_equal(out[5], seq[5])
    # warm 4: frames 1..3's pairs fast-forwarded, then frames 4 and 5 warped by next()
    assert len(composed) == (0 if strength is None else 3 + 2)


def test_flow_pairs_convert_on_read_and_stop_at_the_end() -> None:
    from warpcore.chunks import FlowPairs

    reads: list[int] = []

    class Counting(dict):
        def __getitem__(self, j: int):  # noqa: ANN204
            reads.append(j)
            return super().__getitem__(j)

    flows = Counting(
        {j: (np.full((2, 3, 4), j, np.float32), np.zeros((2, 3, 4))) for j in (1, 2, 3)}
    )
    pairs = FlowPairs(flows, range(1, 3))
    assert len(pairs) == 2 and reads == []
    got = [float(f[0, 0, 0]) for f, _ in pairs]
    assert got == [1.0, 2.0] and reads == [1, 2]
    assert isinstance(pairs[0][0], torch.Tensor)
    with pytest.raises(IndexError):
        pairs[2]
