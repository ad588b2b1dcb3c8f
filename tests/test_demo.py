"""``warpdiff demo`` end to end at a tiny size with the analytic Gaussian model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from warpcore.cli import main
from warpcore.commands.demo import demo_checks, side_by_side
from warpcore.video import open_frames


def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    args = ["demo", "-o", str(out), "--model", "gaussian", "--size", "32", "48", "--frames", "3"]
    assert main([*args, "--steps", "1", "--quiet"]) == 0
    for task, methods in (("inpaint", ("warped", "gp", "resample", "telea")),
                          ("upscale", ("warped", "gp", "resample", "bicubic"))):  # fmt: skip
        for name in (*methods, "input", "truth", "side_by_side"):
            video = open_frames(out / task / f"{name}.mp4")
            assert len(video) == 3, (task, name)
        assert (video.height, video.width) == (32 * 8 + 22, 48 * 8 * 3 + 8)  # zoom 8, labels
    report = json.loads((out / "report.json").read_text())
    checks = report["checks"]
    assert len(checks) == 6  # 2 inpaint (warp error, PSNR), 4 upscale (warp, PSNR, SSIM, vs GT)
    assert all(isinstance(c["passed"], bool) and c["detail"] for c in checks)
    md = (out / "report.md").read_text()
    assert "## Checks" in md and md.count("PASS") + md.count("FAIL") >= 6
    assert "upscale/side_by_side.mp4" in md
    assert len(list(out.glob("warp_*.png"))) == 2
    assert "side_by_side.mp4" in capsys.readouterr().err  # it says where to look


def _group(task: str, values: dict[str, dict[str, float]], truth: float | None = None) -> dict:
    methods = {n: {"mean": v} for n, v in values.items()}
    return {"task": task, "methods": methods,
            "truth": {"mean": {"warp_pixel_first": truth}} if truth else None}  # fmt: skip


def test_demo_checks_are_computed_from_the_numbers() -> None:
    key = "warp_pixel_first"
    inpaint = _group("inpaint", {
        "warped": {key: 0.001, "psnr": 20.5}, "gp": {key: 0.01, "psnr": 21.0},
        "resample": {key: 0.02, "psnr": 22.0}, "telea": {key: 0.0001, "psnr": 18.0},
    })  # fmt: skip
    upscale = _group("upscale", {
        "warped": {key: 0.002, "psnr": 30.0, "ssim": 0.90}, "gp": {key: 0.001, "psnr": 29.0},
        "resample": {key: 0.01, "psnr": 29.0}, "bicubic": {key: 0.001, "psnr": 28.0, "ssim": 0.92},
    }, truth=0.001)  # fmt: skip
    checks = demo_checks({"groups": [inpaint, upscale]})
    passed = [c["passed"] for c in checks]
    # inpaint: lowest warp (vs telea ignored: not diffusion) yes; PSNR 20.5 vs 22.0 > 1 dB: no.
    # upscale: warp 0.002 vs gp 0.001: no; PSNR yes; SSIM 0.90 < 0.92: no; 0.002 > 1.5 * 0.001.
    assert passed == [True, False, False, True, False, False]
    assert "20.50 dB vs 22.00 dB (resample)" in checks[1]["detail"]
    assert "ratio 2.00" in checks[5]["detail"]


def test_side_by_side_is_even_and_labelled() -> None:
    a = np.zeros((6, 8, 3), np.float32)  # a low-res input is scaled up to the panel size
    b = np.ones((24, 32, 3), np.float32)
    frame = side_by_side([(a, "input"), (b, "output"), (b, "truth")], (24, 32))
    assert frame.shape[0] % 2 == 0 and frame.shape[1] % 2 == 0
    assert frame.shape[0] == 24 * 10 + 22 and frame.dtype == np.float32
    assert frame[:22].max() > 0.5  # the label strip has text in it
