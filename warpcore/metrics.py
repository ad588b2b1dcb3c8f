"""Temporal-consistency and restoration metrics, streamed frame by frame (constant memory).

Self-warping errors (paper 4.2, METHOD.md section 6): for every frame j >= 1, the mean squared
difference between output frame j and an earlier output frame warped onto j's grid by the
flow of the INPUT video, over the pixels whose sample point stays in frame:
- ``warp_pixel_prev``: ``mean |O_j - warp(O_{j-1}, B_j)|^2``, B_j = flow(input j -> j-1);
- ``warp_pixel_first``: ``mean |O_j - warp(O_0, Phi_j)|^2``, Phi_j = compose(B_j, Phi_{j-1}),
  the consecutive backward flows composed back to frame 0;
- ``warp_latent_prev`` / ``warp_latent_first``: the same on encoded frames, with the flows
  area-averaged to the latent grid (METHOD.md section 4). Without a VAE the encoder is the
  documented stand-in ``latent_proxy`` (an 8x8 area average of RGB), labelled in results.
Means are over pixels and channels, so a flicker of +-d gives d^2.

E_warp (Lai et al. 2018): ``sum M |O_{j-1} - warp(O_j, F_j)|^2 / sum M`` on frame j-1's grid,
F_j = flow(input j-1 -> j), M = :func:`warpcore.flow.occlusion_mask` (F_j, B_j); the squared
difference is the channel mean (Lai's code sums the 3 channels: theirs = 3x ours).

Restoration, against a reference: MSE and PSNR (capped at 100 dB) over the masked pixels when
a mask is given (1 = filled region), else the whole frame; SSIM is skimage's SSIM map
(7x7 Gaussian-free window, data range 1) averaged over the masked pixels (or all pixels).

With a mask, the input flows inside it are replaced by a harmonic fill of their surroundings
(:func:`warpcore.flow.fill_masked`, dilated 4 px): the output there shows the clean plate,
which moves with the background, not with the removed object.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from warpcore.errors import Cancelled, InvalidInput
from warpcore.flow import (
    FLOW_METHODS,
    compose,
    fill_masked,
    flow_pair,
    occlusion_mask,
    resize_flow,
    to_model_grid,
    warp,
)
from warpcore.progress import Event, EventSink, ShouldStop, never_stop, no_events

Encoder = Callable[[torch.Tensor], torch.Tensor]
WARP_KEYS = ("warp_pixel_prev", "warp_pixel_first", "warp_latent_prev", "warp_latent_first")
E_WARP_KEY = "e_warp"
REFERENCE_KEYS = ("mse", "psnr", "ssim")
PSNR_CAP_DB = 100.0
MASK_FLOW_DILATE = 4


def latent_proxy(x: torch.Tensor) -> torch.Tensor:
    """Stand-in encoder when no VAE is given: (N, 3, H, W) -> (N, 3, H/8, W/8) area average."""
    return F.avg_pool2d(x, 8)


def _frame(frame: object, name: str) -> torch.Tensor:
    """torch (3, H, W) float32 from numpy (H, W, 3|4) or torch (3|4, H, W); alpha dropped."""
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[2] not in (3, 4):
            raise InvalidInput(f"{name}: expected numpy (H, W, 3|4), got {frame.shape}")
        t = torch.from_numpy(np.ascontiguousarray(frame[..., :3], dtype=np.float32))
        t = t.permute(2, 0, 1)
    elif isinstance(frame, torch.Tensor):
        if frame.dim() != 3 or frame.shape[0] not in (3, 4):
            raise InvalidInput(f"{name}: expected torch (3, H, W), got {tuple(frame.shape)}")
        t = frame[:3].detach().to("cpu", torch.float32)
    else:
        raise InvalidInput(f"{name}: expected a numpy (H, W, 3) or torch (3, H, W) frame")
    if t.shape[1] < 1 or t.shape[2] < 1 or not bool(torch.isfinite(t).all()):
        raise InvalidInput(f"{name}: expected a non-empty frame of finite values in [0, 1]")
    return t.contiguous()


def _mask(mask: object, shape: tuple[int, int]) -> torch.Tensor:
    if torch.is_tensor(mask):
        m = mask.detach().to("cpu", torch.float32)  # scored on the CPU, like the frames
    else:
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))
    m = m[0] if m.dim() == 3 and m.shape[0] == 1 else m
    if tuple(m.shape) != tuple(shape):
        raise InvalidInput(f"mask: expected size (H, W) = {tuple(shape)}, got {tuple(m.shape)}")
    return (m > 0.5).float()


def _masked_mean(diff2: torch.Tensor, weight: torch.Tensor) -> float | None:
    """Weighted mean of ``diff2`` (C, H, W) over channels, ``weight`` (1, H, W); None if empty."""
    total = float(weight.sum())
    if total <= 0:
        return None
    return float((diff2.mean(0, keepdim=True) * weight).sum()) / total


def restoration_scores(
    output: object, reference: object, mask: object | None = None
) -> dict[str, float | None]:
    """MSE, PSNR (dB, capped at 100) and SSIM of one frame, over ``mask`` if given."""
    out, ref = _frame(output, "output"), _frame(reference, "reference")
    if out.shape != ref.shape:
        raise InvalidInput(
            f"reference: size {tuple(ref.shape[1:])} differs from the output's "
            f"{tuple(out.shape[1:])}; expected the same size"
        )
    h, w = out.shape[1:]
    weight = _mask(mask, (h, w))[None] if mask is not None else torch.ones(1, h, w)
    mse = _masked_mean((out - ref) ** 2, weight)
    if mse is None:
        return {"mse": None, "psnr": None, "ssim": None}
    psnr = PSNR_CAP_DB if mse <= 10 ** (-PSNR_CAP_DB / 10) else -10.0 * math.log10(mse)
    return {"mse": mse, "psnr": psnr, "ssim": _ssim(out, ref, weight)}


def _ssim(out: torch.Tensor, ref: torch.Tensor, weight: torch.Tensor) -> float | None:
    from skimage.metrics import structural_similarity

    side = min(out.shape[1:])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return None
    _, smap = structural_similarity(
        out.permute(1, 2, 0).numpy(),
        ref.permute(1, 2, 0).numpy(),
        win_size=win,
        channel_axis=2,
        data_range=1.0,
        full=True,
    )
    return _masked_mean(torch.from_numpy(smap).permute(2, 0, 1), weight)


class ClipScorer:
    """Streaming scorer: ``add()`` one (output, input[, reference, mask]) frame at a time.

    Holds only the previous and first frames' state, so any clip length scores in constant
    memory. ``encode``: a callable (N, 3, H, W) -> (N, C, H/factor, W/factor) in latent space
    (e.g. a VAE encoder) and ``factor`` its downscale; default :func:`latent_proxy` (factor 8).
    Frames are cropped to a multiple of ``factor`` for the latent metrics. The output may be
    larger than the input (super-resolution): input flows are resized to the output's grid.
    """

    def __init__(
        self,
        flow: str = "dis",
        encode: Encoder | None = None,
        factor: int = 8,
        encoder_name: str | None = None,
    ) -> None:
        if flow not in FLOW_METHODS:
            raise InvalidInput(f"flow: got {flow!r}; accepted: {', '.join(FLOW_METHODS)}")
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise InvalidInput(f"factor: expected a positive integer (8 for SDXL), got {factor!r}")
        self.flow_method = flow
        self.encode = encode or latent_proxy
        self.factor = factor if encode is not None else 8
        self.latent_name = encoder_name or ("latent_proxy" if encode is None else "vae")
        self.per_frame: dict[str, list[float | None]] = {}
        self._prev: dict[str, Any] | None = None  # previous frame's input/output/latent/mask
        self._first: dict[str, Any] | None = None  # frame 0's output and latent
        self._phi: torch.Tensor | None = None  # flow from the previous frame back to frame 0
        # The per-pixel map behind the last frame's ``warp_pixel_prev``: (1, H, W), the channel
        # mean of |O_j - warp(O_{j-1}, B_j)|^2, 0 where the sample point leaves the frame
        # (the flicker heat map the panel shows); None on frame 0.
        self.error_map: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.per_frame.get(WARP_KEYS[0], []))

    def add(
        self,
        output: object,
        input: object,
        reference: object | None = None,
        mask: object | None = None,
    ) -> dict[str, float | None]:
        """Score the next frame; returns its values (warping metrics are None on frame 0)."""
        out, inp = _frame(output, "output"), _frame(input, "input")
        if self._prev is not None and out.shape != self._prev["out"].shape:
            raise InvalidInput(f"output: frame {len(self)} changed size to {tuple(out.shape)}")
        size = tuple(out.shape[1:])
        m = _mask(mask, size) if mask is not None else None
        row: dict[str, float | None] = dict.fromkeys((*WARP_KEYS, E_WARP_KEY))
        lat = self._latent(out)
        self.error_map = None
        if self._prev is None:
            self._first = {"out": out, "lat": lat}
        else:
            row.update(self._pair_scores(out, inp, lat, m))
        if reference is not None:
            row.update(restoration_scores(out, reference, m))
        self._prev = {"out": out, "in": inp, "lat": lat, "mask": m}
        n = len(self)
        for key, value in row.items():
            self.per_frame.setdefault(key, [None] * n).append(value)
        return row

    def _latent(self, out: torch.Tensor) -> torch.Tensor:
        h, w = (s // self.factor * self.factor for s in out.shape[1:])
        if h == 0 or w == 0:
            return torch.zeros(0)
        with torch.no_grad():
            return self.encode(out[None, :, :h, :w])[0].float().cpu()

    def _input_flows(
        self, inp: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        prev_in = self._prev["in"]  # type: ignore[index]
        if prev_in.shape != inp.shape:
            raise InvalidInput(f"input: frame {len(self)} changed size to {tuple(inp.shape)}")
        fwd, bwd = flow_pair(prev_in, inp, self.flow_method)
        fwd, bwd = resize_flow(fwd, size), resize_flow(bwd, size)
        prev_mask = self._prev["mask"]  # type: ignore[index]
        if mask is not None and prev_mask is not None:
            fwd = fill_masked(fwd, prev_mask, dilate=MASK_FLOW_DILATE)
            bwd = fill_masked(bwd, mask, dilate=MASK_FLOW_DILATE)
        return fwd, bwd

    def _pair_scores(
        self, out: torch.Tensor, inp: torch.Tensor, lat: torch.Tensor, mask: torch.Tensor | None
    ) -> dict[str, float | None]:
        prev, first = self._prev, self._first
        assert prev is not None and first is not None  # internal: set by the first add()
        fwd, bwd = self._input_flows(inp, tuple(out.shape[1:]), mask)
        self._phi = bwd if self._phi is None else compose(bwd, self._phi)
        row: dict[str, float | None] = {}
        for key, flow, src in (("prev", bwd, prev), ("first", self._phi, first)):
            warped, valid = warp(src["out"], flow)
            row[f"warp_pixel_{key}"] = _masked_mean((out - warped) ** 2, valid)
            if key == "prev":
                self.error_map = ((out - warped) ** 2).mean(0, keepdim=True) * valid
            row[f"warp_latent_{key}"] = self._latent_error(lat, src["lat"], flow)
        occ = occlusion_mask(fwd, bwd)
        warped_next, _ = warp(out, fwd)
        row[E_WARP_KEY] = _masked_mean((prev["out"] - warped_next) ** 2, occ)
        return row

    def _latent_error(
        self, lat: torch.Tensor, src_lat: torch.Tensor, flow: torch.Tensor
    ) -> float | None:
        if lat.numel() == 0:
            return None
        f = self.factor
        h, w = lat.shape[1] * f, lat.shape[2] * f
        warped, valid = warp(src_lat, to_model_grid(flow[:, :h, :w].contiguous(), f))
        return _masked_mean((lat - warped) ** 2, valid)

    def summary(self) -> dict[str, Any]:
        """Means over the frames that have each value, plus the per-frame lists."""
        means = {}
        for key, values in self.per_frame.items():
            present = [v for v in values if v is not None]
            means[key] = float(np.mean(present)) if present else None
        return {
            "frames": len(self),
            "flow": self.flow_method,
            "latent": self.latent_name,
            "latent_factor": self.factor,
            "mean": means,
            "per_frame": {k: list(v) for k, v in self.per_frame.items()},
        }


def score_clip(
    outputs: Iterable[object],
    inputs: Iterable[object],
    references: Iterable[object] | None = None,
    masks: Iterable[object] | None = None,
    scorer: ClipScorer | None = None,
    on_event: EventSink = no_events,
    should_stop: ShouldStop = never_stop,
    n_frames: int = 0,
) -> dict[str, Any]:
    """Feed whole clips (iterables, streamed) through a :class:`ClipScorer`; its summary.

    Clips must have the same length; the first to run out ends scoring with an error.
    """
    scorer = ClipScorer() if scorer is None else scorer
    streams = [iter(outputs), iter(inputs)]
    streams += [iter(references) if references is not None else None]
    streams += [iter(masks) if masks is not None else None]
    names = ("output", "input", "reference", "mask")
    while True:
        if should_stop():
            raise Cancelled(f"metrics: cancelled after {len(scorer)} frames")
        items = [next(s, StopIteration) if s is not None else None for s in streams]
        ended = [n for n, it in zip(names, items, strict=True) if it is StopIteration]
        if ended:
            if len(ended) != sum(s is not None for s in streams):
                given = [n for n, s in zip(names, streams, strict=True) if s is not None]
                raise InvalidInput(
                    f"{', '.join(ended)}: ended after {len(scorer)} frames while "
                    f"{', '.join(n for n in given if n not in ended)} went on; "
                    "expected clips of the same length"
                )
            break
        scorer.add(*items)
        on_event(Event("frame", frame=len(scorer) - 1, n_frames=n_frames))
    return scorer.summary()
