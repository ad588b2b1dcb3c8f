"""The camera's motion between two frames, and dense flows that follow it where it fits.

A dense flow (DIS) is estimated patch by patch: on a camera move it is right to a few tenths
of a pixel, off by more around holes and in flat areas, and never exact. Most of a frame
usually moves with the camera, and the camera's motion has six numbers, fitted on the whole
frame: to a few hundredths of a pixel. Guidance copies a frame's content along the flow, so a
flow 0.3 px off is copied as a 0.3 px misregistration every frame (docs/guidance.md): on the
shift-inpaint suite the restorer's own DIS flows made band guidance 3x worse than none, and
with the camera's motion it is 370x better (docs/guidance.md, "Session 7").

:func:`camera_motion` fits an affine map a -> b in two stages: a similarity by RANSAC to the
dense flow (as :func:`warpcore.flow.fill_masked` does for the plate), then OpenCV's ECC
(``cv2.findTransformECC``: maximises the correlation of the frames' intensities) over the
pixels whose flow that similarity explains within ``INLIER_PX`` (moving objects, holes and
pixels the flow misplaced are left out). :func:`follow_camera` then takes the camera's flow
(forward, and its inverse backward) wherever it moves one frame onto the other as well as the
dense flow does (5 px box mean of the absolute RGB difference, within ``TOLERANCE``), and keeps
the dense flow where it does better (an object moving on its own).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from warpcore.errors import InvalidInput
from warpcore.flow import affine_flow, fit_similarity, mismatch, validate_flow, warp

INLIER_PX = 2.0  # pixels whose dense flow is within this of the similarity steer ECC
MIN_SHARE = 0.2  # fewer known pixels than this share following the camera: no camera motion
WORK_SIDE = 960  # ECC runs on frames area-downscaled to at most this many pixels a side
TOLERANCE = 0.002  # box mean |RGB| the camera's flow may lose to the dense one (0.5 grey levels)
ECC_ITERATIONS = 50
ECC_EPS = 1e-6


def camera_motion(
    a: torch.Tensor, b: torch.Tensor, flow: torch.Tensor, known: torch.Tensor | None = None
) -> np.ndarray | None:
    """The camera's motion from frame ``a`` to ``b``: a 2x3 affine matrix of pixel centres
    (a's pixel -> b's), or None when under ``MIN_SHARE`` of the known pixels follow one.

    ``a``, ``b``: RGB (3, H, W) in [0, 1]; ``flow``: the dense flow a -> b (2, H, W);
    ``known``: (H, W) bool on a's grid, False where a's pixel (or where it lands in b) is a
    hole. ECC's refinement is dropped for the similarity itself when it fails or ends more than
    ``INLIER_PX`` from it at a corner.
    """
    _check_frames(a, b)
    validate_flow(flow, "flow", tuple(a.shape[-2:]))
    h, w = a.shape[-2:]
    dense = flow.detach().cpu().float()
    known_np = np.ones((h, w), bool) if known is None else known.cpu().numpy().astype(bool)
    similarity = fit_similarity(dense.numpy(), known_np)
    if similarity is None:
        return None
    off = dense - torch.from_numpy(affine_flow(similarity, (h, w)))
    inliers = known_np & (off.square().sum(0) < INLIER_PX**2).numpy()
    if inliers.sum() < MIN_SHARE * max(known_np.sum(), 1):
        return None
    # ECC's mask belongs to its input image (b) and moves with it: carry a's inliers over by
    # the similarity, less a margin for its error (ECC reads no pixel next to a hole).
    on_b = cv2.warpAffine(
        inliers.astype(np.uint8), similarity, (w, h), flags=cv2.INTER_NEAREST, borderValue=0
    )  # fmt: skip
    margin = 2 * int(np.ceil(INLIER_PX)) + 1
    on_b = cv2.erode(on_b, np.ones((margin, margin), np.uint8), borderValue=1)
    refined = _ecc(_gray(a), _gray(b), similarity, on_b > 0)
    if refined is None:
        return similarity
    # ECC may wander off in a frame with too little texture: it must stay near the similarity.
    corners = np.array([[0, w - 1, 0, w - 1], [0, 0, h - 1, h - 1], [1, 1, 1, 1]], np.float64)
    if np.abs((refined - similarity) @ corners).max() > INLIER_PX:
        return similarity
    return refined


def follow_camera(
    a: torch.Tensor,
    b: torch.Tensor,
    forward: torch.Tensor,
    backward: torch.Tensor,
    hole: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The flows ``forward`` (a -> b on a's grid) and ``backward`` (b -> a on b's grid), each
    with the camera's flow wherever that moves the other frame onto its own as well as the
    dense flow does (5 px box mean |RGB| difference within ``TOLERANCE``), and inside ``hole``.

    ``hole``: (H, W) bool, the same pixels on both grids (the union of both frames' holes, as
    :func:`warpcore.flow.plate_flow_pair` fills them): left out of the fit and of the
    judgement, and given the camera's flow (the plate behind an object moves with the camera).
    The motion is fitted once, on the forward flow; the backward one is its inverse. Without a
    camera motion (too little of the frame follows one) the flows come back unchanged.
    """
    _check_frames(a, b)
    size = tuple(a.shape[-2:])
    validate_flow(forward, "forward", size)
    validate_flow(backward, "backward", size)
    unjudged = None if hole is None else hole.cpu().bool() | _lands_in(hole, forward)
    matrix = camera_motion(a, b, forward, None if unjudged is None else ~unjudged)
    if matrix is None:
        return forward, backward
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    back_unjudged = None if hole is None else hole.cpu().bool() | _lands_in(hole, backward)
    return (
        _take_camera(a, b, forward, matrix, hole, unjudged),
        _take_camera(b, a, backward, inverse, hole, back_unjudged),
    )


def _take_camera(
    a: torch.Tensor,
    b: torch.Tensor,
    flow: torch.Tensor,
    matrix: np.ndarray,
    hole: torch.Tensor | None,
    unjudged: torch.Tensor | None,
) -> torch.Tensor:
    """``flow`` (a -> b) with ``matrix``'s flow where it fits as well, and on the pixels the
    frames cannot judge: ``unjudged`` (in ``hole``, or where ``flow`` samples it; computed once
    by the caller) and where the camera's flow samples ``hole``."""
    camera = torch.from_numpy(affine_flow(matrix, tuple(a.shape[-2:]))).to(flow)
    fits = mismatch(a, b, camera) <= mismatch(a, b, flow) + TOLERANCE
    if hole is not None and unjudged is not None:
        fits = fits | (unjudged | _lands_in(hole, camera)).to(fits.device)
    return torch.where(fits[None], camera, flow)


def _check_frames(a: torch.Tensor, b: torch.Tensor) -> None:
    """Both frames RGB (3, H, W) of one size."""
    for name, frame in (("a", a), ("b", b)):
        if frame.dim() != 3 or frame.shape[0] != 3:
            got = tuple(frame.shape)
            raise InvalidInput(f"{name}: expected an RGB frame (3, H, W), got {got}")
    if a.shape != b.shape:
        got, want = tuple(b.shape), tuple(a.shape)
        raise InvalidInput(f"b: expected a frame of a's size {want}, got {got}")


def _lands_in(hole: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """(H, W) bool on the flow's grid: where ``flow`` samples the (H, W) ``hole`` of its target."""
    moved, _ = warp(hole.float().cpu().view(1, *flow.shape[1:]), flow.cpu(), padding="border")
    return moved[0] >= 0.5


def _gray(frame: torch.Tensor) -> np.ndarray:
    """float32 (H, W) luma of a (3, H, W) RGB frame (ECC works on one channel)."""
    arr = frame.detach().cpu().float().permute(1, 2, 0).numpy()
    return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)


def _ecc(ga: np.ndarray, gb: np.ndarray, start: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """ECC's affine map of ``gb`` onto ``ga`` from ``start`` over ``mask`` (on b's grid), at most
    ``WORK_SIDE`` px a side (pixel-centre maps converted both ways); None if it fails."""
    h, w = ga.shape
    s = min(1.0, WORK_SIDE / max(h, w))
    to_work = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]])
    m = np.vstack([start, [0, 0, 1]])
    if s < 1:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        ga, gb = (cv2.resize(g, size, interpolation=cv2.INTER_AREA) for g in (ga, gb))
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        m = to_work @ m @ np.linalg.inv(to_work)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, ECC_EPS)
    try:
        _, found = cv2.findTransformECC(
            ga, gb, m[:2].astype(np.float32), cv2.MOTION_AFFINE, criteria,
            mask.astype(np.uint8) * 255, 1,
        )  # fmt: skip
    except cv2.error:  # no convergence, or a degenerate mask: keep the similarity
        return None
    m = np.vstack([found.astype(np.float64), [0, 0, 1]])
    if s < 1:
        m = np.linalg.inv(to_work) @ m @ to_work
    return m[:2] if np.isfinite(m).all() else None
