"""Tiled denoising: any denoiser on frames larger than its working size, without seams.

A :class:`TiledDenoiser` wraps a model behind the denoiser interface. It cuts the output frame
into overlapping tiles (:func:`tile_plan`), prepares each tile's condition from the matching
region of the frame's condition (the low-resolution pixels under an upscaling tile, the image
and matte under an inpainting tile), and at every sampler step blends the tiles' denoised
estimates into one estimate of the whole frame with feathered weights (MultiDiffusion,
Bar-Tal et al. 2023: the blended estimate is the least-squares fit of the tiles' estimates).

What only this method adds: the noise is one GP field over the frame (:mod:`warpcore.noise`),
so a tile's noise is simply the field at the tile's coordinates and the tiles share it where
they overlap; the sampler, the guidance and the noise warp see the whole frame and know
nothing of tiles. The peak memory of a model call is that of one tile.

Tile sizes and positions are in output pixels, multiples of ``unit`` (the low-resolution pixel
times the model's grid multiple, so every tile's condition is a whole-pixel crop).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from warpcore.errors import InvalidInput
from warpcore.models.base import Condition
from warpcore.request import MAX_TILE, MIN_TILE

# The tile side a request gets when it names none (output pixels): a model's native size, or
# this. 0 in a request turns tiling off (the whole frame goes through the model at once).
DEFAULT_TILE = 1024


@dataclass(frozen=True)
class Tile:
    """One tile: output-pixel rows ``[y0, y1)`` and columns ``[x0, x1)``."""

    y0: int
    y1: int
    x0: int
    x1: int


def axis_starts(length: int, tile: int, overlap: int, unit: int) -> list[int]:
    """Starts of tiles of ``tile`` covering ``[0, length)`` with at least ``overlap`` shared.

    All multiples of ``unit``; the last tile ends at ``length``. One tile when it fits.
    """
    if tile >= length:
        return [0]
    stride = max(unit, (tile - overlap) // unit * unit)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # a multiple of unit: both are
    return starts


def tile_plan(size: tuple[int, int], tile: int, overlap: int, unit: int) -> list[Tile]:
    """Tiles covering an output frame ``size`` (H, W): see :func:`axis_starts`."""
    h, w = size
    if h % unit or w % unit:
        raise InvalidInput(f"tiles: frame {h}x{w} is not a multiple of the tile unit {unit}")
    side = max(unit, tile // unit * unit)
    th, tw = min(side, h), min(side, w)
    return [
        Tile(y, y + th, x, x + tw)
        for y in axis_starts(h, th, overlap, unit)
        for x in axis_starts(w, tw, overlap, unit)
    ]


def feather(tile: Tile, size: tuple[int, int], overlap: int, downscale: int) -> torch.Tensor:
    """(h, w) blend weights of a tile on the model grid: ramps over the overlap, 1 elsewhere.

    A side on the frame's border gets no ramp (nothing else covers it). The ramps never reach
    zero, so the weights of the tiles covering a cell always sum to more than zero.
    """
    cells = max(1, overlap // downscale)

    def ramp(n: int, at_start: bool, at_end: bool) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float32)
        r = torch.ones(n)
        if not at_start:
            r = torch.minimum(r, (i + 0.5) / cells)
        if not at_end:
            r = torch.minimum(r, (n - i - 0.5) / cells)
        return r

    h, w = size
    ry = ramp((tile.y1 - tile.y0) // downscale, tile.y0 == 0, tile.y1 == h)
    rx = ramp((tile.x1 - tile.x0) // downscale, tile.x0 == 0, tile.x1 == w)
    return ry[:, None] * rx[None, :]


@dataclass
class TiledPrepared:
    """The tiles of one frame, each with its inner model's prepared condition and weights."""

    tiles: list[Tile]
    inner: list[Any]
    weights: list[torch.Tensor]  # (1, 1, h, w) per tile, on the model grid
    total: torch.Tensor  # (1, 1, H, W): the sum of the weights, > 0 everywhere
    size: tuple[int, int]  # output pixels


class TiledDenoiser:
    """A denoiser that runs ``inner`` tile by tile and blends the estimates at every step."""

    def __init__(self, inner: Any, tile: int, overlap: int, unit: int) -> None:
        if tile < MIN_TILE:
            raise InvalidInput(f"tile: got {tile}; accepted: 0 (off) or {MIN_TILE}-{MAX_TILE} px")
        if unit < 1 or unit % inner.downscale:
            raise InvalidInput(f"tiles: unit {unit} is not a multiple of the model grid")
        self.inner = inner
        self.tile, self.overlap, self.unit = tile, overlap, unit
        self.name = inner.name
        self.channels, self.downscale = inner.channels, inner.downscale
        self.sigma_min, self.sigma_max = inner.sigma_min, inner.sigma_max
        self.device, self.dtype = inner.device, inner.dtype
        self.tasks = inner.tasks

    def __getattr__(self, name: str) -> Any:
        # Everything else (default_strength, encode_differentiable, ...) is the inner model's.
        return getattr(self.inner, name)

    def prepare(self, cond: Condition) -> TiledPrepared:
        """Cut the frame's condition into the tiles' conditions and prepare each. A model with
        work that needs the whole frame (``whole_frame``: the built-in model's hole fill and
        detail weight) does it once, before the cut."""
        whole_frame = getattr(self.inner, "whole_frame", None)
        if whole_frame is not None:
            cond = whole_frame(cond)
        factor = cond.scale if cond.task == "upscale" else 1
        size = (cond.image.shape[-2] * factor, cond.image.shape[-1] * factor)
        tiles = tile_plan(size, self.tile, self.overlap, self.unit)
        ds = self.downscale
        total = torch.zeros(size[0] // ds, size[1] // ds)
        inner, weights = [], []
        for t in tiles:
            inner.append(self.inner.prepare(_crop_condition(cond, t, factor)))
            w = feather(t, size, self.overlap, ds)
            total[t.y0 // ds : t.y1 // ds, t.x0 // ds : t.x1 // ds] += w
            weights.append(w[None, None].to(self.device))
        return TiledPrepared(tiles, inner, weights, total[None, None].to(self.device), size)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, prepared: Any) -> torch.Tensor:
        p = _check_prepared(prepared)
        ds = self.downscale
        if tuple(x.shape[-2:]) != tuple(p.total.shape[-2:]):
            raise InvalidInput(
                f"x: expected (N, {self.channels}, {p.total.shape[-2]}, {p.total.shape[-1]}), "
                f"got {tuple(x.shape)}"
            )
        out = torch.zeros_like(x)
        for t, inner, w in zip(p.tiles, p.inner, p.weights, strict=True):
            rows, cols = slice(t.y0 // ds, t.y1 // ds), slice(t.x0 // ds, t.x1 // ds)
            estimate = self.inner(x[..., rows, cols], sigma, inner)
            # In place on a slice: autograd records it (the guidance may backpropagate), and no
            # frame-sized tensor is made per tile.
            out[..., rows, cols] += estimate * w.to(estimate.dtype)
        return out / p.total.to(out.dtype)

    def start(self, prepared: Any) -> torch.Tensor | None:
        """The inner model's starts, blended like the estimates (None if the model has none)."""
        p = _check_prepared(prepared)
        starts = [self.inner.start(inner) for inner in p.inner]
        if any(s is None for s in starts):
            return None
        ds = self.downscale
        out = torch.zeros(
            (*starts[0].shape[:-2], *p.total.shape[-2:]),
            dtype=starts[0].dtype,
            device=starts[0].device,
        )
        for t, s, w in zip(p.tiles, starts, p.weights, strict=True):
            rows, cols = slice(t.y0 // ds, t.y1 // ds), slice(t.x0 // ds, t.x1 // ds)
            out[..., rows, cols] += s * w.to(s.dtype)
        return out / p.total.to(out.dtype)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.inner.encode(image)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.decode(x)


def _crop_condition(cond: Condition, t: Tile, factor: int) -> Condition:
    """The condition of one tile: the region of the image (and matte) under it."""
    rows = slice(t.y0 // factor, t.y1 // factor)
    cols = slice(t.x0 // factor, t.x1 // factor)
    mask = cond.mask[..., rows, cols] if cond.mask is not None else None
    return replace(cond, image=cond.image[..., rows, cols], mask=mask)


def _check_prepared(prepared: Any) -> TiledPrepared:
    if not isinstance(prepared, TiledPrepared):
        raise InvalidInput("prepared: expected the result of TiledDenoiser.prepare(cond)")
    return prepared


def resolve_tile(request_tile: int | None, denoiser: Any) -> int:
    """The tile side in output pixels: the request's, else the model's native side, else
    DEFAULT_TILE; 0 = no tiling."""
    if request_tile is not None:
        return int(request_tile)
    native = getattr(denoiser, "native_pixels", None)
    return int(round(native**0.5)) if native else DEFAULT_TILE
