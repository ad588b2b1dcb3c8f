"""The shared host runner against a real server: cache replay, and a server killed mid-shot."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PARAMS
from warpdiff_host import runner
from warpdiff_host.errors import ServerUnavailable, ShotFailed
from warpdiff_host.exr import read_exr
from warpdiff_host.progress import Progress
from warpdiff_host.shot import ShotJob

from server.testing import ServerProcess, tiny_shot


def job(n: int = 4, size: int = 48, **params) -> ShotJob:
    frames, masks = tiny_shot(n, size, seed=5)
    return ShotJob("inpaint", "plate", 1, n, {**PARAMS, **params}, frames, masks)


def test_second_run_is_replayed_from_the_cache(server, tmp_path):
    first = runner.run_shot(job(), tmp_path, address=server.address)
    again = runner.run_shot(job(), tmp_path, address=server.address)
    assert not first.from_cache and again.from_cache
    assert again.key == first.key and again.folder == first.folder
    for n in range(1, 5):
        assert np.array_equal(read_exr(again.pattern % n), read_exr(first.pattern % n))
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.folder.name]


def test_a_refused_shot_says_why(server, tmp_path):
    with pytest.raises(ShotFailed, match="sampler"):
        runner.run_shot(job(sampler="dpm"), tmp_path, address=server.address)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_server_killed_mid_shot_then_restarted_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "HEARTBEAT_S", 0.5)
    cache, out = tmp_path / "cache", tmp_path / "out"
    long = job(n=8, steps=10, strength=1.0)
    with ServerProcess(cache, "--model", "builtin") as proc:

        def kill_after_first_frame(p: Progress) -> None:
            if p.done >= 1 and p.step < 0:
                proc.kill9()

        with pytest.raises(ServerUnavailable, match=r"stopped answering after [1-7] of 8 frames"):
            runner.run_shot(long, out, address=proc.address, on_progress=kill_after_first_frame)
    assert not out.exists() or list(out.iterdir()) == []  # nothing half-written
    with ServerProcess(cache, "--model", "builtin") as proc:
        result = runner.run_shot(long, out, address=proc.address)
    assert result.n_frames == 8 and not result.from_cache
    assert all((result.folder / f"plate.{n:04d}.exr").is_file() for n in range(1, 9))


def test_progress_text():
    assert Progress(2, 10, 1, 4, 75.0).text() == "frame 3 of 10, step 2/4, ETA 1 min 15 s"
    assert Progress(10, 10).text() == "frame 10 of 10" and Progress(10, 10).percent == 100
    assert Progress(0, 4, 3, 4).percent == 25


def test_a_link_folder_leading_outside_the_allowed_paths_is_refused(server, tmp_path, outside_dir):
    """Links inside an allowed folder to files outside it: refused, never read or cached."""
    from warpdiff_host.exr import write_exr
    from warpdiff_host.shot import link_frames

    frames, masks = tiny_shot(4, 48, seed=8)
    files = []
    for i, (f, m) in enumerate(zip(frames, masks, strict=True)):
        files.append(outside_dir / f"p.{i:04d}.exr")
        write_exr(files[-1], np.dstack([f, m]))
    links = link_frames(files, tmp_path / "links")
    shot = ShotJob("inpaint", "p", 0, 4, dict(PARAMS), masks="alpha", paths={"frames": str(links)})
    with pytest.raises(ShotFailed, match="links outside") as info:
        runner.run_shot(shot, tmp_path / "out", address=server.address)
    assert info.value.code == "bad_request"
