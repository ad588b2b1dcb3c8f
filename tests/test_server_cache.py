"""Shot keys, submit validation and the on-disk cache (atomic files, resume state)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from server.cache import ShotCache, ShotMeta
from server.protocol import ProtocolError, array_part
from server.shots import ShotInputs, parse_submit
from server.testing import tiny_shot

pytestmark = pytest.mark.timeout(60)


def _body(frames, masks=None, **request):
    parts, descs = [], []
    for f in frames:
        desc, buf = array_part(f, len(parts))
        descs.append(desc)
        parts.append(memoryview(buf).cast("B"))
    body = {"request": {"task": "inpaint", "steps": 3, **request}, "frames": descs}
    if isinstance(masks, str):
        body["masks"] = masks
    elif masks is not None:
        body["masks"] = []
        for m in masks:
            desc, buf = array_part(m, len(parts))
            body["masks"].append(desc)
            parts.append(memoryview(buf).cast("B"))
    return body, parts


def _key(frames, masks, **request):
    return parse_submit(*_body(frames, masks, **request), "gaussian", "cpu").meta.key


def test_the_shot_key_follows_parameters_and_pixels_not_the_device():
    frames, masks = tiny_shot(3, 16)
    key = _key(frames, masks)
    assert key == _key([f.copy() for f in frames], masks)
    assert key != _key(frames, masks, steps=4)
    assert key != _key(frames, masks, seed=1)
    changed = [f.copy() for f in frames]
    changed[2][5, 5, 1] += 1e-3
    assert key != _key(changed, masks)
    assert key != _key(frames, [np.roll(m, 1, 0) for m in masks])
    spec = parse_submit(*_body(frames, masks), "gaussian", "cuda")
    assert spec.meta.key == key and spec.meta.request["device"] == "cuda"


@pytest.mark.parametrize(
    "frames_masks_request, code, words",
    [
        ((tiny_shot(2, 16)[0], None, {}), "bad_body", "one matte per frame"),
        ((tiny_shot(2, 16)[0], "alpha", {}), "bad_body", "needs RGBA"),
        ((*tiny_shot(2, 16), {"task": "upscale"}), "bad_body", "takes no masks"),
        ((tiny_shot(2, 16)[0], tiny_shot(1, 16)[1], {}), "bad_body", "one matte per frame"),
        ((*tiny_shot(1, 16), {"sampler": "dpm"}), "bad_request", "accepted: euler, heun"),
        ((*tiny_shot(1, 16), {"colour": 1}), "bad_request", "unknown fields"),
        (([np.zeros((16, 16, 3), np.float32), np.zeros((16, 17, 3), np.float32)], None, {}),
         "bad_body", "of one size"),
    ],
)  # fmt: skip
def test_submit_validation_names_what_is_wrong(frames_masks_request, code, words):
    frames, masks, request = frames_masks_request
    with pytest.raises(ProtocolError) as info:
        parse_submit(*_body(frames, masks, **request), "gaussian", "cpu")
    assert info.value.code == code and words in info.value.message


def test_inputs_come_back_as_float_frames_and_masks(tmp_path):
    frames, masks = tiny_shot(2, 16)
    rgba = [np.concatenate([f, m], -1) for f, m in zip(frames, masks, strict=True)]
    as_u8 = [(f * 255 + 0.5).astype(np.uint8) for f in rgba]
    cache = ShotCache(tmp_path)
    spec = parse_submit(*_body(as_u8, "alpha"), "gaussian", "cpu")
    cache.create(spec.meta, spec.frames, spec.masks)
    inputs = ShotInputs(cache, cache.meta(spec.meta.key))
    frame, mask = inputs.frame_and_mask(1)
    assert frame.dtype == np.float32 and frame.shape == (16, 16, 3)
    np.testing.assert_allclose(frame, frames[1], atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(mask, masks[1][..., 0])
    assert cache.input_frame(spec.meta.key, 0).dtype == np.uint8  # stored as received


def _meta(key="ab12", n=3):
    return ShotMeta(key, {"task": "upscale"}, n, 4, 4, "none", "parts")


def test_done_counts_only_frames_the_state_vouches_for(tmp_path):
    cache = ShotCache(tmp_path)
    cache.create(_meta(), [np.zeros((4, 4, 3), np.float32)] * 3)
    assert cache.done("ab12") == 0
    cache.write_frame("ab12", 0, np.full((4, 4, 3), 0.25, np.float32))
    assert cache.done("ab12") == 0  # a frame without its state is not finished
    state = {"next_index": torch.tensor(1), "prev.denoised": torch.randn(2, 3)}
    cache.write_state("ab12", 1, state)
    assert cache.done("ab12") == 1
    cache.write_frame("ab12", 1, np.ones((4, 4, 3), np.float32))  # killed before its state
    assert cache.done("ab12") == 1
    next_index, loaded = cache.load_state("ab12")
    assert next_index == 1 and torch.equal(loaded["prev.denoised"], state["prev.denoised"])
    np.testing.assert_array_equal(cache.read_frame("ab12", 0), 0.25)


def test_leftovers_of_a_killed_writer_are_cleaned_and_never_listed(tmp_path):
    cache = ShotCache(tmp_path)
    cache.create(_meta())
    (tmp_path / "ab12" / "frames" / ".00000.npy.123.abcd.tmp").write_bytes(b"half")
    (tmp_path / ".cd34.123.abcd.tmp").mkdir()  # a shot folder never renamed into place
    (tmp_path / "ef56").mkdir()  # no meta.json: not a shot
    cache = ShotCache(tmp_path)
    assert cache.list_keys() == ["ab12"]
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.rglob("*.tmp"))
    assert json.loads((tmp_path / "ab12" / "meta.json").read_text())["n_frames"] == 3
    with pytest.raises(ValueError):
        cache.folder("../etc")
