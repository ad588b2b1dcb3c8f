"""Video and image-sequence IO: round trips, ordering, random access, masks, streaming."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from warpcore.errors import InvalidInput
from warpcore.video import FrameWriter, open_frames, open_masks, write_video


def _clip(n: int = 5, h: int = 48, w: int = 64, alpha: bool = False) -> list[np.ndarray]:
    """n frames of a real photograph panning right by 3 px a frame (values in [0, 1])."""
    img = data.astronaut().astype(np.float32) / 255.0
    x0 = [150 + 3 * i for i in range(n)]
    frames = [np.ascontiguousarray(img[100 : 100 + h, x : x + w]) for x in x0]
    if alpha:
        ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :].repeat(h, 0)
        frames = [np.dstack((f, ramp)) for f in frames]
    return frames


def _q(frames: list[np.ndarray], bits: int) -> list[np.ndarray]:
    s = 2.0**bits - 1
    return [np.rint(f * s) / s for f in frames]


@pytest.mark.parametrize("fmt,bits", [("png8", 8), ("png16", 16), ("tiff16", 16)])
def test_integer_folders_round_trip_exactly(tmp_path: Path, fmt: str, bits: int) -> None:
    frames = _q(_clip(alpha=fmt == "png16"), bits)
    with FrameWriter(tmp_path / "out", fmt=fmt) as w:
        for f in frames:
            w.write(f)
    src = open_frames(tmp_path / "out")
    assert len(src) == 5 and (src.height, src.width) == (48, 64) and src.bit_depth == bits
    assert src.channels == frames[0].shape[2]
    for got, want in zip(src, frames, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize("fmt", ["exr-half", "exr-float"])
def test_exr_round_trip_bit_exact_and_unclipped(tmp_path: Path, fmt: str) -> None:
    frames = [f * 4.0 - 1.0 for f in _clip(3, alpha=True)]  # linear values beyond [0, 1]
    if fmt == "exr-half":
        frames = [f.astype(np.float16).astype(np.float32) for f in frames]
    write = FrameWriter(tmp_path / "exr", fmt=fmt)
    for f in frames:
        write.write(f)
    src = open_frames(tmp_path / "exr")
    assert (
        src.kind == "exr" and src.channels == 4 and src.bit_depth == (16 if "half" in fmt else 32)
    )
    for got, want in zip(src, frames, strict=True):
        np.testing.assert_array_equal(got, want)
    # The output format follows the input's: EXR float in, EXR float out.
    with FrameWriter(tmp_path / "again", like=src) as w:
        w.write(src.read(0))
    assert w.kind == fmt and open_frames(tmp_path / "again").read(0).tolist() == frames[0].tolist()


def test_ffv1_lossless_and_h264_approximate(tmp_path: Path) -> None:
    frames = _q(_clip(6), 8)
    assert write_video(tmp_path / "a.mkv", frames, fps=25) == 6
    src = open_frames(tmp_path / "a.mkv")
    assert (len(src), src.fps, src.kind, src.channels) == (6, 25.0, "video", 3)
    for got, want in zip(src, frames, strict=True):
        np.testing.assert_array_equal(got, want.astype(np.float32))
    write_video(tmp_path / "a.mp4", frames, fps=24)
    src = open_frames(tmp_path / "a.mp4")
    assert len(src) == 6 and src.fps == 24.0
    for got, want in zip(src, frames, strict=True):
        # crf 16 with 4:2:0 chroma on this fine texture: measured mean abs error 0.012 (3/255),
        # max 0.10, the chroma subsampling dominating.
        assert np.abs(got - want).mean() < 0.02
    with pytest.raises(InvalidInput, match="even width and height"):
        write_video(tmp_path / "odd.mp4", [np.zeros((5, 7, 3), np.float32)])


def test_prores_with_alpha(tmp_path: Path) -> None:
    frames = _clip(3, alpha=True)
    write_video(tmp_path / "a.mov", frames)
    src = open_frames(tmp_path / "a.mov")
    assert src.channels == 4 and len(src) == 3 and src.bit_depth == 16
    got = src.read(2)
    assert np.abs(got[..., :3] - frames[2][..., :3]).mean() < 0.01
    assert np.abs(got[..., 3] - frames[2][..., 3]).max() < 0.01
    alphas = list(src.alpha())
    assert len(alphas) == 3 and alphas[0].shape == (48, 64)


def test_random_access_video_and_folder(tmp_path: Path) -> None:
    frames = _q(_clip(12, 32, 32), 8)
    with FrameWriter(tmp_path / "r.mkv", fps=30) as w:
        for f in frames:
            w.write(torch.from_numpy(f).permute(2, 0, 1))  # torch (C, H, W) input too
    src = open_frames(tmp_path / "r.mkv")
    for i in (7, 8, 2, 11, 0, -1):
        np.testing.assert_array_equal(src.read(i), frames[i].astype(np.float32))
    with pytest.raises(InvalidInput, match="index"):
        src.read(12)
    write_video(tmp_path / "seq", frames)
    seq = open_frames(tmp_path / "seq")
    np.testing.assert_array_equal(seq.read(9), frames[9].astype(np.float32))


def test_numeric_sort_and_single_image(tmp_path: Path) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    frames = _q(_clip(11, 16, 16), 8)
    with FrameWriter(tmp_path / "tmp") as w:
        for f in frames:
            w.write(f)
    for i in range(11):  # names frame_1 ... frame_11: lexical order would put 10 before 2
        (tmp_path / "tmp" / f"frame_{i:06d}.png").rename(folder / f"frame_{i + 1}.png")
    src = open_frames(folder)
    for i, got in enumerate(src):
        np.testing.assert_array_equal(got, frames[i].astype(np.float32))
    one = open_frames(folder / "frame_3.png")
    assert len(one) == 1 and one.kind == "png"
    np.testing.assert_array_equal(next(iter(one)), frames[2].astype(np.float32))


def test_unreadable_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file"):
        open_frames(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(InvalidInput, match="bad.png: cannot decode"):
        open_frames(bad)
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(InvalidInput, match="bad.mp4: cannot read it as a video"):
        open_frames(tmp_path / "bad.mp4")
    (tmp_path / "bad.exr").write_bytes(b"garbage")
    with pytest.raises(InvalidInput, match="bad.exr: cannot read it as EXR"):
        open_frames(tmp_path / "bad.exr")
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    with pytest.raises(InvalidInput, match="unsupported file type"):
        open_frames(tmp_path / "clip.gif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="holds no"):
        open_frames(tmp_path / "empty")
    with pytest.raises(InvalidInput, match="fmt"):
        FrameWriter(tmp_path / "x", fmt="jpeg")
    with pytest.raises(InvalidInput, match="NaN"):
        FrameWriter(tmp_path / "y").write(np.full((4, 4, 3), np.nan, np.float32))


def test_masks_every_form_and_their_errors(tmp_path: Path) -> None:
    frames = _clip(4, 16, 24, alpha=True)
    write_video(tmp_path / "clip", _q(frames, 16))  # 8-bit PNG with alpha: default png8
    src = open_frames(tmp_path / "clip")
    m = np.zeros((16, 24, 3), np.float32)
    m[4:10, 5:15] = 1
    write_video(tmp_path / "one.png.d", [m])
    single = open_masks(tmp_path / "one.png.d" / "frame_000000.png", src)
    got = list(single)
    assert len(got) == 4 and got[3].shape == (16, 24) and got[3][5, 6] == 1 and got[3][0, 0] == 0
    write_video(tmp_path / "seq", [m] * 4)
    assert len(list(open_masks(tmp_path / "seq", src))) == 4
    alpha = list(open_masks("alpha", src))
    assert len(alpha) == 4 and alpha[0][0, -1] == 1.0 and alpha[0][0, 0] == 0.0
    write_video(tmp_path / "short", [m] * 3)
    with pytest.raises(InvalidInput, match="has 3 frames but the video .* has 4"):
        open_masks(tmp_path / "short", src)
    write_video(tmp_path / "big", [np.zeros((18, 24, 3), np.float32)] * 4)
    with pytest.raises(InvalidInput, match="24x18 but the video .* is 24x16"):
        open_masks(tmp_path / "big", src)
    rgb = open_frames(tmp_path / "seq")
    with pytest.raises(InvalidInput, match="no alpha channel"):
        open_masks("alpha", rgb)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InvalidInput, match="broken.png"):
        open_masks(tmp_path / "broken.png", src)


def test_reading_streams_in_constant_memory(tmp_path: Path) -> None:
    frame = np.random.default_rng(0).random((96, 128, 3)).astype(np.float32)
    n = 60  # 60 frames of 147 KiB floats = 8.8 MiB if they were all kept
    write_video(tmp_path / "long", (frame for _ in range(n)))
    src = open_frames(tmp_path / "long")
    tracemalloc.start()
    count = 0
    for f in src:
        count += 1
        assert f.shape == (96, 128, 3)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == n
    assert peak < 2 * 1024 * 1024  # a few frames' worth (measured ~0.5 MiB), not the clip
