"""The main job from the command line: inpaint and upscale, in-process and on a server."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data, transform

from warpcore import video
from warpcore.cli import main

FAST = ["--model", "gaussian", "--steps", "3", "--flow", "dis-ultrafast", "--quiet"]


def write_clip(folder: Path, n: int = 3, size: int = 32, shift: int = 1) -> tuple[Path, Path]:
    photo = transform.resize(data.coffee(), (size + n * shift, size + n * shift)).astype(np.float32)
    frames, masks = folder / "frames", folder / "masks"
    with video.FrameWriter(frames, fmt="png") as fw, video.FrameWriter(masks, fmt="png") as mw:
        for j in range(n):
            fw.write(photo[:size, j * shift : j * shift + size])
            m = np.zeros((size, size, 3), np.float32)
            m[8:20, 10 + j : 22 + j] = 1.0
            mw.write(m)
    return frames, masks


def test_inpaint_writes_every_frame_and_keeps_known_pixels(tmp_path: Path) -> None:
    frames, masks = write_clip(tmp_path)
    out = tmp_path / "out"
    assert main(["inpaint", str(frames), "--mask", str(masks), "-o", str(out), *FAST]) == 0
    src, res, mat = (
        video.open_frames(frames),
        video.open_frames(out),
        video.open_masks(str(masks), video.open_frames(frames)),
    )
    assert len(res) == 3 and res.kind == "png"
    for a, b, m in zip(src, res, mat, strict=True):
        keep = m < 0.5
        assert np.abs(a[keep] - b[keep]).max() <= 1 / 255 + 1e-6  # 8-bit PNG round trip


def test_upscale_video_to_video(tmp_path: Path) -> None:
    frames, _ = write_clip(tmp_path, size=16)
    low = tmp_path / "low.mkv"
    video.write_video(low, iter(video.open_frames(frames)), fps=12)
    out = tmp_path / "up.mkv"
    assert main(["upscale", str(low), "--scale", "2", "-o", str(out), *FAST]) == 0
    res = video.open_frames(out)
    assert (len(res), res.height, res.width) == (3, 32, 32)


def test_bad_inputs_exit_with_a_clear_message(tmp_path: Path, capsys) -> None:
    frames, masks = write_clip(tmp_path)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    assert main(["upscale", str(bad), "-o", str(tmp_path / "x"), *FAST]) == 2
    assert "broken.mp4" in capsys.readouterr().err
    short = tmp_path / "short"
    with video.FrameWriter(short, fmt="png") as w:
        for _ in range(2):
            w.write(np.zeros((32, 32, 3), np.float32))
    code = main(["inpaint", str(frames), "--mask", str(short), "-o", str(tmp_path / "y"), *FAST])
    assert code == 2 and "has 2 frames" in capsys.readouterr().err
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((32, 32, 3), np.uint8))
    code = main(["inpaint", str(frames), "--mask", str(empty), "-o", str(tmp_path / "e"), *FAST])
    assert code == 2 and "empty in every frame" in capsys.readouterr().err
    assert (
        main(
            [
                "inpaint",
                str(frames),
                "--mask",
                str(masks),
                "-o",
                str(tmp_path / "z"),
                "--steps",
                "0",
                "--model",
                "gaussian",
            ]
        )
        == 2
    )
    assert "steps" in capsys.readouterr().err


def test_inpaint_through_the_server(tmp_path: Path) -> None:
    from server.testing import running_server

    frames, masks = write_clip(tmp_path)
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert main(["inpaint", str(frames), "--mask", str(masks), "-o", str(local), *FAST]) == 0
    with running_server(
        tmp_path / "cache", model="gaussian", allow_paths=(str(tmp_path),)
    ) as server:
        args = [
            "inpaint",
            str(frames),
            "--mask",
            str(masks),
            "-o",
            str(remote),
            *FAST,
            "--server",
            server.address,
        ]
        assert main(args) == 0
    a, b = list(video.open_frames(local)), list(video.open_frames(remote))
    assert len(a) == len(b) == 3
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    "command",
    ["inpaint", "upscale", "demo", "metrics", "train", "eval", "serve", "bench", "noise-demo"],
)
def test_every_subcommand_has_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0 and "usage" in capsys.readouterr().out


def test_ctrl_c_stops_cleanly_and_keeps_finished_frames(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    frames, masks = write_clip(tmp_path, n=40)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "warpcore.cli",
        "inpaint",
        str(frames),
        "--mask",
        str(masks),
        "-o",
        str(out),
        "--model",
        "gaussian",
        "--steps",
        "40",
        "--flow",
        "dis-ultrafast",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(out.glob("*.png"))) < 2:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    written = sorted(out.glob("*.png"))
    assert proc.returncode == 130, err
    assert "finished frames were kept" in err
    assert 2 <= len(written) < 40
    restored = list(video.open_frames(out))  # every frame on disk is whole and readable
    assert len(restored) == len(written) and all(f.shape == (32, 32, 3) for f in restored)
