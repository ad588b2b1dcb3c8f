"""Whole-clip restoration (Algorithm 1) on exact models: equivariance, guidance, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data, transform

from warpcore.errors import Cancelled, InvalidInput
from warpcore.flow import warp
from warpcore.models.gaussian import GaussianDenoiser
from warpcore.request import RestoreRequest
from warpcore.restore import ClipRestorer, restore_clip

GP_PIXELS = 2.0 / math.pi  # the GP noise length scale 2 / (pi * res), in pixels of the grid


def shifting_clip(n: int, size: int, dx: int, dy: int = 0) -> list[np.ndarray]:
    """Frames of a real photograph moving by (dx, dy) whole pixels per frame (exact)."""
    photo = transform.resize(data.astronaut(), (128, 128), anti_aliasing=True).astype(np.float32)
    y0, x0 = 40, 40
    return [
        photo[y0 - j * dy : y0 - j * dy + size, x0 - j * dx : x0 - j * dx + size] for j in range(n)
    ]


def exact_flows(dx: float, dy: float = 0.0):
    def flow_fn(_j: int, prev: torch.Tensor, cur: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, w = prev.shape[-2:]
        fwd = torch.empty(2, h, w)
        fwd[0], fwd[1] = dx, dy
        return fwd, -fwd

    return flow_fn


def warping_errors(frames: list[np.ndarray], dx: float, dy: float = 0.0) -> list[float]:
    """Mean squared difference of each output and the previous one, over pixels in frame."""
    flow_fn = exact_flows(dx, dy)
    errs = []
    for prev, cur in zip(frames, frames[1:], strict=False):
        p = torch.from_numpy(prev).permute(2, 0, 1)
        c = torch.from_numpy(cur).permute(2, 0, 1)
        warped, valid = warp(c, flow_fn(1, p, c)[0])
        errs.append(float(((warped - p) ** 2 * valid).sum() / (valid.sum() * 3)))
    return errs


def moving_masks(n: int, size: int, dx: int) -> list[np.ndarray]:
    masks = []
    for j in range(n):
        m = np.zeros((size, size), np.float32)
        m[10:22, 8 + j * dx : 20 + j * dx] = 1.0
        masks.append(m)
    return masks


def run(request: RestoreRequest, model, frames, masks=None, flow_fn=None) -> list[np.ndarray]:
    return [f for _, f in restore_clip(request, model, frames, masks, flow_fn=flow_fn)]


@pytest.mark.parametrize("noise,equivariant", [("gp", True), ("fixed", False), ("resample", False)])
def test_gp_noise_carries_equivariance_through_the_sampler(noise: str, equivariant: bool) -> None:
    # Paper A.3: with an equivariant denoiser (the Gaussian posterior mean for GP data under GP
    # noise of the same kernel is pointwise, hence exactly equivariant) and GP-warped noise,
    # the whole sampling chain is equivariant: the warping error vanishes without guidance.
    model = GaussianDenoiser(data_lengthscale=GP_PIXELS, noise_lengthscale=GP_PIXELS)
    frames, masks = shifting_clip(4, 32, dx=2), moving_masks(4, 32, dx=2)
    request = RestoreRequest(task="inpaint", model="gaussian", noise=noise, guidance=0.0, steps=8)
    errs = warping_errors(run(request, model, frames, masks, exact_flows(2)), dx=2)
    if equivariant:
        assert max(errs) < 1e-6, errs
    else:
        assert min(errs) > 1e-3, errs


class PositionalBias:
    """A deliberately non-equivariant denoiser: the Gaussian posterior plus a pattern fixed to
    the screen. Within each scale x scale block the pattern sums to zero (invisible to low-res
    consistency, like the texture sticking of a real model); its sign is random per block."""

    def __init__(self, base: GaussianDenoiser, amplitude: float, scale: int) -> None:
        self.base, self.amplitude, self.scale = base, amplitude, scale
        for name in (
            "name",
            "channels",
            "downscale",
            "sigma_min",
            "sigma_max",
            "device",
            "dtype",
            "tasks",
            "prepare",
            "start",
            "encode",
            "decode",
        ):
            setattr(self, name, getattr(base, name))

    def pattern(self, h: int, w: int) -> torch.Tensor:
        xs = torch.arange(w)
        within = torch.where(xs % self.scale < self.scale // 2, 1.0, -1.0)
        signs = (
            torch.randint(
                0, 2, (h // self.scale, w // self.scale), generator=torch.Generator().manual_seed(0)
            )
            * 2.0
            - 1.0
        )
        blocks = signs.repeat_interleave(self.scale, 0).repeat_interleave(self.scale, 1)
        return within * blocks

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, prepared) -> torch.Tensor:
        bias = self.amplitude * self.pattern(*x.shape[-2:]).to(x)
        return self.base(x, sigma, prepared) + bias


def downsample(frame: np.ndarray, scale: int) -> np.ndarray:
    h, w = frame.shape[0] // scale, frame.shape[1] // scale
    return frame.reshape(h, scale, w, scale, 3).mean(axis=(1, 3))


@pytest.mark.parametrize(
    "rule,strength,grad",
    [
        ("newton", 0.5, "output"),
        ("dps", 10.0, "output"),
        ("dps", 10.0, "network"),
        ("band", 0.8, "output"),
    ],
)
def test_guidance_removes_the_flicker_of_a_non_equivariant_model(
    rule: str, strength: float, grad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The toy model adds its bias at every sigma, where a real denoiser tends to the identity
    # as sigma -> 0: the sampler's skipped call at sigma_min (IDENTITY_SIGMA) would drop it from
    # the last step. This test is about the guidance step on a model called at every step.
    monkeypatch.setattr("warpcore.sampler.IDENTITY_SIGMA", 0.0)
    scale, dx = 4, 1  # the low-res video pans one low-res pixel (4 output pixels) a frame
    hi = shifting_clip(5, 64, dx=dx * scale)
    low = [downsample(f, scale) for f in hi]
    model = PositionalBias(GaussianDenoiser(), amplitude=0.1, scale=scale)
    results = {}
    # The paper's DPS step has a fixed length (2 lambda in L2 over the whole grid), so on this
    # 64x64x3 grid it needs a larger lambda than the paper's 1 on 128x128x4 SDXL latents.
    for guidance in (0.0, strength):
        request = RestoreRequest(
            task="upscale",
            scale=scale,
            model="gaussian",
            noise="gp",
            guidance=guidance,
            guidance_rule=rule,
            guidance_grad=grad,
            steps=12,
            # The flow check (tests/test_flow.py) rightly skips the columns where bicubic's
            # border makes the conditions differ; this test is about the step on exact flows.
            flow_check=0.0,
        )
        out = run(request, model, low, flow_fn=exact_flows(dx * scale))
        fidelity = max(
            float(np.abs(downsample(o, scale) - lo).mean()) for o, lo in zip(out, low, strict=True)
        )
        results[guidance] = (np.mean(warping_errors(out, dx * scale)), fidelity)
    (unguided, fid0), (guided, fid1) = results[0.0], results[strength]
    # Measured at 12 steps: newton 0.0030, dps 0.0042 vs 0.072 unguided; the issue asks 10x.
    assert guided < unguided / 10, results
    assert fid1 <= fid0 + 0.01, results  # the low-res frames are matched as well as before


def test_guidance_does_not_follow_a_flow_that_scatters() -> None:
    """Where the flow scatters by pixels (DIS on motion blur) guidance is skipped, even where
    the other checks pass it: flat frames (the photometric check passes any flow there), the
    occlusion check off. Fresh noise each frame gives the guidance something to remove; it does
    so where the flow is coherent (zero) and leaves the scattered square as unguided."""
    scale, low = 4, 16
    frames = [np.full((low, low, 3), 0.5, np.float32) for _ in range(3)]
    size = low * scale
    scatter = torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(0)) * 3.0

    def flow_fn(_j: int, prev: torch.Tensor, cur: torch.Tensor) -> tuple[torch.Tensor, ...]:
        fwd = torch.zeros(2, size, size)
        fwd[:, 16:48, 16:48] = scatter
        return fwd, -fwd

    outs = {}
    for guidance in (0.0, 0.8):
        request = RestoreRequest(
            task="upscale", scale=scale, model="gaussian", noise="resample", steps=4,
            guidance=guidance, guidance_rule="band", occlusion_mask=False,
        )  # fmt: skip
        outs[guidance] = run(request, GaussianDenoiser(), frames, flow_fn=flow_fn)
    for unguided, guided in zip(outs[0.0][1:], outs[0.8][1:], strict=True):
        moved = np.abs(guided - unguided).mean(-1)
        # inside the square (its 2 px box rim and a 4 px block off): measured 2e-5 at most,
        # 0.19 when the scattered flow is followed; where the flow is coherent: 0.06-0.07
        assert moved[24:40, 24:40].max() < 1e-3
        assert moved[:12].mean() > 0.01 and moved[52:].mean() > 0.01


def test_same_request_same_frames_and_resume_is_bit_identical() -> None:
    model = GaussianDenoiser()
    frames, masks = shifting_clip(4, 32, dx=1), moving_masks(4, 32, dx=1)
    request = RestoreRequest(
        task="inpaint", model="gaussian", noise="gp", guidance=1.0, steps=4, seed=7
    )
    a = run(request, model, frames, masks, exact_flows(1))
    b = run(request, model, frames, masks, exact_flows(1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    first = ClipRestorer(request, model, (32, 32), flow_fn=exact_flows(1))
    for i in range(2):
        first.process(i, frames[i], masks[i])
    resumed = ClipRestorer(request, model, (32, 32), flow_fn=exact_flows(1))
    resumed.load_state_dict({k: v.clone() for k, v in first.state_dict().items()})
    for i in range(2, 4):
        assert np.array_equal(resumed.process(i, frames[i], masks[i]), a[i])


def test_cancel_keeps_state_and_frames_in_order() -> None:
    model = GaussianDenoiser()
    frames, masks = shifting_clip(2, 32, dx=1), moving_masks(2, 32, dx=1)
    request = RestoreRequest(task="inpaint", model="gaussian", steps=4)
    r = ClipRestorer(request, model, (32, 32), flow_fn=exact_flows(1))
    with pytest.raises(Cancelled):
        r.process(0, frames[0], masks[0], should_stop=lambda: True)
    assert r.next_index == 0
    r.process(0, frames[0], masks[0])
    with pytest.raises(InvalidInput, match="in order"):
        r.process(0, frames[0], masks[0])


def test_progress_events_cover_every_step() -> None:
    model = GaussianDenoiser()
    frames = shifting_clip(2, 16, dx=1)
    events = []
    request = RestoreRequest(task="upscale", scale=2, model="gaussian", steps=3)
    low = [downsample(f, 2) for f in frames]
    list(
        restore_clip(
            request, model, low, n_frames=2, on_event=events.append, flow_fn=exact_flows(1)
        )
    )
    progress = [(e.frame, e.step) for e in events if e.kind == "progress"]
    assert progress == [(f, s) for f in range(2) for s in range(3)]
    assert [e.kind for e in events if e.kind != "progress"] == ["frame", "frame", "finished"]
    assert events[0].eta_s is not None and events[-2].kind == "frame"


@pytest.mark.parametrize(
    "frames,masks,match",
    [
        ([np.zeros((32, 32, 3), np.float32), np.zeros((16, 32, 3), np.float32)], None, "one size"),
        ([np.full((32, 32, 3), np.nan, np.float32)], None, "NaN"),
        ([np.zeros((32, 32, 3), np.float32)], [np.zeros((16, 16), np.float32)], "shape"),
        ([np.zeros((32, 32, 3), np.float32)], [np.ones((32, 32), np.float32)], "whole frame"),
        ([], [], "no frames"),
    ],
)
def test_bad_clips_raise_clear_errors(frames, masks, match) -> None:
    request = RestoreRequest(task="inpaint", model="gaussian", steps=2)
    masks = masks if masks is not None else [np.zeros((32, 32), np.float32)] * len(frames)
    if len(frames) == 2:
        masks[0] = masks[0].copy()
        masks[0][0, 0] = 1
    with pytest.raises(InvalidInput, match=match):
        run(request, GaussianDenoiser(), frames, masks, exact_flows(0))


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"steps": 0}, "steps"),
        ({"scale": 3, "task": "upscale"}, "scale"),
        ({"noise": "pink"}, "noise"),
        ({"guidance": float("nan")}, "guidance"),
        ({"guidance_range": (0.5, 0.2)}, "guidance_range"),
        ({"camera_motion": "yes"}, "camera_motion: expected true or false"),
        ({"crop": 1}, "crop: expected true or false"),
    ],
)
def test_bad_requests_fail_before_any_compute(fields: dict, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        RestoreRequest(**{"task": "inpaint", **fields})


def test_request_round_trips_and_keys_ignore_the_device() -> None:
    r = RestoreRequest(task="upscale", scale=8, guidance_range=(0.0, 0.5))
    assert RestoreRequest.from_dict(r.to_dict()) == r
    assert (
        RestoreRequest(task="upscale", scale=8, guidance_range=(0.0, 0.5), device="cuda").key()
        == r.key()
    )
    assert RestoreRequest(task="upscale", scale=8, seed=1).key() != r.key()
    assert RestoreRequest(task="upscale", scale=8, camera_motion=True).key() != r.key()
    # the task's default, measured (docs/guidance.md): on for inpainting, off for upscaling
    assert RestoreRequest(task="inpaint").camera_motion is True and r.camera_motion is False
    with pytest.raises(InvalidInput, match="unknown fields"):
        RestoreRequest.from_dict({"task": "inpaint", "colour": "red"})


def test_a_shot_whose_noise_cannot_reach_the_output_never_warps_it(
    builtin, builtin_sr, monkeypatch
) -> None:
    """The built-in upscale default is one step at sigma_min from its start: the sampler drops
    the noise there, so the restorer does not warp a GP field for it (3 of a 1080p frame's 5 s)
    and the output is the same as with the field; a removal run (steps above sigma_min) still
    warps one every frame."""
    from warpcore import restore, warps

    rng = np.random.default_rng(3)
    frames = [rng.random((12, 16, 3), dtype=np.float32) for _ in range(3)]
    request = RestoreRequest(task="upscale", scale=4, model="builtin", propagate=0)

    hole = np.zeros((12, 16), np.float32)
    hole[3:8, 4:10] = 1.0

    def run(model, req: RestoreRequest) -> tuple[list[np.ndarray], list[str]]:
        calls: list[str] = []
        with monkeypatch.context() as m:
            for name in ("first", "next"):
                real = getattr(warps._Base, name)
                m.setattr(
                    warps._Base,
                    name,
                    lambda self, *a, _real=real, _n=name: calls.append(_n) or _real(self, *a),
                )
            restorer = ClipRestorer(req, model, (12, 16), 3)
            mask = hole if req.task == "inpaint" else None
            return [restorer.process(j, f, mask) for j, f in enumerate(frames)], calls

    with monkeypatch.context() as m:  # as before: the field warped every frame, then dropped
        m.setattr(restore, "noise_reaches_output", lambda sigmas, start: True)
        expected, calls = run(builtin_sr, request)
    assert calls == ["first", "next", "next"]
    outs, calls = run(builtin_sr, request)
    assert calls == []
    for out, ref in zip(outs, expected, strict=True):
        np.testing.assert_allclose(out, ref, atol=1e-6)
    removal = RestoreRequest(task="inpaint", model="builtin", propagate=0, crop=False)
    _, calls = run(builtin, removal)
    assert calls == ["first", "next", "next"]
