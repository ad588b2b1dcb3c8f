"""Optical flow between frames, flow composition, occlusion masks and bilinear warping.

Conventions (ARCHITECTURE.md): a flow is (2, H, W), channel 0 = dx, 1 = dy, in pixels;
``flow_ab`` lives on frame a's grid and sends pixel x of a to ``x + flow_ab(x)`` in b, so that
``a(x) ~ b(x + flow_ab(x))`` and ``warp(b, flow_ab)`` resamples b onto a's grid.

Estimation uses OpenCV (DIS presets, Farneback) on 8-bit grayscale, or RAFT when torchvision
and RAFT weights (safetensors) are on this machine. Everything else here is pure torch.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from warpcore.errors import InvalidInput, ModelNotFound

Padding = Literal["zeros", "border"]

FLOW_METHODS = ("dis", "dis-fast", "dis-ultrafast", "farneback", "raft")
_DIS_PRESETS = {
    "dis": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    "dis-fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "dis-ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
}
# Where RAFT weights are looked for (a safetensors state dict of torchvision's raft_large).
RAFT_WEIGHTS_ENV = "WARPDIFF_RAFT_WEIGHTS"
RAFT_DEFAULT_WEIGHTS = Path.home() / ".cache" / "warpdiff" / "raft_large.safetensors"

# Forward-backward consistency constants of Lai et al. 2018 (METHOD.md section 6).
_FB_ALPHA, _FB_BETA = 0.01, 0.5
_MB_ALPHA, _MB_BETA = 0.01, 0.002


def sample_points(flow: torch.Tensor) -> torch.Tensor:
    """Absolute pixel coordinates ``x + flow(x)`` as (..., 2, H, W) with (x, y) order."""
    h, w = flow.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    return flow + torch.stack((xs, ys))


def warp(
    image: torch.Tensor,
    flow: torch.Tensor,
    mode: Literal["bilinear", "nearest"] = "bilinear",
    padding: Padding = "zeros",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``image`` (frame b) at ``x + flow(x)`` for every pixel x of frame a.

    ``image``: (C, H, W) or (N, C, H, W); ``flow``: (2, H', W') or (N, 2, H', W') on frame a's
    grid (H', W' may differ from image's). Returns ``(warped, valid)`` where ``valid`` is
    (1, H', W') / (N, 1, H', W'), 1 where the sample point lies inside frame b
    (between its outer pixel centres).
    Differentiable with respect to ``image``.
    """
    batched = image.dim() == 4
    img = image if batched else image.unsqueeze(0)
    fl = flow if flow.dim() == 4 else flow.unsqueeze(0)
    if fl.shape[0] != img.shape[0]:
        fl = fl.expand(img.shape[0], -1, -1, -1)
    h, w = img.shape[-2:]
    pts = sample_points(fl.to(img.dtype))
    # align_corners=True: -1 and 1 are the centres of the corner pixels.
    gx = pts[:, 0] * (2.0 / max(w - 1, 1)) - 1.0
    gy = pts[:, 1] * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    out = F.grid_sample(img, grid, mode=mode, padding_mode=padding, align_corners=True)
    # Valid only where the bilinear footprint is wholly inside b (no padding mixed in).
    tol = 1e-4
    inside = (
        (pts[:, 0] >= -tol)
        & (pts[:, 0] <= w - 1 + tol)
        & (pts[:, 1] >= -tol)
        & (pts[:, 1] <= h - 1 + tol)
    )
    valid = inside.unsqueeze(1).to(img.dtype)
    return (out, valid) if batched else (out[0], valid[0])


# ---------------------------------------------------------------------------------------------
# Validation


def validate_flow(
    flow: object, name: str = "flow", shape: tuple[int, int] | None = None
) -> torch.Tensor:
    """Check that ``flow`` is a floating, finite torch tensor (2, H, W); return it.

    ``shape``: the (H, W) it must have, if given.
    """
    if not isinstance(flow, torch.Tensor):
        raise InvalidInput(f"{name}: expected a torch tensor (2, H, W), got {type(flow).__name__}")
    if flow.dim() != 3 or flow.shape[0] != 2 or flow.shape[1] < 1 or flow.shape[2] < 1:
        raise InvalidInput(
            f"{name}: expected shape (2, H, W) with H, W > 0 (dx, dy), got {tuple(flow.shape)}"
        )
    if not flow.is_floating_point():
        raise InvalidInput(f"{name}: expected a floating dtype, got {flow.dtype}")
    if shape is not None and tuple(flow.shape[1:]) != tuple(shape):
        raise InvalidInput(
            f"{name}: expected size (H, W) = {tuple(shape)}, got {tuple(flow.shape[1:])}"
        )
    if not bool(torch.isfinite(flow).all()):
        raise InvalidInput(f"{name}: contains NaN or infinite values; expected finite pixels")
    return flow


def _as_mask(mask: object, name: str, shape: tuple[int, int]) -> torch.Tensor:
    """A (H, W) bool tensor from a (H, W) / (1, H, W) torch or numpy mask (> 0.5 is set)."""
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, torch.Tensor):
        raise InvalidInput(f"{name}: expected a (H, W) or (1, H, W) array, got {type(mask)}")
    m = mask[0] if mask.dim() == 3 and mask.shape[0] == 1 else mask
    if m.dim() != 2 or tuple(m.shape) != tuple(shape):
        raise InvalidInput(
            f"{name}: expected shape (H, W) = {tuple(shape)} or (1, H, W), got {tuple(mask.shape)}"
        )
    m = m.float()
    if not bool(torch.isfinite(m).all()):
        raise InvalidInput(f"{name}: contains NaN or infinite values; expected values in [0, 1]")
    return m > 0.5


def _gray_u8(frame: object, name: str) -> np.ndarray:
    """8-bit grayscale (H, W) from a torch (C, H, W) or numpy (H, W[, C]) float frame in [0,1].

    Values outside [0, 1] (linear EXR highlights) are clipped; the quantisation rounds.
    """
    if isinstance(frame, torch.Tensor):
        if frame.dim() != 3 or frame.shape[0] not in (1, 3, 4):
            raise InvalidInput(
                f"{name}: expected a torch (3, H, W) frame, got {tuple(frame.shape)}"
            )
        arr = frame.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()
    elif isinstance(frame, np.ndarray):
        arr = frame if frame.ndim == 3 else frame[..., None] if frame.ndim == 2 else None
        if arr is None or arr.shape[2] not in (1, 3, 4):
            raise InvalidInput(f"{name}: expected a numpy (H, W, 3) frame, got {frame.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise InvalidInput(f"{name}: expected floats in [0, 1], got dtype {arr.dtype}")
    else:
        raise InvalidInput(f"{name}: expected a torch (3, H, W) or numpy (H, W, 3) frame")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidInput(f"{name}: empty frame of size {arr.shape[:2]}; expected H, W > 0")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{name}: contains NaN or infinite values; expected floats in [0, 1]")
    gray = arr[..., 0] if arr.shape[2] == 1 else cv2.cvtColor(arr[..., :3], cv2.COLOR_RGB2GRAY)
    return np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Estimation


def estimate_flow(a: object, b: object, method: str = "dis") -> torch.Tensor:
    """Flow from frame ``a`` to frame ``b`` on a's grid: ``a(x) ~ b(x + flow(x))``.

    ``a``, ``b``: torch (3, H, W) or numpy (H, W, 3) floats in [0, 1], the same size.
    ``method``: one of :data:`FLOW_METHODS`. Returns a float32 CPU tensor (2, H, W).
    """
    if method not in FLOW_METHODS:
        raise InvalidInput(f"method: got {method!r}; accepted: {', '.join(FLOW_METHODS)}")
    ga, gb = _gray_u8(a, "a"), _gray_u8(b, "b")
    if ga.shape != gb.shape:
        raise InvalidInput(f"a, b: frames differ in size, {ga.shape} vs {gb.shape}; expected equal")
    if method == "raft":
        return _raft_flow(a, b)
    if method == "farneback":
        flow = cv2.calcOpticalFlowFarneback(
            ga, gb, None, pyr_scale=0.5, levels=4, winsize=21, iterations=5, poly_n=5,
            poly_sigma=1.1, flags=0,
        )  # fmt: skip
    else:
        dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[method])
        flow = dis.calc(ga, gb, None)
    return torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1), dtype=np.float32))


def flow_pair(
    a: object, b: object, method: str = "dis", camera: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward a->b on a's grid, backward b->a on b's grid). ``camera``: each follows the
    camera's motion wherever that fits the frames as well (:func:`warpcore.camera.follow_camera`).
    """
    fwd, bwd = estimate_flow(a, b, method), estimate_flow(b, a, method)
    if not camera:
        return fwd, bwd
    from warpcore.camera import follow_camera

    return follow_camera(_rgb_chw(a, "a"), _rgb_chw(b, "b"), fwd, bwd)


def plate_flow_pair(
    a: object,
    b: object,
    mask_a: object,
    mask_b: object,
    method: str = "dis",
    dilate: int | None = None,
    camera: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`flow_pair` of the clean plate behind an object to remove (masks: 1 = object).

    Both frames have the union of the two masks filled smoothly (:func:`push_pull_fill`)
    before estimation, so the object's motion does not bleed into the background's flow, and
    the flow inside the union (grown by ``dilate`` px; default 4% of the shorter side, at least
    4: the estimator's pyramid spreads motion in proportion to the frame) is then continued
    from the background (:func:`fill_masked`). On the demo clip this brings the flow error
    inside the hole from about 1 px (object left in) to about 0.2 px. ``camera``: outside the
    union each flow follows the camera's motion wherever that fits the frames as well
    (:func:`warpcore.camera.follow_camera`, fitted outside the union), and so does the fill.
    """
    from warpcore.holes import push_pull_fill

    ta, tb = _rgb_chw(a, "a"), _rgb_chw(b, "b")
    size = tuple(ta.shape[-2:])
    if tuple(tb.shape[-2:]) != size:
        raise InvalidInput(f"b: expected a frame of size {size} like a, got {tuple(tb.shape[-2:])}")
    union = _as_mask(mask_a, "mask_a", size) | _as_mask(mask_b, "mask_b", size)
    if not bool(union.any()):
        return flow_pair(ta, tb, method, camera)
    m = union.float()[None, None]
    fa, fb = (push_pull_fill(t[None], m)[0] for t in (ta, tb))
    fwd, bwd = flow_pair(fa, fb, method)
    grow = max(4, round(0.04 * min(size))) if dilate is None else dilate
    if camera:  # fitted, and judged, outside the grown union only (its flow is refilled)
        from warpcore.camera import follow_camera

        fwd, bwd = follow_camera(fa, fb, fwd, bwd, _grown(union, grow))
    return fill_masked(fwd, union, grow), fill_masked(bwd, union, grow)


def _grown(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """A bool (H, W) mask grown by ``pixels`` (a square structuring element, as fill_masked's)."""
    if pixels <= 0:
        return mask
    square = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return torch.from_numpy(cv2.dilate(mask.cpu().numpy().astype(np.uint8), square).astype(bool))


def _rgb_chw(frame: object, name: str) -> torch.Tensor:
    """A float32 (3, H, W) tensor from a torch (C, H, W) or numpy (H, W, C) frame."""
    _gray_u8(frame, name)  # the same validation as every flow input
    if isinstance(frame, torch.Tensor):
        return frame[:3].detach().to("cpu", torch.float32)
    arr = np.asarray(frame, np.float32)
    arr = arr[..., None] if arr.ndim == 2 else arr
    arr = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[..., :3]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)


def raft_available() -> str | None:
    """None when RAFT can run here, else a sentence saying what is missing."""
    if importlib.util.find_spec("torchvision") is None:
        return (
            "flow method 'raft' needs torchvision (install it matching your torch, e.g. "
            "'pip install --no-deps torchvision') and RAFT-large weights; "
            "use 'dis' (the default) otherwise"
        )
    path = Path(os.environ.get(RAFT_WEIGHTS_ENV, RAFT_DEFAULT_WEIGHTS))
    if not path.is_file():
        return (
            f"flow method 'raft' needs RAFT-large weights as a safetensors state dict of "
            f"torchvision's raft_large at {path} (or set {RAFT_WEIGHTS_ENV}); "
            "use 'dis' (the default) otherwise"
        )
    return None


def _raft_flow(a: object, b: object) -> torch.Tensor:
    missing = raft_available()
    if missing:
        raise ModelNotFound(missing)
    from safetensors.torch import load_file
    from torchvision.models.optical_flow import raft_large

    model = raft_large(weights=None, progress=False)
    model.load_state_dict(load_file(os.environ.get(RAFT_WEIGHTS_ENV, str(RAFT_DEFAULT_WEIGHTS))))
    model.eval()
    ta, tb = (_rgb_tensor(x) for x in (a, b))
    h, w = ta.shape[-2:]
    ph, pw = (-h) % 8, (-w) % 8
    batch = [F.pad(t[None] * 2 - 1, (0, pw, 0, ph), mode="replicate") for t in (ta, tb)]
    with torch.no_grad():
        flow = model(batch[0], batch[1])[-1][0]
    return flow[:, :h, :w].float().contiguous()


def _rgb_tensor(frame: object) -> torch.Tensor:
    if isinstance(frame, np.ndarray):
        frame = torch.from_numpy(np.ascontiguousarray(frame[..., :3])).permute(2, 0, 1)
    return frame[:3].float().clamp(0, 1)  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# Composition, validity and occlusion


def compose(flow_ab: torch.Tensor, flow_bc: torch.Tensor) -> torch.Tensor:
    """``flow_ac(x) = flow_ab(x) + flow_bc(x + flow_ab(x))`` on a's grid.

    ``flow_bc`` is sampled bilinearly with border extension (points that leave b take the
    nearest edge flow). Both flows (2, H, W) of the same size.
    """
    validate_flow(flow_ab, "flow_ab")
    validate_flow(flow_bc, "flow_bc", tuple(flow_ab.shape[1:]))
    sampled, _ = warp(flow_bc.to(flow_ab.dtype), flow_ab, padding="border")
    return flow_ab + sampled


def valid_mask(flow: torch.Tensor) -> torch.Tensor:
    """(1, H, W) float: 1 where ``x + flow(x)`` lands inside the target frame (same size)."""
    validate_flow(flow)
    pts = sample_points(flow)
    h, w = flow.shape[1:]
    tol = 1e-4
    inside = (pts[0] >= -tol) & (pts[0] <= w - 1 + tol) & (pts[1] >= -tol) & (pts[1] <= h - 1 + tol)
    return inside[None].to(flow.dtype)


def motion_boundary(flow: torch.Tensor) -> torch.Tensor:
    """(1, H, W) bool: ``|grad flow|^2 > 0.01 |flow|^2 + 0.002`` (forward differences)."""
    validate_flow(flow)
    du = F.pad(flow[:, :, 1:] - flow[:, :, :-1], (0, 1, 0, 0))
    dv = F.pad(flow[:, 1:, :] - flow[:, :-1, :], (0, 0, 0, 1))
    grad2 = (du**2 + dv**2).sum(0)
    return (grad2 > _MB_ALPHA * (flow**2).sum(0) + _MB_BETA)[None]


FLOW_SPREAD_PX = 0.5  # the local spread of a flow that guidance still follows (5 px box)


def box_mean(planes: torch.Tensor, size: int = 5) -> torch.Tensor:
    """(..., H, W) -> the same shape: each pixel's mean over its ``size`` x ``size`` box, of the
    box's pixels inside the frame. OpenCV's box filter on the CPU (at 1080p 4 ms a plane, 20x
    torch's ``avg_pool2d``: the flow checks run it on every frame pair). float64 planes are
    averaged in float64, others in float32."""
    h, w = planes.shape[-2:]
    dtype = torch.float64 if planes.dtype == torch.float64 else torch.float32
    arr = planes.detach().cpu().to(dtype).numpy().reshape(-1, h, w)
    count = cv2.blur(np.ones((h, w), arr.dtype), (size, size), borderType=cv2.BORDER_CONSTANT)
    out = np.stack([cv2.blur(p, (size, size), borderType=cv2.BORDER_CONSTANT) / count for p in arr])
    return torch.from_numpy(out.reshape(planes.shape)).to(planes.device, planes.dtype)


def mismatch(a: torch.Tensor, b: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """(H, W): how badly ``flow`` (a -> b) moves frame ``b`` onto ``a``: the 5 px box mean of
    the mean absolute RGB difference, over the samples that land inside ``b`` (0 where none
    does: nothing to judge). ``a``, ``b`` (C, H, W). What the photometric flow check bounds
    and what :mod:`warpcore.camera` compares two flows by."""
    moved, inside = warp(b.to(flow.dtype), flow, padding="border")
    diff = (moved - a.to(flow.dtype)).abs().mean(0) * inside[0]
    box = box_mean(torch.stack([diff, inside[0]]))
    return box[0] / box[1].clamp_min(1e-6)


def coherence_mask(
    flow: torch.Tensor, spread_px: float = FLOW_SPREAD_PX, window: int = 5
) -> torch.Tensor:
    """(1, H, W) float: 1 where the flow is locally coherent, the RMS distance of its vectors
    from their ``window`` box mean being at most ``spread_px``; 0 where it scatters more.

    A flow that scatters by pixels within a few pixels moves detail to places it does not
    belong, even where it passes the forward-backward and photometric checks by chance: on
    running_car's motion-blurred car DIS's flow over the pixels those checks passed had a
    standard deviation of 13 px, and guidance there cost 0.1 dB (docs/guidance.md, session
    8). Unlike :func:`motion_boundary` the bound does not grow with the flow: a fast pan is
    as coherent as a slow one."""
    validate_flow(flow)
    f = flow.double()  # E[f^2] - E[f]^2 in float32 is 0.09 px^2 off at 500 px (0.25 bounds it)
    moments = box_mean(torch.cat([f, f * f]), window)
    spread = (moments[2:] - moments[:2] ** 2).clamp_min(0).sum(0)  # mean squared distance
    return (spread <= spread_px**2)[None].to(flow.dtype)


def occlusion_mask(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """(1, H, W) float on the FORWARD flow's grid: 1 = valid, 0 = occluded / boundary / leaves.

    ``forward`` = flow a->b on a's grid, ``backward`` = flow b->a on b's grid. Lai et al. 2018
    (METHOD.md section 6) written on a's grid (their code calls ``detect_occlusion(bw, fw)``
    to get the mask of the frame that is warped onto, which is this): pixel x of a is occluded
    when ``|w_f(x) + w_b(x + w_f(x))|^2 > 0.01 (|w_f(x)|^2 + |w_b(x + w_f(x))|^2) + 0.5``,
    on a motion boundary when ``|grad w_f(x)|^2 > 0.01 |w_f(x)|^2 + 0.002``, and invalid when
    ``x + w_f(x)`` leaves b. This is the ``M`` of E_warp for ``V_a - warp(V_b, forward)``.
    """
    validate_flow(forward, "forward")
    validate_flow(backward, "backward", tuple(forward.shape[1:]))
    bw_at, inside = warp(backward.to(forward.dtype), forward, padding="border")
    round_trip = ((forward + bw_at) ** 2).sum(0)
    bound = _FB_ALPHA * ((forward**2).sum(0) + (bw_at**2).sum(0)) + _FB_BETA
    occluded = round_trip > bound
    keep = ~occluded & ~motion_boundary(forward)[0] & (inside[0] > 0.5)
    return keep[None].to(forward.dtype)


PHOTOMETRIC_SHIFT_PX = 1.0  # the misplacement a flow may have and still guide (request default)
PHOTOMETRIC_FLOOR = 0.0015  # mean |RGB| difference always accepted (flat areas): 0.4 grey levels


def photometric_mask(
    a: torch.Tensor,
    b: torch.Tensor,
    forward: torch.Tensor,
    shift_px: float = PHOTOMETRIC_SHIFT_PX,
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """(1, H, W) float on a's grid: 1 where frame ``b`` moved onto ``a`` by ``forward`` (flow
    a->b) matches ``a`` as well as a flow misplaced by at most ``shift_px`` pixels would; 0
    where it does not: there the flow is wrong, whatever its forward-backward check says (large
    motion that DIS missed the same way both ways). Over a 5 px box, the mean absolute RGB
    difference ``d`` is compared with what a misplacement of ``shift_px`` costs on ``a``'s
    own texture, ``shift_px * g`` (``g`` the box mean of ``a``'s gradient magnitude, the
    first-order cost of a one-pixel shift), plus ``PHOTOMETRIC_FLOOR`` for flat areas, where
    a misplaced flow moves nothing visible. So a flow a fraction of a pixel off still guides
    on sharp texture, and one that is tens of pixels off (or follows the wrong object) does
    not. ``a``, ``b`` (C, H, W) in [0, 1]. Pixels this cannot judge pass: those whose sample
    point leaves ``b`` (not counted in their neighbours' box means either; the occlusion mask
    drops them), and where ``known`` (1, H, W) on a's grid, 1 where both frames are known, is
    0 (holes).
    """
    validate_flow(forward, "forward", tuple(a.shape[-2:]))
    a = a.to(forward.dtype)
    gy, gx = torch.gradient(a, dim=(-2, -1))
    grad = box_mean((gx**2 + gy**2).sqrt().mean(0))
    # Over the pixels whose sample point stays in frame (those that leave are the occlusion
    # mask's; they must not spread into their neighbours here).
    keep = (mismatch(a, b, forward) < PHOTOMETRIC_FLOOR + shift_px * grad)[None].to(a.dtype)
    if known is not None:
        keep = torch.maximum(keep, 1.0 - (known > 0.5).to(forward.dtype))
    return keep


# ---------------------------------------------------------------------------------------------
# Grids


def to_model_grid(flow: torch.Tensor, factor: int) -> torch.Tensor:
    """The flow on a grid ``factor`` times smaller: area-average each block, divide by factor.

    METHOD.md section 4 (SDXL latents: factor 8). H and W must be divisible by ``factor``.
    """
    validate_flow(flow)
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise InvalidInput(f"factor: expected a positive integer (8 for SDXL), got {factor!r}")
    h, w = flow.shape[1:]
    if h % factor or w % factor:
        raise InvalidInput(
            f"flow: size {h}x{w} is not divisible by factor {factor}; "
            f"crop or pad the frames to a multiple of {factor}"
        )
    return F.avg_pool2d(flow[None], factor)[0] / factor


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The flow resampled (bilinear) to ``size`` = (H, W), displacements rescaled to its pixels."""
    validate_flow(flow)
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise InvalidInput(f"size: expected (H, W) with H, W > 0, got {size!r}")
    h, w = flow.shape[1:]
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    scale = torch.tensor([size[1] / w, size[0] / h], dtype=flow.dtype).view(2, 1, 1)
    return out * scale


# ---------------------------------------------------------------------------------------------
# Filling the flow inside an inpainting mask


def fill_masked(flow: torch.Tensor, mask: object, dilate: int = 0) -> torch.Tensor:
    """Replace the flow inside ``mask`` (1 = removed object) by a fill from its surroundings.

    The clean plate behind a removed object moves like the background around it, not like the
    object. The camera's motion (a similarity fitted by RANSAC to the flow outside) is carried
    into the mask, and the rest of the flow by Laplace's equation (a membrane / harmonic fill)
    with the flow outside as boundary values and no-flux frame borders, so masks touching the
    border are fine: a sparse direct solve, exact and smooth, about 1.2 s for 1.2e5 masked
    pixels on one core. (``cv2.inpaint`` was rejected: on float ramps its Telea fill
    oscillates by +-2 px.) ``dilate`` grows the mask by that many pixels first: estimated flow
    bleeds the object's motion a few pixels past its outline (DIS: ~4-8; less with
    :func:`plate_flow_pair`).
    A frame masked entirely has no surroundings to follow: its fill is zero flow (static).
    """
    validate_flow(flow)
    known_shape = tuple(flow.shape[1:])
    m = _as_mask(mask, "mask", known_shape)
    if isinstance(dilate, bool) or not isinstance(dilate, int) or dilate < 0:
        raise InvalidInput(f"dilate: expected an integer >= 0 (pixels), got {dilate!r}")
    m_np = _grown(m, dilate).cpu().numpy().astype(np.uint8)
    if not m_np.any():
        return flow.clone()
    if m_np.all():
        return torch.zeros_like(flow)
    f_np = flow.detach().cpu().numpy().astype(np.float64)
    hole = m_np.astype(bool)
    base = _global_motion(f_np, ~hole)
    residual = f_np - base
    unknowns = int(hole.sum())
    if unknowns > COARSE_ABOVE:  # the residual is smooth: solve a large hole on a coarser grid
        factor = int(np.ceil(np.sqrt(unknowns / COARSE_ABOVE)))
        filled = base + _coarse_harmonic_fill(residual, hole, factor)
    else:
        filled = base + _harmonic_fill(residual, hole)
    return torch.from_numpy(filled.astype(np.float32)).to(flow.device, flow.dtype)


def _global_motion(flow: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The flow (2, H, W) of :func:`fit_similarity` on the known pixels, or 0 when nothing fits.

    The camera's motion then continues into the hole exactly, and the harmonic fill only
    carries the residual (perspective, parallax, local motion).
    """
    matrix = fit_similarity(flow, known)
    if matrix is None:
        return np.zeros_like(flow)
    return affine_flow(matrix, known.shape)


def fit_similarity(flow: np.ndarray, known: np.ndarray, samples: int = 4000) -> np.ndarray | None:
    """The 2x3 matrix (a's pixel -> b's) of a similarity (pan, zoom, roll) fitted by RANSAC
    (0.5 px) to the flow (2, H, W) of up to ``samples`` random ``known`` (H, W) pixels; None
    when fewer than 16 are known or nothing fits. Four degrees of freedom, not a homography's
    eight: near a removed object the estimated flow is partly the object's, and a homography
    bends to fit it.
    """
    rng = np.random.default_rng(0)
    flat = known.ravel()
    pick = rng.integers(0, flat.size, 4 * samples)  # a cheap draw; the exact one if too few
    pick = np.unique(pick[flat[pick]])[:samples]
    if len(pick) < min(samples, 64):
        pick = np.flatnonzero(flat)
        if len(pick) > samples:
            pick = rng.choice(pick, samples, replace=False)
    if len(pick) < 16:
        return None
    ys, xs = np.divmod(pick, known.shape[1])
    src = np.stack([xs, ys], axis=1).astype(np.float32)
    dst = src + flow[:, ys, xs].T.astype(np.float32)
    cv2.setRNGSeed(0)  # RANSAC draws from OpenCV's per-thread RNG: the same flows, the same fit
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=0.5)
    if matrix is None or not np.isfinite(matrix).all():
        return None
    return matrix.astype(np.float64)


def affine_flow(matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The flow (2, H, W) float32 of a 2x3 affine map of pixel centres (a's pixel -> b's)."""
    h, w = size
    gx = np.arange(w, dtype=np.float64)[None, :]
    gy = np.arange(h, dtype=np.float64)[:, None]
    out = np.empty((2, h, w), np.float32)
    out[0] = (matrix[0, 0] - 1.0) * gx + (matrix[0, 1] * gy + matrix[0, 2])
    out[1] = matrix[1, 0] * gx + ((matrix[1, 1] - 1.0) * gy + matrix[1, 2])
    return out


COARSE_ABOVE = 40_000  # unknowns of the exact solve; larger holes go to a coarser grid


def _coarse_harmonic_fill(values: np.ndarray, mask: np.ndarray, factor: int) -> np.ndarray:
    """:func:`_harmonic_fill` on a grid ``factor`` times coarser, upsampled into the mask.

    Coarse cells average their known pixels; a cell with any masked pixel is unknown. For a
    446x446 hole at 1080p :func:`fill_masked` takes 0.22 s instead of 1.6 s (one core); the fill
    is as smooth, and near the hole's edge within a cell's size of the exact one.
    """
    c, h, w = values.shape
    ch, cw = -(-h // factor), -(-w // factor)
    known = (~mask).astype(np.float64)
    pad = ((0, ch * factor - h), (0, cw * factor - w))
    k = np.pad(known, pad).reshape(ch, factor, cw, factor).sum(axis=(1, 3))
    coarse_mask = np.pad(mask, pad, constant_values=False).reshape(ch, factor, cw, factor)
    coarse_mask = coarse_mask.any(axis=(1, 3)) | (k == 0)
    coarse = np.empty((c, ch, cw))
    for i in range(c):
        v = np.pad(values[i] * known, pad).reshape(ch, factor, cw, factor).sum(axis=(1, 3))
        coarse[i] = v / np.maximum(k, 1e-12)
    solved = _harmonic_fill(coarse, coarse_mask)
    out = values.copy()
    for i in range(c):
        up = cv2.resize(solved[i], (cw * factor, ch * factor), interpolation=cv2.INTER_LINEAR)
        out[i][mask] = up[:h, :w][mask]
    return out


def _harmonic_fill(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Solve the 5-point Laplace equation for every channel of ``values`` (C, H, W) in mask."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    h, w = mask.shape
    idx = -np.ones((h, w), dtype=np.int64)
    ys, xs = np.nonzero(mask)
    n = len(ys)
    idx[ys, xs] = np.arange(n)
    rows, cols, data = [np.arange(n)], [np.arange(n)], [np.zeros(n)]
    rhs = np.zeros((n, values.shape[0]))
    diag = np.zeros(n)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diag += inside  # no-flux borders: a missing neighbour drops out of the stencil
        ny, nx, rid = ny[inside], nx[inside], np.nonzero(inside)[0]
        nb = idx[ny, nx]
        unknown = nb >= 0
        rows.append(rid[unknown])
        cols.append(nb[unknown])
        data.append(-np.ones(int(unknown.sum())))
        known = ~unknown
        rhs[rid[known]] += values[:, ny[known], nx[known]].T
    data[0] = diag
    a = sp.csc_matrix(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    solution = splu(a).solve(rhs)
    out = values.copy()
    out[:, ys, xs] = solution.T
    return out
