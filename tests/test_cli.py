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


class _WriteHook:
    """Stands in for ``open`` inside :mod:`warpcore.writers`: while frame ``index``'s bytes are
    being written (half on disk, half not), ``during`` runs; every other write is untouched."""

    def __init__(self, index: int, during) -> None:
        self.index, self.during, self.hits = index, during, 0

    def __call__(self, path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)  # noqa: SIM115 -- returned to a ``with``
        if f"frame_{self.index:06d}" not in Path(path).name:
            return f
        hook = self
        write = f.write

        def half_then_hook(data: bytes) -> int:
            n = write(data[: len(data) // 2])
            f.flush()
            hook.hits += 1
            hook.during()
            return n + write(data[len(data) // 2 :])

        f.write = half_then_hook
        return f


def _inpaint_with_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: _WriteHook):
    from warpcore import writers

    frames, masks = write_clip(tmp_path, n=5)
    out = tmp_path / "out"
    monkeypatch.setattr(writers, "open", hook, raising=False)
    code = main(["inpaint", str(frames), "--mask", str(masks), "-o", str(out), *FAST])
    return code, out


def test_ctrl_c_during_a_frame_write_keeps_that_frame_and_stops_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A real SIGINT delivered (deterministically, by ``signal.raise_signal``) while frame 1's
    file is half written: the first Ctrl-C only asks to stop, so frame 1 is finished and kept,
    and the run stops before frame 2 with exit code 130. Fails if the first Ctrl-C aborts at
    once (frame 1 lost) or if the stop is not honoured (frames 2-4 written)."""
    import signal

    hook = _WriteHook(1, lambda: signal.raise_signal(signal.SIGINT))
    code, out = _inpaint_with_hook(tmp_path, monkeypatch, hook)
    err = capsys.readouterr().err
    assert code == 130 and hook.hits == 1, err
    assert "finished frames were kept" in err and "wrote 2 of 5 frames" in err
    assert sorted(p.name for p in out.iterdir()) == ["frame_000000.png", "frame_000001.png"]
    restored = list(video.open_frames(out))
    assert len(restored) == 2 and all(f.shape == (32, 32, 3) for f in restored)


def test_second_ctrl_c_during_a_frame_write_leaves_no_partial_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Two SIGINTs while frame 1's file is half written: the second aborts at once, inside the
    write. Frame 1 must not appear under its name (frames go to a hidden temp name and are
    renamed when whole), frame 0 stays whole, exit code 130. Fails if frames are written
    straight to their final name (a half PNG named frame_000001.png is left)."""
    import signal

    def twice() -> None:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)

    hook = _WriteHook(1, twice)
    code, out = _inpaint_with_hook(tmp_path, monkeypatch, hook)
    err = capsys.readouterr().err
    assert code == 130 and hook.hits == 1, err
    assert "finished frames were kept" in err
    assert [p.name for p in out.glob("frame_*")] == ["frame_000000.png"]
    restored = list(video.open_frames(out))
    assert len(restored) == 1 and restored[0].shape == (32, 32, 3)


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
        # Margins a loaded 2-core machine cannot miss: 40 frames of 40 steps take minutes, so
        # the signal always lands mid-run; the deterministic races are the two tests above.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(list(out.glob("*.png"))) < 2:
            time.sleep(0.05)
        assert len(list(out.glob("*.png"))) >= 2, "no frames within 300 s"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    written = sorted(out.glob("*.png"))
    assert proc.returncode == 130, err
    assert "finished frames were kept" in err
    assert 2 <= len(written) < 40
    restored = list(video.open_frames(out))  # every frame on disk is whole and readable
    assert len(restored) == len(written) and all(f.shape == (32, 32, 3) for f in restored)
