"""Nuke round trips against a real server: fake ``nuke`` (fakes/nuke.py), real files."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import nuke
import numpy as np
import pytest
import warpdiff_nuke
from conftest import (
    HOST_PATHS,
    PARAMS,
    ROOT,
    SAME_FRAME_ATOL,
    folder_of,
    make_clip,
    warpdiff_inpaint,
)
from warpdiff_host.errors import ServerUnavailable
from warpdiff_host.exr import frame_file, read_exr
from warpdiff_nuke import commands
from warpdiff_nuke.graph import KEY_KNOB

NUKE_DIR = ROOT / "host_plugins" / "nuke"


@pytest.fixture(autouse=True)
def fresh_nuke():
    nuke.fake.reset(gui=True)
    yield nuke.fake


def read_frames(read) -> list[np.ndarray]:
    first, last = read["first"].value(), read["last"].value()
    return [read_exr(frame_file(read["file"].value(), n)) for n in range(first, last + 1)]


def assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=SAME_FRAME_ATOL)  # float32 EXR both ways


def test_remove_object_with_a_matte_node_renders_frames_and_returns_a_read(server, tmp_path):
    clip = make_clip(tmp_path / "plate", 1001, matte_in_alpha_only=True)  # the matte's alpha
    src = nuke.nodes.Read(file=clip.pattern, first=1001, last=1004)
    src.setXYpos(100, 200)
    matte = nuke.nodes.Read(file=clip.matte_pattern, first=1001, last=1004)
    out = tmp_path / "out"
    read = warpdiff_nuke.remove_object(
        src, matte=matte, address=server.address, output_dir=str(out), **PARAMS
    )
    want = warpdiff_inpaint(
        folder_of(clip, range(1001, 1005), tmp_path / "ref_in"),
        str(folder_of(clip, range(1001, 1005), tmp_path / "ref_matte", matte=True)),
        tmp_path / "ref_out",
        PARAMS,
    )
    assert_same([f[..., :3] for f in read_frames(read)], want)
    assert read.Class() == "Read" and (read["first"].value(), read["last"].value()) == (1001, 1004)
    assert read.name() == f"WD_{src.name()}_inpaint"
    assert "remove object" in read["label"].value() and "steps 4" in read["label"].value()
    assert len(read[KEY_KNOB].value()) == 32
    assert read.xpos() > src.xpos() and read.ypos() == src.ypos()
    assert [n.Class() for n in nuke.allNodes()] == ["Read", "Read", "Read"]  # no Write left
    assert [e[1:] for e in nuke.fake.executed] == [(1001, 1004), (1001, 1004)]  # rgb, alpha
    messages = nuke.fake.tasks[-1].messages
    assert any(m.startswith("frame 1 of 4") for m in messages)
    assert nuke.fake.tasks[-1].progress == 100
    assert sorted(p.name for p in out.iterdir()) == [Path(read["file"].value()).parent.name]


def test_paths_mode_path_with_spaces_and_non_ascii_then_cache(server, tmp_path):
    clip = make_clip(tmp_path / "Café scène 1" / "plaque été", 11, alpha=True)
    src = nuke.nodes.Read(file=clip.pattern.replace("%04d", "####"), first=11, last=14)
    read = warpdiff_nuke.remove_object(src, address=server.address, **PARAMS)
    assert nuke.fake.executed == []  # sent as paths: nothing rendered
    assert Path(read["file"].value()).parent.parent == clip.folder / "warpdiff"
    want = warpdiff_inpaint(
        folder_of(clip, range(11, 15), tmp_path / "ref_in"), "alpha", tmp_path / "ref_out", PARAMS
    )
    assert_same([f[..., :3] for f in read_frames(read)], want)
    assert not (clip.folder / "warpdiff" / ".inputs").exists()  # the links are gone
    # the same shot again: served from the server's cache, the same files and key
    again = warpdiff_nuke.remove_object(src, address=server.address, **PARAMS)
    assert again[KEY_KNOB].value() == read[KEY_KNOB].value()
    assert again["file"].value() == read["file"].value() and again.name() != read.name()
    assert not any("step" in m for m in nuke.fake.tasks[-1].messages)  # nothing recomputed
    assert_same([f[..., :3] for f in read_frames(again)], want)


def test_upscale_a_non_read_node_equals_the_cli(server, tmp_path):
    clip = make_clip(tmp_path / "small", 5)
    read = nuke.nodes.Read(file=clip.pattern, first=5, last=8)
    dot = nuke.nodes.Dot()  # not a Read: the frames are rendered, the range is the project's
    dot.setInput(0, read)
    nuke.root()["first_frame"].setValue(5)
    nuke.root()["last_frame"].setValue(8)
    params = {"scale": 2, "steps": 4, "seed": 1}
    big = warpdiff_nuke.upscale(
        dot, address=server.address, output_dir=str(tmp_path / "o"), **params
    )
    want = warpdiff_inpaint(
        folder_of(clip, range(5, 9), tmp_path / "ref_in"), None, tmp_path / "ref", params
    )
    assert_same(read_frames(big), want)
    assert want[0].shape == (96, 96, 3) and "upscale" in big["label"].value()


def test_cancel_from_the_progress_task_imports_nothing_and_a_rerun_finishes(server, tmp_path):
    clip = make_clip(tmp_path / "long", 1, n=8, alpha=True)
    src = nuke.nodes.Read(file=clip.pattern, first=1, last=8)
    src.setSelected(True)
    out = tmp_path / "out"
    os.environ["WARPDIFF_SERVER"], os.environ["WARPDIFF_OUTPUT_DIR"] = server.address, str(out)
    try:
        nuke.fake.cancel_tasks_when = lambda task: any("frame 2 of" in m for m in task.messages)
        params = {"steps": 10, "strength": 1.0, "seed": 1}
        job = warpdiff_nuke.start("inpaint", src, send="frames", **params)
        nuke.fake.run_main_queue(until=lambda: not job.thread.is_alive())
        assert job.read is None and "cancelled after" in str(job.error)
        assert any("run again to resume" in m for m in nuke.fake.messages)
        assert [n.Class() for n in nuke.allNodes()] == ["Read"]
        assert not out.exists() or not list(out.iterdir())
        nuke.fake.cancel_tasks_when = None
        job = warpdiff_nuke.start("inpaint", src, send="frames", **params)
        nuke.fake.run_main_queue(until=lambda: not job.thread.is_alive() and job.read is not None)
        assert job.error is None and len(read_frames(job.read)) == 8
    finally:
        del os.environ["WARPDIFF_SERVER"], os.environ["WARPDIFF_OUTPUT_DIR"]


def test_server_down_shows_a_clear_message_and_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WARPDIFF_CONNECT_TIMEOUT", "0.5")
    clip = make_clip(tmp_path / "plate", 1, alpha=True)
    src = nuke.nodes.Read(file=clip.pattern, first=1, last=4)
    out = tmp_path / "out"
    with pytest.raises(ServerUnavailable, match="no warpdiff server answers at tcp://127.0.0.1:9"):
        warpdiff_nuke.remove_object(src, address="127.0.0.1:9", output_dir=str(out))
    src.setSelected(True)
    os.environ["WARPDIFF_SERVER"] = "tcp://127.0.0.1:9"
    try:
        assert commands.remove_object_selected() is None
    finally:
        del os.environ["WARPDIFF_SERVER"]
    assert "warpdiff serve" in nuke.fake.messages[-1]
    assert nuke.allNodes() == [src] and not out.exists() and nuke.fake.executed == []


def test_batch_session_runs_init_py_and_prints_progress(server, tmp_path):
    """A ``nuke -t`` style run: no GUI, init.py only, the Python API, progress on stdout."""
    clip = make_clip(tmp_path / "batch", 1, alpha=True)
    script = tmp_path / "farm job.py"
    script.write_text(
        "import runpy, sys\n"
        "import nuke\n"
        "nuke.fake.reset(gui=False)\n"
        f"runpy.run_path({str(NUKE_DIR / 'init.py')!r})\n"
        "import warpdiff_nuke\n"
        f"src = nuke.nodes.Read(file={clip.pattern!r}, first=1, last=4)\n"
        f"r = warpdiff_nuke.remove_object(src, send='frames', address={server.address!r},"
        f" output_dir={str(tmp_path / 'out')!r}, steps=4, seed=3)\n"
        "print('READ', r['file'].value(), r['first'].value(), r['last'].value())\n"
        "assert 'torch' not in sys.modules and 'warpcore' not in sys.modules\n"
    )
    env = dict(os.environ, PYTHONPATH=str(HOST_PATHS[0]))  # the fake nuke only: init.py adds ours
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warped Diffusion: 100% frame 4 of 4" in proc.stdout
    pattern, first, last = proc.stdout.split("READ ", 1)[1].split()
    assert (int(first), int(last)) == (1, 4)
    assert all(frame_file(pattern, n).is_file() for n in range(1, 5))


def test_menu_py_adds_the_menu_and_toolbar():
    runpy.run_path(str(NUKE_DIR / "init.py"))
    runpy.run_path(str(NUKE_DIR / "menu.py"))
    items = ["Remove object", "Upscale", "Open panel", "Server status"]
    for bar in ("Nuke", "toolbar:Nodes"):
        assert list(nuke.fake.menus[bar].items["Warped Diffusion"].items) == items
    assert str(ROOT / "host_plugins" / "common") in nuke.fake.plugin_paths


def test_server_status_reports_the_server(server, monkeypatch):
    monkeypatch.setenv("WARPDIFF_SERVER", server.address)
    text = commands.server_status()
    assert f"at {server.address}" in text and "model builtin" in text


def test_frame_range_handles_stay_inside_the_footage(tmp_path):
    from warpdiff_host.errors import HostError
    from warpdiff_nuke.graph import frame_range

    read = nuke.nodes.Read(file=str(tmp_path / "a.%04d.exr"), first=1001, last=1100)
    assert frame_range(read, None, None, 0) == (1001, 1100)
    assert frame_range(read, 1010, 1020, 8) == (1002, 1028)
    assert frame_range(read, 1003, 1098, 8) == (1001, 1100)  # clamped to the Read
    nuke.root()["first_frame"].setValue(10)
    nuke.root()["last_frame"].setValue(20)
    assert frame_range(nuke.nodes.Dot(), None, None, 2) == (10, 20)
    with pytest.raises(HostError, match="handles"):
        frame_range(read, None, None, -1)


def test_open_panel_starts_the_panel_on_the_server_address(tmp_path, monkeypatch):
    record = tmp_path / "args.txt"
    panel = tmp_path / "fake panel.py"
    panel.write_text(f"import sys\nopen({str(record)!r}, 'w').write(' '.join(sys.argv[1:]))\n")
    monkeypatch.setenv("WARPDIFF_PANEL", f"{sys.executable} '{panel}'")
    monkeypatch.setenv("WARPDIFF_SERVER", "127.0.0.1:6000")
    commands.open_panel().wait(30)
    assert record.read_text() == "--server tcp://127.0.0.1:6000"


def test_bad_address_and_empty_matte_are_refused_before_any_render(server, tmp_path):
    from warpdiff_host.errors import HostError

    clip = make_clip(tmp_path / "plate", 1)  # RGB only: its alpha is empty
    src = nuke.nodes.Read(file=clip.pattern, first=1, last=4)
    with pytest.raises(HostError, match="expected tcp://HOST:PORT"):
        warpdiff_nuke.remove_object(src, address="tcp://nowhere")
    with pytest.raises(HostError, match="alpha.*empty in every frame"):
        warpdiff_nuke.remove_object(src, send="frames", address=server.address)
    assert [n.Class() for n in nuke.allNodes()] == ["Read"]  # the temporary Write is gone


def test_auto_falls_back_to_frames_when_the_server_may_not_read_the_path(
    server, tmp_path, outside_dir
):
    clip = make_clip(outside_dir / "plate", 1, alpha=True)
    src = nuke.nodes.Read(file=clip.pattern, first=1, last=4)
    read = warpdiff_nuke.remove_object(src, address=server.address, **PARAMS)  # out beside
    assert [e[1:] for e in nuke.fake.executed] == [(1, 4)]  # rendered after the refusal
    want = warpdiff_inpaint(
        folder_of(clip, range(1, 5), tmp_path / "ref_in"), "alpha", tmp_path / "ref", PARAMS
    )
    assert_same([f[..., :3] for f in read_frames(read)], want)
