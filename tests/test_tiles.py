"""Tiled denoising (warpcore.tiles): exact for a local model, no seams with the real one."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from warpcore.errors import InvalidInput
from warpcore.models import load_denoiser
from warpcore.models.base import Condition
from warpcore.request import RestoreRequest
from warpcore.restore import ClipRestorer
from warpcore.tiles import TiledDenoiser, tile_plan


class PixelModel:
    """A model whose estimate at a pixel depends only on x and the condition at that pixel.

    Tiled or not, its estimate must be the same: any misplaced condition crop, uncovered
    cell or wrong normalisation of the blend shows as a difference.
    """

    name = "pixel"
    channels, downscale = 3, 1
    sigma_min, sigma_max = 0.002, 80.0
    device, dtype = torch.device("cpu"), torch.float32
    tasks = ("inpaint", "upscale")
    default_strength = 0.5

    def prepare(self, cond: Condition) -> torch.Tensor:
        if cond.task == "upscale":
            return F.interpolate(cond.image[None], scale_factor=cond.scale, mode="nearest")
        return (cond.image * (1 - cond.mask) + cond.mask * 0.3)[None]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, prepared: torch.Tensor):
        s2 = torch.as_tensor(sigma).reshape(-1, 1, 1, 1) ** 2
        return (x + s2 * (2 * prepared - 1)) / (1 + s2)

    def start(self, prepared: torch.Tensor) -> torch.Tensor:
        return 2 * prepared - 1

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return 2 * image - 1

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2).clamp(0, 1)


def _lowres(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((h, w, 3)).astype(np.float32)


def test_plan_covers_the_frame_with_aligned_overlapping_tiles():
    tiles = tile_plan((256, 400), 128, 32, 8)
    covered = np.zeros((256, 400), int)
    for t in tiles:
        assert (t.y1 - t.y0, t.x1 - t.x0) == (128, 128)
        assert t.y0 % 8 == 0 and t.x0 % 8 == 0
        covered[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert covered.min() >= 1
    xs = sorted({t.x0 for t in tiles})
    assert xs[0] == 0 and xs[-1] == 400 - 128
    assert all(b - a <= 128 - 32 for a, b in zip(xs, xs[1:], strict=False))  # overlap kept
    assert tile_plan((64, 64), 128, 32, 8) == tile_plan((64, 64), 64, 32, 8)  # one tile


@pytest.mark.parametrize("task", ["upscale", "inpaint"])
def test_tiled_estimate_equals_the_whole_frame_for_a_local_model(task):
    model = PixelModel()
    lowres = torch.from_numpy(_lowres(40, 56)).permute(2, 0, 1)
    if task == "upscale":
        cond = Condition(task="upscale", image=lowres, scale=4)
    else:
        image = F.interpolate(lowres[None], scale_factor=4, mode="bilinear")[0]
        mask = torch.zeros(1, 160, 224)
        mask[:, 50:110, 60:200] = 1
        cond = Condition(task="inpaint", image=image, mask=mask)
    tiled = TiledDenoiser(model, tile=64, overlap=16, unit=4)
    whole_p, tiled_p = model.prepare(cond), tiled.prepare(cond)
    assert len(tiled_p.tiles) > 6
    x = torch.randn(1, 3, 160, 224, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([1.7])
    torch.testing.assert_close(tiled(x, sigma, tiled_p), model(x, sigma, whole_p))
    torch.testing.assert_close(tiled.start(tiled_p), model.start(whole_p))


def test_gradients_flow_through_the_blend_as_through_the_whole_frame():
    """The paper's guidance backpropagates through the model: tiles must not cut the graph."""
    model = PixelModel()
    cond = Condition(
        task="upscale", image=torch.from_numpy(_lowres(40, 56)).permute(2, 0, 1), scale=4
    )
    tiled = TiledDenoiser(model, tile=64, overlap=16, unit=4)
    x = torch.randn(1, 3, 160, 224, generator=torch.Generator().manual_seed(1))
    grads = []
    for denoiser in (model, tiled):
        u = x.clone().requires_grad_(True)
        (denoiser(u, torch.tensor([0.7]), denoiser.prepare(cond)) ** 2).sum().backward()
        grads.append(u.grad)
    torch.testing.assert_close(grads[1], grads[0])


def test_restorer_tiles_only_frames_larger_than_the_tile():
    model = PixelModel()
    small = ClipRestorer(RestoreRequest(task="upscale", scale=4, tile=64), model, (16, 16), 1)
    large = ClipRestorer(RestoreRequest(task="upscale", scale=4, tile=64), model, (40, 56), 1)
    off = ClipRestorer(RestoreRequest(task="upscale", scale=4, tile=0), model, (40, 56), 1)
    assert small.denoiser is model and off.denoiser is model
    assert isinstance(large.denoiser, TiledDenoiser)
    frame = _lowres(40, 56, seed=1)
    np.testing.assert_allclose(large.process(0, frame), off.process(0, frame), atol=1e-5)


@pytest.mark.parametrize("tile", [63, 8193, -1, 1.5, True, "64"])
def test_bad_tile_sizes_are_refused_with_the_accepted_range(tile):
    with pytest.raises(InvalidInput, match=r"tile: expected 0 .* \[64, 8192\]"):
        RestoreRequest(task="upscale", tile=tile)


def test_tile_default_keeps_the_request_key():
    assert RestoreRequest(task="upscale").key() == RestoreRequest(task="upscale", tile=None).key()
    assert RestoreRequest(task="upscale").key() != RestoreRequest(task="upscale", tile=0).key()


# -- the built-in model: no seam where tiles meet -------------------------------------------------


def _gradient(size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return np.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.8 - 0.5 * (x + y) / 2], axis=-1)


def _photo(size: int) -> np.ndarray:
    image = skimage.data.astronaut()[64 : 64 + 2 * size, 128 : 128 + 2 * size]
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _jumps(error: np.ndarray) -> np.ndarray:
    """Mean absolute change of the error between neighbouring columns: (W - 1,)."""
    return np.abs(np.diff(error, axis=1)).mean(axis=(0, 2))


@pytest.fixture(scope="module")
def builtin_sr():
    return load_denoiser("builtin", "upscale")


@pytest.mark.parametrize("image", ["gradient", "photo"])
def test_tiled_super_resolution_has_no_seam(builtin_sr, image):
    """Where tiles meet, the output changes no faster than inside a tile.

    Measured on the difference to the same run without tiles (same noise), so the image's own
    texture does not hide a seam; and on the error against the truth. A hard cut between tiles,
    or an unweighted average of them, raises the jump at the tile edges 3-18x.
    """
    size = 128
    truth = _gradient(size) if image == "gradient" else _photo(size)
    lowres = cv2.resize(truth, (size // 4, size // 4), interpolation=cv2.INTER_AREA)
    outs = {}
    for tile in (0, 64):
        request = RestoreRequest(task="upscale", scale=4, tile=tile, steps=4, strength=0.5)
        restorer = ClipRestorer(request, builtin_sr, lowres.shape[:2], 1)
        assert isinstance(restorer.denoiser, TiledDenoiser) == bool(tile)
        outs[tile] = restorer.process(0, lowres)
    # Columns where a tile starts or ends inside the frame: a seam would be a jump there.
    tiles = tile_plan((size, size), 64, 16, 4)
    edges = [e - 1 for e in sorted({t.x0 for t in tiles} | {t.x1 for t in tiles}) if 0 < e < size]
    assert len(edges) >= 2
    for reference, ratio in ((outs[0], 1.5), (truth, 1.5)):
        jumps = _jumps(outs[64] - reference)
        inside = np.delete(jumps, edges)
        assert jumps[edges].max() <= ratio * np.percentile(inside, 90), (jumps[edges], inside)


class CallShapes:
    """A model, recording the grid size of every call (everything else is the model's)."""

    def __init__(self, model) -> None:
        self.model, self.shapes = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, x, sigma, prepared):
        self.shapes.append(tuple(x.shape[-2:]))
        return self.model(x, sigma, prepared)


def test_tiny_sdxl_upscales_a_clip_in_tiles_with_guidance(tiny_sdxl_dirs):
    """The real diffusers classes behind the tiles: every model call sees one tile's latents
    and the guided clip comes out whole."""
    model = CallShapes(load_denoiser(str(tiny_sdxl_dirs[8]), "upscale"))
    frames = [_lowres(64, 192, seed=j) for j in range(2)]
    request = RestoreRequest(
        task="upscale", scale=2, model="sdxl", steps=2, guidance=1.0, tile=256, flow="dis-ultrafast"
    )
    restorer = ClipRestorer(request, model, (64, 192), 2)
    assert isinstance(restorer.denoiser, TiledDenoiser)
    outs = [restorer.process(j, f) for j, f in enumerate(frames)]
    assert all(o.shape == (128, 384, 3) and np.isfinite(o).all() for o in outs)
    assert model.shapes and set(model.shapes) == {(16, 32)}  # 128x256 px tiles, 8x latent grid
    assert len(model.shapes) == 2 * 2 * 2  # frames x steps x tiles


def test_the_upscale_detail_weight_is_measured_once_on_the_whole_frame(
    monkeypatch, calibrated_unet_dir
) -> None:
    """The built-in upscaler's start weighs its estimate's detail by a weight measured one
    scale down. Tiled, it is measured once on the whole frame and every tile starts with it:
    measured per tile it cost a model call a tile and gave each tile its own weight, blended
    across the overlaps (this failed then: a call and a weight per tile)."""
    from warpcore.models.builtin import load_builtin

    model = load_builtin("upscale", weights=calibrated_unet_dir)
    calls = []
    real = model._calibrate
    monkeypatch.setattr(model, "_calibrate", lambda low, s: calls.append(low.shape) or real(low, s))
    low = torch.rand(3, 48, 80, generator=torch.Generator().manual_seed(0))
    tiled = TiledDenoiser(model, tile=64, overlap=16, unit=4)
    prepared = tiled.prepare(Condition(task="upscale", image=low, scale=2))
    assert len(prepared.inner) > 1 and calls == [(1, 3, 48, 80)]
    whole = real(low[None], 2)
    assert {p.detail_weight for p in prepared.inner} == {whole}
    assert tiled.start(prepared) is not None and len(calls) == 1
