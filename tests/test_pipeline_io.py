"""A good pipeline citizen (issue 18): sound, frame names and numbers, colour, output rules,
one-line errors. Every clip here is real encoded media made in the test (PyAV, OpenEXR)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import OpenEXR
import pytest

from warpcore import colour, video
from warpcore.cli import main
from warpcore.sequences import Naming, parse_pattern, parse_sequence

REPO = Path(__file__).resolve().parents[1]
FAST = ["--steps", "2", "--flow", "dis-ultrafast", "--propagate", "0", "--quiet"]
RATE = Fraction(24000, 1001)


# -- media made here ----------------------------------------------------------------------------
def pattern(size: int, j: int) -> np.ndarray:
    """A smooth colourful frame, moving one pixel per frame, RGB uint8."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    r = 0.5 + 0.4 * np.sin((x + j) / 5.0)
    g = 0.5 + 0.4 * np.cos(y / 7.0)
    b = 0.5 + 0.3 * np.sin((x + y + j) / 9.0)
    return np.rint(np.dstack((r, g, b)) * 255).astype(np.uint8)


def make_mp4_with_aac(path: Path, n: int = 4, size: int = 32) -> None:
    """h264 at 24000/1001 with a timecode and Rec.709 tags, plus a stereo AAC tone."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=RATE)
        v.width = v.height = size
        v.pix_fmt = "yuv420p"
        ctx = v.codec_context
        ctx.color_primaries = ctx.color_trc = ctx.colorspace = 1
        v.metadata["timecode"] = "01:00:00:00"
        a = c.add_stream("aac", rate=48000)
        a.layout = "stereo"
        for j in range(n):
            frame = av.VideoFrame.from_ndarray(pattern(size, j), format="rgb24")
            for p in v.encode(frame.reformat(format="yuv420p", dst_colorspace=1)):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        t = 0
        for _ in range(int(48000 * n / RATE) // 1024 + 4):  # longer than the video
            s = (0.3 * np.sin(np.arange(t, t + 1024) / 48000 * 2 * np.pi * 440)).astype(np.float32)
            f = av.AudioFrame.from_ndarray(
                np.stack([s, s]).T.reshape(1, -1), format="flt", layout="stereo"
            )
            f.sample_rate, f.pts = 48000, t
            t += 1024
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)


def audio_packets(path: Path, end_s: float | None = None) -> list[bytes]:
    with av.open(str(path)) as c:
        out = []
        for p in c.demux(c.streams.audio[0]):
            if p.pts is None:
                continue
            if end_s is not None and float(p.pts * p.time_base) >= end_s - 1e-9:
                continue
            out.append(bytes(p))
        return out


def write_mask(path: Path, size: int, box: tuple[int, int, int, int] = (8, 20, 10, 22)) -> Path:
    m = np.zeros((size, size, 3), np.uint8)
    m[box[0] : box[1], box[2] : box[3]] = 255
    cv2.imwrite(str(path), m)
    return path


def hole(size: int, box: tuple[int, int, int, int] = (8, 20, 10, 22)) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[box[0] : box[1], box[2] : box[3]] = True
    return m


def write_exr(path: Path, rgba: np.ndarray) -> None:
    channels = {n: np.ascontiguousarray(rgba[..., i]) for i, n in enumerate("RGBA")}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, channels) as f:
        f.write(str(path))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- sound, rate, timecode ----------------------------------------------------------------------
def test_mp4_with_aac_keeps_its_audio_packets_rate_timecode_and_tags(
    tmp_path: Path, capsys
) -> None:
    src = tmp_path / "shot.mp4"
    make_mp4_with_aac(src)
    mask = write_mask(tmp_path / "mask.png", 32)
    out = tmp_path / "clean.mp4"
    assert main(["inpaint", str(src), "--mask", str(mask), "-o", str(out), *FAST]) == 0
    assert "audio copied" in capsys.readouterr().err
    end = 4 / RATE  # all 4 frames written: the audio is cut at their end
    expected = audio_packets(src, float(end))
    assert len(expected) >= 5 and len(expected) < len(audio_packets(src))
    assert audio_packets(out) == expected  # the same bytes: copied, never re-encoded
    res = video.open_frames(out)
    assert len(res) == 4 and res.meta is not None
    assert res.meta.rate == RATE and res.meta.timecode == "01:00:00:00"
    assert dict(res.meta.colour)["colorspace"] == 1 and dict(res.meta.colour)["color_trc"] == 1
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"

    folder = tmp_path / "frames"
    assert main(["inpaint", str(src), "--mask", str(mask), "-o", str(folder), *FAST]) == 0
    assert "audio was not kept" in capsys.readouterr().err


# -- names, numbers, linear light, alpha --------------------------------------------------------
def make_exr_plate(folder: Path, size: int = 32, n: int = 3) -> list[np.ndarray]:
    folder.mkdir()
    frames = []
    for j in range(n):
        rgb = 6.0 * (pattern(size, j).astype(np.float32) / 255.0) ** 2.2  # linear, up to ~4
        rgb[2:6, 2:30] *= 4.0  # and a highlight far above 1, outside the hole
        alpha = np.linspace(0.2, 1.0, size, dtype=np.float32)[None, :].repeat(size, 0)
        rgba = np.dstack((rgb, alpha)).astype(np.float32)
        write_exr(folder / f"plate.{1001 + j}.exr", rgba)
        frames.append(rgba)
    return frames


def test_exr_plate_keeps_names_numbers_linear_values_alpha_and_gets_chromaticities(
    tmp_path: Path,
) -> None:
    frames = make_exr_plate(tmp_path / "plate")
    mask = write_mask(tmp_path / "mask.png", 32)
    out = tmp_path / "out"
    args = ["inpaint", str(tmp_path / "plate"), "--mask", str(mask), "-o", str(out), *FAST]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"plate.{n}.exr" for n in (1001, 1002, 1003)]
    keep = ~hole(32)
    for j, src in enumerate(frames):
        path = out / f"plate.{1001 + j}.exr"
        with OpenEXR.File(str(path)) as f:
            chroma = f.header()["chromaticities"]
        assert np.allclose(chroma, (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290), atol=1e-4)
        res, depth = video.read_image(path)
        assert depth == 32 and res.shape == (32, 32, 4)
        assert np.array_equal(res[keep], src[keep])  # bit-identical, values above 1 included
        assert np.array_equal(res[..., 3], src[..., 3])  # alpha carried over everywhere
        assert res[keep].max() > 5.0
        inside = res[hole(32)][..., :3]
        assert np.isfinite(inside).all() and inside.min() >= 0.0
        assert inside.max() > 1.5  # a bright fill survives the model's [0, 1] range

    pat = tmp_path / "comp" / "shot_clean.####.exr"
    args = ["inpaint", str(tmp_path / "plate"), "--mask", str(mask), "-o", str(pat), *FAST]
    assert main(args) == 0
    names = sorted(p.name for p in (tmp_path / "comp").iterdir())
    assert names == [f"shot_clean.{n}.exr" for n in (1001, 1002, 1003)]
    with OpenEXR.File(str(tmp_path / "comp" / names[0])) as f:
        assert "chromaticities" in f.header()
    assert colour.chromaticities("ACEScg")[-2:] == (0.32168, 0.33767)  # ACES white, not D65


def test_the_model_sees_display_referred_values_and_highlights_come_back() -> None:
    plan = colour.ColourPlan.make("exr", "exr", None, None)
    linear = np.array([[[0.0, 0.18, 1.0], [4.0, 8.0, 20.0]]], np.float32)
    seen = plan.to_model(linear)
    assert seen.min() >= 0.0 and seen.max() < 1.0  # the model's own range
    assert abs(seen[0, 0, 1] - 0.4613) < 2e-3  # 18% grey is sRGB-encoded (0.461), not 0.18
    assert np.allclose(plan.from_model(seen), linear, rtol=2e-3, atol=1e-4)
    video_plan = colour.ColourPlan.make("video", "video", None, None)
    x = np.random.default_rng(0).random((4, 4, 3), dtype=np.float32)
    assert np.array_equal(video_plan.to_model(x), x)  # display-referred input: identity
    with pytest.raises(colour.InvalidInput, match="colourspace"):
        colour.ColourPlan.make("exr", "exr", "no_such_space", None)


def test_srgb_video_to_exr_and_back_within_one_code_value(tmp_path: Path) -> None:
    src = tmp_path / "shot.mkv"  # lossless 8-bit RGB video
    with video.FrameWriter(src, fps=24) as w:
        for j in range(3):
            w.write(pattern(32, j).astype(np.float32) / 255.0)
    mask = write_mask(tmp_path / "mask.png", 32)
    exr = tmp_path / "lin"
    assert (
        main(
            [
                "inpaint",
                str(src),
                "--mask",
                str(mask),
                "-o",
                str(exr),
                "--format",
                "exr-float",
                *FAST,
            ]
        )
        == 0
    )
    keep = ~hole(32)
    first = video.open_frames(exr).read(0)
    code = pattern(32, 0).astype(np.float64) / 255.0
    srgb_eotf = np.where(code <= 0.04045, code / 12.92, ((code + 0.055) / 1.055) ** 2.4)
    assert np.abs(first[keep] - srgb_eotf[keep]).max() < 1e-4  # linearised, not code/255
    with OpenEXR.File(str(next(exr.iterdir()))) as f:
        assert "chromaticities" in f.header()
    back = tmp_path / "back.mkv"
    assert main(["inpaint", str(exr), "--mask", str(mask), "-o", str(back), *FAST]) == 0
    for a, b in zip(video.open_frames(src), video.open_frames(back), strict=True):
        assert np.abs(a[keep] - b[keep]).max() <= 1 / 255 + 1e-6


# -- output rules -------------------------------------------------------------------------------
def png_clip(folder: Path, n: int, size: int = 32, value: float | None = None) -> Path:
    with video.FrameWriter(folder, fmt="png") as w:
        for j in range(n):
            img = pattern(size, j).astype(np.float32) / 255.0
            w.write(np.full_like(img, value) if value is not None else img)
    return folder


def test_an_existing_output_is_refused_unless_overwrite(tmp_path: Path, capsys) -> None:
    frames = png_clip(tmp_path / "in", 3)
    mask = write_mask(tmp_path / "mask.png", 32)
    out = tmp_path / "out.mkv"
    out.write_bytes(b"an editor's earlier render")
    args = ["inpaint", str(frames), "--mask", str(mask), "-o", str(out), *FAST]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == b"an editor's earlier render"
    assert main([*args, "--overwrite"]) == 0
    assert len(video.open_frames(out)) == 3


def test_a_folder_with_more_old_frames_ends_with_exactly_the_new_ones(
    tmp_path: Path, capsys
) -> None:
    frames = png_clip(tmp_path / "in", 3)
    mask = write_mask(tmp_path / "mask.png", 32)
    out = png_clip(tmp_path / "out", 6, value=0.0)  # an older, longer render: black frames
    (out / "notes.txt").write_text("not a frame")
    args = ["inpaint", str(frames), "--mask", str(mask), "-o", str(out), *FAST]
    assert main(args) == 2
    assert "6 frame(s)" in capsys.readouterr().err and len(list(out.glob("*.png"))) == 6
    assert main([*args, "--overwrite"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [f"frame_{j:06d}.png" for j in range(3)]
    assert (out / "notes.txt").exists()  # only frames are removed
    res = video.open_frames(out)
    assert len(res) == 3 and all(f.max() > 0.1 for f in res)  # the new frames, not the black


def test_a_bad_extension_and_an_odd_size_for_mp4_fail_before_any_compute(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    import warpcore.models

    def no_model(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a model was loaded before the output was checked")

    monkeypatch.setattr(warpcore.models, "load_denoiser", no_model)
    odd = png_clip(tmp_path / "odd", 3, size=33)
    mask = write_mask(tmp_path / "mask.png", 33)
    for output, words in ((tmp_path / "o.xyz", "accepted"), (tmp_path / "o.mp4", "odd")):
        code = main(["inpaint", str(odd), "--mask", str(mask), "-o", str(output), "--steps", "2"])
        err = capsys.readouterr().err
        assert code == 2 and words in err and "wrote" not in err, err
        assert not output.exists()


def test_option_checks() -> None:
    assert parse_sequence([Path("plate.1001.exr"), Path("plate.1002.exr")]) == Naming(
        "plate.", 4, ".exr", 1001
    )
    assert parse_sequence([Path("a_0998.png"), Path("a_0999.png"), Path("a_1000.png")]) == Naming(
        "a_", 4, ".png", 998
    )
    assert parse_pattern("out/shot_clean.%04d.exr", 1001)[1].name(1) == "shot_clean.1002.exr"


# -- one-line errors, fast, no hangs ------------------------------------------------------------
def run_cli(args: list[str]) -> tuple[int, str, float]:
    env = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "warpcore.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    return proc.returncode, proc.stderr, time.perf_counter() - start


@pytest.mark.timeout(240)
def test_device_and_server_mistakes_are_one_line_and_quick(tmp_path: Path) -> None:
    import torch

    frames = png_clip(tmp_path / "in", 3)
    mask = write_mask(tmp_path / "mask.png", 32)
    base = ["inpaint", str(frames), "--mask", str(mask), "-o", str(tmp_path / "out"), *FAST]
    port = free_port()  # nothing listens here
    cases = [
        (["--device", "gpu"], "this build has: cpu"),
        (["--server", f"localhost:{port}"], f"tcp://localhost:{port}"),  # no scheme: tcp://
        (["--server", f"tcp://127.0.0.1:{port}"], "no warpdiff server answers"),
    ]
    if not torch.cuda.is_available():
        cases.insert(0, (["--device", "cuda"], "CPU-only"))
    for extra, words in cases:
        code, err, _ = run_cli([*base, *extra])  # a fresh process: tracebacks would show
        assert code != 0 and "Traceback" not in err, err
        assert err.count("\n") == 1 and words in err, err
        start = time.perf_counter()  # the check itself, without the interpreter's start-up
        assert main([*base, *extra]) != 0
        assert time.perf_counter() - start < 3.0, extra
    assert not (tmp_path / "out").exists()
    for command in (["demo", "-o", str(tmp_path / "d")], ["eval", "-o", str(tmp_path / "e")]):
        assert main([*command, "--device", "gpu"]) == 2  # the other commands check it too
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


@pytest.mark.timeout(30)
def test_a_dying_client_thread_wakes_every_waiter() -> None:
    from server.client import Client

    client = Client(f"127.0.0.1:{free_port()}", timeout=60)

    def broken(*_args: object) -> None:
        raise RuntimeError("simulated failure in the I/O thread")

    client._flush = broken  # type: ignore[method-assign]  # the next send kills the thread
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="simulated failure"):
        client.hello()  # would wait 60 s for a reply that can never come
    assert time.perf_counter() - start < 5.0
    with pytest.raises(ConnectionError):
        client.hello()
    client.close()


# -- words --------------------------------------------------------------------------------------
def test_help_texts_say_what_applies(capsys) -> None:
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "super-resolution" in top and "Pipelines section)." in top
    for command, has_propagate in (("inpaint", True), ("upscale", False)):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert ("--propagate" in text) is has_propagate
        assert "0.5 with 10 steps runs 5 steps" in text and "--overwrite" in text


def test_the_progress_bar_total_is_right_from_the_start(tmp_path: Path, capsys) -> None:
    frames = png_clip(tmp_path / "in", 3)
    mask = write_mask(tmp_path / "mask.png", 32)
    args = ["inpaint", str(frames), "--mask", str(mask), "-o", str(tmp_path / "o")]
    assert main([*args, "--steps", "4", "--strength", "0.5", "--flow", "dis-ultrafast"]) == 0
    err = capsys.readouterr().err
    import re

    totals = {int(t) for t in re.findall(r"\d+/(\d+) \[", err)}
    assert totals == {3 * 2}, err  # 3 frames x round(0.5 x 4) steps, from the first line


def test_metrics_tables_come_with_a_legend(tmp_path: Path, capsys) -> None:
    clip = png_clip(tmp_path / "in", 3)
    assert main(["metrics", str(clip), "--input", str(clip), "--reference", str(clip)]) == 0
    out = capsys.readouterr().out
    table, legend = out.split("what the numbers measure")
    keys = [line.split()[0] for line in table.splitlines()[2:] if line.strip()]
    assert {"warp_pixel_prev", "e_warp", "psnr"} <= set(keys)
    for key in keys:
        line = next(x for x in legend.splitlines() if x.strip().startswith(f"{key}:"))
        assert ("lower is better" in line) != ("higher is better" in line), line
        assert "frame" in line or "mask" in line or "grid" in line, line  # the region


def test_the_noise_demo_says_what_to_watch(capsys) -> None:
    from warpcore.commands import noise_demo

    frames = noise_demo.render(frames=2, size=16, scale=2, seed=0)
    plain = noise_demo._mosaic([np.zeros((36, 32, 3), np.float32)] * 6, columns=5)
    band = frames[0][plain.shape[0] :]
    assert band.shape[0] >= 18 and band.max() > 0.9  # text drawn under the tiles
    assert "fixed sticks to the screen" in noise_demo.CAPTION


def test_an_exr_plate_through_the_server_keeps_names_linear_values_and_alpha(
    tmp_path: Path,
) -> None:
    from server.testing import running_server

    frames = make_exr_plate(tmp_path / "plate")
    mask = write_mask(tmp_path / "mask.png", 32)
    out = tmp_path / "out"
    with running_server(tmp_path / "cache", model="builtin") as server:
        address = server.address.removeprefix("tcp://")  # scheme-less, as users type it
        args = ["inpaint", str(tmp_path / "plate"), "--mask", str(mask), "-o", str(out)]
        assert main([*args, *FAST, "--server", address]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"plate.{n}.exr" for n in (1001, 1002, 1003)]
    keep = ~hole(32)
    for j, src in enumerate(frames):
        res, _ = video.read_image(out / f"plate.{1001 + j}.exr")
        assert np.array_equal(res[keep], src[keep]) and np.array_equal(res[..., 3], src[..., 3])
        assert np.isfinite(res).all() and res[hole(32)][..., :3].max() > 1.5


@pytest.mark.timeout(180)
def test_a_job_stopped_through_the_server_says_cancelled(tmp_path: Path, capsys) -> None:
    import threading

    from server.client import Client
    from server.testing import running_server

    frames = png_clip(tmp_path / "in", 30)
    mask = write_mask(tmp_path / "mask.png", 32)
    out = tmp_path / "out"
    result: list[int] = []
    with running_server(tmp_path / "cache", model="gaussian") as server:
        args = ["inpaint", str(frames), "--mask", str(mask), "-o", str(out), "--quiet"]
        args += ["--model", "gaussian", "--steps", "30", "--flow", "dis-ultrafast"]
        job = threading.Thread(
            target=lambda: result.append(main([*args, "--server", server.address]))
        )
        job.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(out.glob("*.png"))) < 1:
            time.sleep(0.05)
        with Client(server.address) as other:
            for shot in other.list_shots():
                other.cancel(shot["key"])
        job.join(120)
    assert result == [130]
    err = capsys.readouterr().err
    assert "cancelled" in err and "interrupted" not in err
    assert 1 <= len(list(out.glob("*.png"))) < 30
