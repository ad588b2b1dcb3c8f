"""Metrics with known answers: consistent videos, a known flicker, PSNR/SSIM, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from warpcore.cli import main
from warpcore.errors import Cancelled, InvalidInput
from warpcore.metrics import ClipScorer, latent_proxy, restoration_scores, score_clip
from warpcore.video import write_video

KEYS = ("warp_pixel_prev", "warp_pixel_first", "warp_latent_prev", "warp_latent_first", "e_warp")


def _pan(n: int = 5, h: int = 96, w: int = 128, step: int = 2) -> list[np.ndarray]:
    """A camera pan over a real photograph: frame j is shifted ``step * j`` px (integer)."""
    img = data.astronaut().astype(np.float32) / 255.0
    x0 = [120 + step * j for j in range(n)]
    return [np.ascontiguousarray(img[60 : 60 + h, x : x + w]) for x in x0]


def test_consistent_video_scores_about_zero() -> None:
    frames = _pan(step=8)  # 8 px: a whole latent cell, so the latent warp is exact too
    result = score_clip(frames, frames)
    assert result["frames"] == 5 and result["latent"] == "latent_proxy"
    for key in KEYS:
        assert result["per_frame"][key][0] is None  # no pair for frame 0
        # DIS recovers integer pans exactly on this photograph: measured ~2e-8 for every key.
        assert result["mean"][key] < 1e-5, key
    # A 2 px pan is a quarter latent cell: bilinear resampling of the 8x coarser latent grid
    # cannot reproduce the shifted block averages (measured 6e-4), while pixels stay ~2e-8.
    quarter = score_clip(_pan(), _pan())["mean"]
    assert quarter["warp_pixel_prev"] < 1e-5 and 1e-4 < quarter["warp_latent_prev"] < 2e-3
    # For scale: a visible 0.05 flicker gives 2.5e-3, a different photograph ~0.05.
    other = [np.ascontiguousarray(f[::-1]) for f in frames]
    assert score_clip(other[:1] + frames[1:], frames)["mean"]["warp_pixel_first"] > 1e-2


def test_known_flicker_scores_d_squared() -> None:
    d = 0.05
    frame = data.chelsea()[50:146, 100:228].astype(np.float32) / 255.0
    inputs = [frame] * 6  # a static shot: the input flow is exactly zero
    outputs = [frame + (d if j % 2 else 0.0) for j in range(6)]
    result = score_clip(outputs, inputs)
    prev = result["per_frame"]["warp_pixel_prev"][1:]
    assert prev == pytest.approx([d * d] * 5, rel=1e-4)
    first = result["per_frame"]["warp_pixel_first"][1:]
    assert first == pytest.approx([d * d, 0, d * d, 0, d * d], abs=1e-8)
    assert result["mean"]["e_warp"] == pytest.approx(d * d, rel=1e-4)
    assert result["mean"]["warp_latent_prev"] == pytest.approx(d * d, rel=1e-4)


def test_custom_encoder_is_used_and_labelled() -> None:
    frames = _pan(3, 64, 64)
    calls = []

    def encode(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return torch.nn.functional.avg_pool2d(x, 4)[:, :2] * 10

    scorer = ClipScorer(flow="dis-fast", encode=encode, factor=4, encoder_name="tiny-vae")
    out = score_clip(frames, frames, scorer=scorer)
    assert calls == [(1, 3, 64, 64)] * 3
    assert out["latent"] == "tiny-vae" and out["latent_factor"] == 4
    assert latent_proxy(torch.ones(1, 3, 16, 8)).shape == (1, 3, 2, 1)


def test_psnr_ssim_mse_known_images() -> None:
    img = data.astronaut()[:64, :64].astype(np.float32) / 255.0
    same = restoration_scores(img, img)
    assert same == {"mse": 0.0, "psnr": 100.0, "ssim": pytest.approx(1.0)}
    noisy = np.clip(img + 0.1, 0, None)  # offset 0.1 where nothing clips
    s = restoration_scores(img + 0.1, img)
    assert s["mse"] == pytest.approx(0.01, rel=1e-5)
    assert s["psnr"] == pytest.approx(20.0, abs=1e-3)
    assert s["ssim"] < 1.0
    mask = np.zeros((64, 64), np.float32)
    mask[10:20, 10:30] = 1
    broken = img.copy()
    broken[10:20, 10:30] += 0.2
    m = restoration_scores(broken, img, mask)
    assert m["mse"] == pytest.approx(0.04, rel=1e-5)  # only the masked pixels count
    assert m["psnr"] == pytest.approx(10 * math.log10(1 / 0.04), abs=1e-3)
    assert restoration_scores(broken, img)["mse"] == pytest.approx(0.04 * 200 / 4096, rel=1e-5)
    assert restoration_scores(noisy, img, np.zeros((64, 64)))["mse"] is None
    with pytest.raises(InvalidInput, match="reference: size"):
        restoration_scores(img, img[:32])


def test_masked_flow_fill_and_super_resolution_sizes() -> None:
    frames = _pan(3, 64, 64)
    masks = [np.zeros((64, 64), np.float32)] * 3
    r = score_clip(frames, frames, references=frames, masks=masks)
    assert r["per_frame"]["mse"] == [None, None, None]  # empty masks: no pixels to score
    big = [np.repeat(np.repeat(f, 2, 0), 2, 1) for f in frames]  # 2x output of the input
    up = score_clip(big, frames)
    assert up["mean"]["warp_pixel_prev"] < 2e-3


def test_errors_and_cancel() -> None:
    frames = _pan(3, 32, 32)
    with pytest.raises(InvalidInput, match="ended after 2 frames"):
        score_clip(frames, frames[:2])
    with pytest.raises(InvalidInput, match="flow"):
        ClipScorer(flow="optical")
    with pytest.raises(InvalidInput, match="output"):
        ClipScorer().add(np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.float32))
    with pytest.raises(Cancelled):
        score_clip(frames, frames, should_stop=lambda: True)


def test_cli_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = _pan(4, 64, 96)
    write_video(tmp_path / "in", frames, fps=24)  # 8-bit PNG folders: exact
    flick = [np.clip(f + (0.04 if j % 2 else 0.0), 0, 1) for j, f in enumerate(frames)]
    write_video(tmp_path / "out", flick, fps=24)
    code = main(["metrics", str(tmp_path / "out"), "--input", str(tmp_path / "in"),
                 "--reference", str(tmp_path / "in"), "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 4 and len(result["per_frame"]["psnr"]) == 4
    assert 1e-3 < result["mean"]["warp_pixel_prev"] < 2.5e-3  # ~0.04^2 less the clipped pixels
    assert result["mean"]["psnr"] > 25
    assert main(["metrics", str(tmp_path / "out"), "--input", str(tmp_path / "in")]) == 0
    table = capsys.readouterr().out
    assert "warp_pixel_prev" in table and "e_warp" in table
    write_video(tmp_path / "short", frames[:3])
    code = main(["metrics", str(tmp_path / "out"), "--input", str(tmp_path / "short")])
    assert code == 2
    assert "has 3 frames but the output" in capsys.readouterr().err
