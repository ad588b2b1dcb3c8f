"""The OpenFX plugin, driven by our own OpenFX test host against a real `warpdiff serve`.

The plugin and the test host are built once per session (and once more with ASan + UBSan);
one server (built-in model) serves the module. Frames rendered through the host must equal what
`warpdiff inpaint` / `upscale` write for the same clip, matte and parameters.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from server.client import Client
from server.ofx_build import BuildError, build_ofx, missing_tools, plugin_binary
from server.testing import ServerProcess, tiny_shot

REPO = Path(__file__).resolve().parent.parent
N, SIZE = 4, 32
STEPS = "2"

pytestmark = pytest.mark.skipif(
    bool(missing_tools()), reason=f"the C++ build needs {missing_tools()} (.ci/run installs them)"
)


@pytest.fixture(scope="session")
def build() -> Path:
    try:
        return build_ofx(REPO / "build" / "ofx")
    except BuildError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def asan_build() -> Path:
    try:
        return build_ofx(REPO / "build" / "ofx-asan", sanitize=True)
    except BuildError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("cache"), "--model", "builtin") as srv:
        yield srv


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict:
    """RGBA frames whose alpha is the matte, the mattes alone, as raw files and EXR folders."""
    from warpcore.writers import _write_exr

    root = tmp_path_factory.mktemp("clip")
    frames, masks = tiny_shot(N, SIZE)
    rgba = np.stack([np.concatenate([f, m], -1) for f, m in zip(frames, masks, strict=True)])
    rgba = rgba.astype(np.float32)
    mattes = np.stack(masks).astype(np.float32)
    rgba.tofile(root / "in.f32")
    mattes.tofile(root / "mask.f32")
    (root / "exr").mkdir()
    (root / "mask_exr").mkdir()
    # 8-bit: the same clip quantised, as the raw file the host serves as bytes and as PNGs.
    import cv2

    q = np.round(rgba * 255) / 255
    q.astype(np.float32).tofile(root / "in_u8.f32")
    (root / "png").mkdir()
    for i in range(N):
        bgra = (q[i][..., [2, 1, 0, 3]] * 255).round().astype(np.uint8)
        cv2.imwrite(str(root / "png" / f"frame_{i:06d}.png"), bgra)
    for i in range(N):
        _write_exr(root / "exr" / f"frame_{i:06d}.exr", rgba[i], half=False)
        _write_exr(root / "mask_exr" / f"mask_{i:06d}.exr", np.repeat(mattes[i], 3, -1), False)
    return {"root": root, "rgba": rgba, "mattes": mattes}


def run_host(
    build: Path,
    clip: dict,
    *args: str,
    output: bool = True,
    timeout: float = 300,
    env: dict | None = None,
    source: str = "in.f32",
) -> tuple[dict, np.ndarray | None, str]:
    out = clip["root"] / f"out_{os.getpid()}.f32"
    cmd = [str(build / "ofx_testhost"), "--input", str(clip["root"] / source)]
    cmd += ["--size", f"{N},{SIZE},{SIZE}", *args]
    if output:
        cmd += ["--output", str(out)]
    environ = dict(os.environ, OFX_PLUGIN_PATH=str(build), **(env or {}))
    done = subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    image = None
    if output:
        h = int(report["rod"][3] - report["rod"][1])
        w = int(report["rod"][2] - report["rod"][0])
        image = np.fromfile(out, np.float32).reshape(N, h, w, 4)
    return report, image, done.stderr


def run_cli(clip: dict, task: str, *args: str, source: str = "exr") -> np.ndarray:
    """`warpdiff inpaint|upscale` in this process (one thread, like the test server)."""
    import torch

    from warpcore.cli import main
    from warpcore.video import open_frames

    cached = clip.setdefault("cli", {}).get((task, args, source))
    if cached is not None:  # the same job twice in this module: its output is the same
        return cached
    out = clip["root"] / f"cli_{task}_{len(clip['cli'])}"
    argv = [task, str(clip["root"] / source), "-o", str(out), "--steps", STEPS]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # The plugin sends pixel values as they are: no colourspace conversion on either side.
        raw = ["--colorspace", "srgb_tx", "--output-colorspace", "srgb_tx"]
        assert main([*argv, "--format", "exr-float", "--quiet", *raw, *args]) == 0
    finally:
        torch.set_num_threads(threads)
    source = open_frames(out)
    result = np.stack([np.asarray(source.read(i))[..., :3] for i in range(len(source))])
    clip["cli"][(task, args, source)] = result
    return result


def common(server: ServerProcess) -> list[str]:
    return ["--param", f"server={server.address}", "--param", f"steps={STEPS}"]


def assert_clean(report: dict) -> None:
    assert report["fetched"] > 0
    assert report["fetched"] == report["released"], "an image the plugin fetched was not released"


def test_exports_only_the_openfx_entry_points(build):
    out = subprocess.run(
        ["nm", "-D", "--defined-only", str(plugin_binary(build))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = sorted(line.split()[-1] for line in out.splitlines() if line.strip())
    assert names == ["OfxGetNumberOfPlugins", "OfxGetPlugin"]


def test_core_unit_tests(build):
    done = subprocess.run([str(build / "core_tests")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_matte_from_alpha_equals_cli_inpaint(build, server, clip):
    args = ("--repeat", "2", "--param", "uploadBatch=3")  # two batches, pipelined
    report, image, _ = run_host(build, clip, *common(server), *args)
    assert_clean(report)
    assert all(r["status"] == 0 for r in report["renders"]), report["renders"]
    assert report["frames_needed"] == [0, N - 1]  # temporal access: the whole shot
    assert report["persistent"] == ""
    expected = run_cli(clip, "inpaint", "--mask", "alpha")
    np.testing.assert_allclose(image[..., :3], expected, atol=1e-6)
    assert np.all(image[..., 3] == 1.0)
    # Frames already made come from the server's cache (measured, not asserted):
    print(f"cached frame round trips through the host: {report['repeat_s']} s")


def test_matte_from_mask_clip_equals_cli_inpaint(build, server, clip):
    mask = str(clip["root"] / "mask.f32")
    report, image, _ = run_host(
        build,
        clip,
        *common(server),
        "--context",
        "general",
        "--mask",
        mask,
        "--process",
        "--param",
        "uploadBatch=1",  # four batches of a frame and its matte, pipelined
    )
    assert_clean(report)
    assert report["process"] == 0 and len(report["shot"]) == 32
    assert all(r["status"] == 0 for r in report["renders"])
    expected = run_cli(clip, "inpaint", "--mask", str(clip["root"] / "mask_exr"))
    np.testing.assert_allclose(image[..., :3], expected, atol=1e-6)


def test_resolve_mode_uses_alpha_and_survives_thumbnails(build, server, clip):
    mask = str(clip["root"] / "mask.f32")  # the host hands out NULL images for it anyway
    report, image, _ = run_host(
        build, clip, *common(server), "--context", "general", "--mask", mask, "--resolve"
    )
    assert_clean(report)
    thumb = [r for r in report["renders"] if r["scale"] != 1]
    assert thumb and thumb[0]["status"] == 0  # a thumbnail render: the source, no processing
    assert all(r["status"] == 0 for r in report["renders"])
    expected = run_cli(clip, "inpaint", "--mask", "alpha")
    np.testing.assert_allclose(image[..., :3], expected, atol=1e-6)


def test_byte_host_images_equal_cli_to_the_byte(build, server, clip):
    """8-bit host images go as uint8 (no float on the wire) and come back rounded to 8 bits."""
    args = ("--depth", "byte", "--negative-rowbytes")
    report, image, _ = run_host(build, clip, *common(server), *args, source="in_u8.f32")
    assert_clean(report)
    assert all(r["status"] == 0 for r in report["renders"])
    expected = run_cli(clip, "inpaint", "--mask", "alpha", source="png")
    assert np.abs(image[..., :3] - expected).max() <= 0.5 / 255 + 1e-6


def test_upscale_declares_scaled_region_and_equals_cli(build, server, clip):
    report, image, _ = run_host(build, clip, *common(server), "--param", "task=1")
    assert_clean(report)
    assert report["rod"] == [0, 0, 2 * SIZE, 2 * SIZE]
    assert all(r["status"] == 0 for r in report["renders"])
    expected = run_cli(clip, "upscale", "--scale", "2")
    np.testing.assert_allclose(image[..., :3], expected, atol=1e-6)


def test_changed_parameter_is_a_new_shot_and_same_is_cached(build, server, clip):
    args = (*common(server), "--process", "--frames", "0")
    first, _, _ = run_host(build, clip, *args, "--param", "seed=5", output=False)
    again, _, _ = run_host(build, clip, *args, "--param", "seed=5", output=False)
    other, _, _ = run_host(build, clip, *args, "--param", "seed=6", output=False)
    assert first["shot"] and first["shot"] == again["shot"]
    assert other["shot"] != first["shot"]
    with Client(server.address) as c:
        keys = {s["key"] for s in c.list_shots()}
    assert {first["shot"], other["shot"]} <= keys


def test_server_down_is_a_persistent_error_within_the_timeout(build, clip):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["--param", f"server=tcp://127.0.0.1:{port}", "--param", "timeout=1", "--frames", "1"]
    report, _, _ = run_host(build, clip, *args, "--threads", "1")
    assert_clean(report)
    (render,) = report["renders"]
    assert render["status"] == 1  # kOfxStatFailed
    assert render["end"] - render["start"] < 3.0
    assert "warpdiff serve" in report["persistent"]


def test_abort_during_wait_returns_promptly(build, server, clip):
    # 200 steps a frame (the most the plugin takes): the render takes 2.2-2.8 s here alone and
    # once finished inside a 1.5 s abort in a full run, so the host aborts at 0.5 s
    args = ["--param", f"server={server.address}", "--param", "steps=200", "--param", "seed=77"]
    report, _, _ = run_host(
        build, clip, *args, "--frames", str(N - 1), "--abort-after", "0.5", "--threads", "1"
    )
    assert_clean(report)
    (render,) = report["renders"]
    assert render["status"] == 1
    assert render["end"] >= report["abort_at"]  # it was still waiting when the host aborted
    assert render["end"] - report["abort_at"] < 0.5
    with Client(server.address) as c:  # stop the long shot: the rest of the module is faster
        for shot in c.list_shots():
            if shot["state"] in ("running", "queued"):
                c.cancel(shot["key"])


def test_sanitizers_clean(asan_build, server, clip):
    done = subprocess.run([str(asan_build / "core_tests")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "halt_on_error=1"}
    report, image, stderr = run_host(asan_build, clip, *common(server), "--repeat", "1", env=env)
    assert_clean(report)
    assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr[-3000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = ["--param", f"server=tcp://127.0.0.1:{port}", "--param", "timeout=0.5"]
    report, _, stderr = run_host(asan_build, clip, *down, "--frames", "0", env=env)
    assert report["renders"][0]["status"] == 1
    assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr[-3000:]


def test_long_upload_reuses_a_few_buffers_and_sends_every_frame_intact(build, server, tmp_path):
    """24 frames and mattes in batches of 2: the plugin packs them into a handful of reused
    buffers (the server's limit of two batches in flight, one being read), and what reaches
    the server is every
    frame's and matte's exact bytes: the Python client's upload of the same clip gives the
    same shot key (the key hashes every input byte)."""
    n = 24
    frames, masks = tiny_shot(n, SIZE, seed=3)
    rgba = np.stack([np.concatenate([f, m], -1) for f, m in zip(frames, masks, strict=True)])
    rgba.astype(np.float32).tofile(tmp_path / "in.f32")
    np.stack(masks).astype(np.float32).tofile(tmp_path / "mask.f32")
    cmd = [str(build / "ofx_testhost"), "--input", str(tmp_path / "in.f32")]
    cmd += ["--size", f"{n},{SIZE},{SIZE}", "--context", "general"]
    cmd += ["--mask", str(tmp_path / "mask.f32"), "--process", "--no-render"]
    cmd += [*common(server), "--param", "seed=11", "--param", "uploadBatch=2"]
    env = dict(os.environ, OFX_PLUGIN_PATH=str(build), WD_OFX_TIMING="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert_clean(report)
    assert report["process"] == 0 and len(report["shot"]) == 32
    (line,) = [x for x in done.stderr.splitlines() if "timing: upload" in x]
    buffers = int(line.rsplit(";", 1)[1].split()[0])
    assert 2 <= buffers <= 3 * 2 * 2, line  # frames and mattes of three batches at most
    # pipelined up to the server's limit: the next batch is on the wire while one is stored
    assert "2 frames a batch, at most 2 batches in flight (server's limit 2)" in line, line
    request = {"task": "inpaint", "seed": 11, "noise": "gp", "composite": True}
    request.update(propagate=8, steps=int(STEPS))
    rgb = [f.astype(np.float32) for f in frames]
    with Client(server.address) as c:
        mattes = [m.astype(np.float32) for m in masks]
        key = c.upload(request, rgb, n, mattes, batch=5, subscribe=False, timeout=60)
        for k in {key, report["shot"]}:
            c.cancel(k)
    assert key == report["shot"]
