"""``kill -9`` mid-shot, restart on the same cache: no finished frame is lost, the shot resumes.

The server runs as ``warpdiff serve`` in a subprocess; the resumed frames are also checked
against an uninterrupted run of the same request (the restorer's state_dict is complete).
"""

from __future__ import annotations

import numpy as np
import pytest

from server.client import Client, Shot
from server.testing import ServerProcess, tiny_shot

pytestmark = pytest.mark.timeout(150)

REQUEST = {"task": "inpaint", "model": "gaussian", "steps": 3, "noise": "fixed", "guidance": 0.0,
           "flow": "dis-ultrafast"}  # fmt: skip
N = 6


def _uninterrupted(frames, masks):
    from warpcore.models import load_denoiser
    from warpcore.request import RestoreRequest
    from warpcore.restore import restore_clip

    request = RestoreRequest.from_dict(REQUEST)
    denoiser = load_denoiser("gaussian", "inpaint")
    clip = restore_clip(request, denoiser, iter(frames), (m[..., 0] for m in masks), n_frames=N)
    return [out for _, out in clip]  # in-process, propagation included


def test_kill_9_mid_shot_then_restart_resumes_without_losing_frames(tmp_path):
    frames, masks = tiny_shot(N, 32, seed=7)
    before: dict[int, np.ndarray] = {}
    first = ServerProcess(tmp_path, "--model", "gaussian")
    with first, Client(first.address, timeout=60) as client:
        key = client.submit(Shot(REQUEST, frames, masks))
        for ev in client.events(key, timeout=90):
            if ev.kind == "frame":
                before[ev.frame] = ev.image.copy()
                if ev.frame == 1:
                    first.kill9()  # mid-shot: frame 2 is being made
                    break
    assert sorted(before) == [0, 1]

    second = ServerProcess(tmp_path, "--model", "gaussian")
    with second, Client(second.address, timeout=60) as client:
        shots = {s["key"]: s for s in client.list_shots()}
        assert shots[key]["done"] >= 2 and shots[key]["state"] == "idle"
        reply = client.subscribe(key)  # resume, and stream every frame from 0
        assert reply["done"] >= 2
        events = list(client.events(key, timeout=90))
    started = next(e for e in events if e.kind == "started")
    assert 2 <= started.body["resume_from"] < N  # finished frames are not made again
    got = {e.frame: e.image for e in events if e.kind == "frame"}
    assert [e.frame for e in events if e.kind == "frame"] == list(range(N))
    assert events[-1].kind == "finished"
    for i, img in before.items():
        np.testing.assert_array_equal(got[i], img)  # served from the cache, bit for bit
    reference = _uninterrupted(frames, masks)
    for i in range(N):
        np.testing.assert_allclose(got[i], reference[i], atol=1e-5, err_msg=f"frame {i}")
