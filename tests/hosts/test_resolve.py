"""Resolve round trips against a real server: fake ``DaVinciResolveScript``, real files."""

from __future__ import annotations

import DaVinciResolveScript as dvr
import numpy as np
import pytest
import warpdiff_resolve
from conftest import PARAMS, SAME_FRAME_ATOL, folder_of, make_clip, warpdiff_inpaint
from warpdiff_host.errors import HostError, ServerUnavailable, ShotFailed
from warpdiff_host.exr import read_exr
from warpdiff_resolve import Settings
from warpdiff_resolve.form import from_answers
from warpdiff_resolve.source import parse_media_path

RECORD = 86400 + 48  # 00:00:02:00 into a timeline starting at 01:00:00:00 (24 fps)


@pytest.fixture(autouse=True)
def fresh_resolve():
    dvr.fake.reset()
    yield dvr.fake


def result_frames(outcome) -> list[np.ndarray]:
    r = outcome.result
    return [read_exr(r.pattern % n)[..., :3] for n in range(r.first, r.last + 1)]


def test_item_with_a_source_offset_as_paths_lands_on_the_track_above(server, tmp_path):
    """Source in-point 3 of a 1001-1010 sequence: file frames 1004-1007; non-ASCII path."""
    clip = make_clip(tmp_path / "Bobines à l'été" / "plan 12", 1001, n=10, alpha=True, seed=2)
    media = dvr.fake.add_sequence_clip(clip.pattern, 1001, 1010)
    item = dvr.fake.add_item(media, record=RECORD, duration=4, offset=3)
    settings = Settings(address=server.address, params=dict(PARAMS))
    seen = []
    outcome = warpdiff_resolve.run(
        settings, resolve=dvr.scriptapp("Resolve"), on_progress=seen.append
    )
    want = warpdiff_inpaint(
        folder_of(clip, range(1004, 1008), tmp_path / "ref_in"), "alpha", tmp_path / "ref", PARAMS
    )
    got = result_frames(outcome)
    assert len(got) == 4
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=SAME_FRAME_ATOL)
    assert (outcome.result.first, outcome.result.last) == (1004, 1007)  # file frame numbers
    assert outcome.result.folder.parent == clip.folder / "warpdiff"  # beside the source
    bins = dvr.fake.project.media_pool.root.GetSubFolderList()
    assert [b.GetName() for b in bins] == ["Warped Diffusion"]
    assert bins[0].GetClipList() == [outcome.media_item]
    placed = outcome.timeline_item
    assert placed.GetTrackTypeAndIndex() == ["video", item.GetTrackTypeAndIndex()[1] + 1]
    assert (placed.GetStart(), placed.GetEnd()) == (item.GetStart(), item.GetEnd())
    assert seen and seen[-1].done == 4
    assert not (clip.folder / "warpdiff" / ".inputs").exists()  # the links are gone


def test_frames_with_a_matte_file_and_offset_equal_the_cli(server, tmp_path):
    clip = make_clip(tmp_path / "shot", 1, n=8, seed=4)
    media = dvr.fake.add_sequence_clip(clip.pattern, 1, 8)
    dvr.fake.add_item(media, record=RECORD, duration=4, offset=2, track=2)
    settings = Settings(
        matte=clip.matte_pattern.replace("%04d", "####"),
        send="frames",
        place_on_track=False,
        output_dir=str(tmp_path / "renders"),
        address=server.address,
        params=dict(PARAMS),
    )
    outcome = warpdiff_resolve.run(settings, resolve=dvr.scriptapp("Resolve"), on_progress=None)
    want = warpdiff_inpaint(
        folder_of(clip, range(3, 7), tmp_path / "ref_in"),
        str(folder_of(clip, range(3, 7), tmp_path / "ref_matte", matte=True)),
        tmp_path / "ref",
        PARAMS,
    )
    for g, w in zip(result_frames(outcome), want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=SAME_FRAME_ATOL)
    assert outcome.timeline_item is None
    assert dvr.fake.project.timeline.GetTrackCount("video") == 2  # nothing added
    # the same item again with paths: another key (other inputs), both land in the one bin
    settings.send = "paths"
    again = warpdiff_resolve.run(settings, resolve=dvr.scriptapp("Resolve"), on_progress=None)
    for g, w in zip(result_frames(again), want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=SAME_FRAME_ATOL)
    bins = dvr.fake.project.media_pool.root.GetSubFolderList()
    assert len(bins) == 1 and len(bins[0].GetClipList()) == 2


@pytest.mark.parametrize("kind", ["mov", "mp4"])
def test_movie_output_is_imported_and_placed(server, tmp_path, kind):
    clip = make_clip(tmp_path / "shot", 1, alpha=True)
    item = dvr.fake.add_item(dvr.fake.add_sequence_clip(clip.pattern, 1, 4), RECORD, 4, 0)
    settings = Settings(output=kind, address=server.address, params=dict(PARAMS))
    outcome = warpdiff_resolve.run(settings, resolve=dvr.scriptapp("Resolve"), on_progress=None)
    assert outcome.movie.suffix == f".{kind}" and outcome.movie.is_file()
    assert outcome.media_item.GetClipProperty("File Path") == str(outcome.movie)
    assert outcome.media_item.GetClipProperty("Frames") == "4"
    assert (outcome.timeline_item.GetStart(), outcome.timeline_item.GetEnd()) == (
        item.GetStart(),
        item.GetEnd(),
    )
    import av

    with av.open(str(outcome.movie)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(np.float32) / 255
    exr = read_exr(outcome.result.pattern % 1)[..., :3]
    assert np.abs(first - exr).mean() < 0.03  # lossy codec: close, not equal


def test_auto_sends_frames_when_the_server_may_not_read_the_media(server, tmp_path, outside_dir):
    clip = make_clip(outside_dir / "shot", 1, n=6, alpha=True)
    dvr.fake.add_item(dvr.fake.add_sequence_clip(clip.pattern, 1, 6), RECORD, 4, 1)
    settings = Settings(address=server.address, params=PARAMS)
    outcome = warpdiff_resolve.run(settings, resolve=dvr.scriptapp("Resolve"), on_progress=None)
    want = warpdiff_inpaint(
        folder_of(clip, range(2, 6), tmp_path / "ref_in"), "alpha", tmp_path / "ref", PARAMS
    )
    for g, w in zip(result_frames(outcome), want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=SAME_FRAME_ATOL)
    with pytest.raises(ShotFailed, match="may read"):  # asked for paths: the refusal is shown
        settings.send = "paths"
        warpdiff_resolve.run(settings, resolve=dvr.scriptapp("Resolve"), on_progress=None)


def test_server_down_imports_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WARPDIFF_CONNECT_TIMEOUT", "0.5")
    clip = make_clip(tmp_path / "shot", 1, alpha=True)
    dvr.fake.add_item(dvr.fake.add_sequence_clip(clip.pattern, 1, 4), RECORD, 4, 0)
    settings = Settings(address="tcp://127.0.0.1:9", output_dir=str(tmp_path / "out"))
    with pytest.raises(ServerUnavailable, match="no warpdiff server answers"):
        warpdiff_resolve.run(settings, resolve=dvr.scriptapp("Resolve"))
    assert dvr.fake.project.media_pool.root.GetSubFolderList() == []
    assert dvr.fake.project.timeline.GetTrackCount("video") == 1
    assert not (tmp_path / "out").exists()


def test_cancel_imports_nothing(server, tmp_path):
    clip = make_clip(tmp_path / "long", 1, n=8, alpha=True)
    dvr.fake.add_item(dvr.fake.add_sequence_clip(clip.pattern, 1, 8), RECORD, 8, 0)
    seen = []
    settings = Settings(address=server.address, params={"steps": 10, "strength": 1.0, "seed": 9})
    with pytest.raises(HostError, match="cancelled after"):
        warpdiff_resolve.run(
            settings,
            resolve=dvr.scriptapp("Resolve"),
            on_progress=seen.append,
            should_stop=lambda: any(p.done >= 1 for p in seen),
        )
    assert dvr.fake.project.media_pool.root.GetSubFolderList() == []
    out = clip.folder / "warpdiff"
    assert not out.exists() or not list(out.iterdir())


def test_resolve_not_running_and_no_item_are_clear(monkeypatch):
    dvr.fake.reset(running=False)
    with pytest.raises(HostError, match="External scripting"):
        warpdiff_resolve.connect_resolve()
    dvr.fake.reset()
    with pytest.raises(HostError, match="no video item under the playhead"):
        warpdiff_resolve.run(Settings(), resolve=dvr.scriptapp("Resolve"))


def test_script_environment_per_os():
    mac = warpdiff_resolve.script_environment("darwin", {})
    assert mac["RESOLVE_SCRIPT_API"].startswith("/Library/Application Support/Blackmagic")
    win = warpdiff_resolve.script_environment("win32", {"PROGRAMDATA": r"D:\PD"})
    assert win["RESOLVE_SCRIPT_API"].startswith(r"D:\PD\Blackmagic Design")
    assert win["RESOLVE_SCRIPT_LIB"].endswith("fusionscript.dll")
    lin = warpdiff_resolve.script_environment("linux", {"RESOLVE_SCRIPT_API": "/x"})
    assert lin == {
        "RESOLVE_SCRIPT_API": "/x",
        "RESOLVE_SCRIPT_LIB": "/opt/resolve/libs/Fusion/fusionscript.so",
    }


def test_media_paths_and_form_answers():
    assert parse_media_path("/a b/plate.[0998-1100].exr") == ("/a b/plate.%04d.exr", 998)
    assert parse_media_path("/a/take.mov") == ("/a/take.mov", None)
    s = from_answers({"task": "inpaint", "matte": " ", "steps": "6", "seed": "", "place": False})
    assert s.matte is None and s.params == {"steps": 6} and not s.place_on_track
    with pytest.raises(HostError, match="accepted: exr, mov, mp4"):
        Settings(output="gif").check()
