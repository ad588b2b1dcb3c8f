"""Suite generators: deterministic, exact ground truth, exact flows consistent with the frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from warpcore.errors import InvalidInput
from warpcore.flow import warp
from warpcore.suites import (
    DemoConfig,
    SuiteConfig,
    demo_clips,
    downsample,
    photo,
    suite_clips,
    video_suite,
)

TINY = SuiteConfig(clips=2, frames=4, size=(32, 48), seed=3)


def _arrays(clip) -> list[np.ndarray]:
    fields = (clip.inputs, clip.masks, clip.truth, clip.forward, clip.backward)
    return [np.asarray(a) for a in fields if a is not None]


@pytest.mark.parametrize("suite", ["shift-inpaint", "shift-sr", "motion-inpaint", "motion-sr"])
def test_generators_are_deterministic(suite: str) -> None:
    first, again = suite_clips(suite, TINY), suite_clips(suite, TINY)
    other = suite_clips(suite, SuiteConfig(clips=2, frames=4, size=(32, 48), seed=4))
    for a, b in zip(first, again, strict=True):
        assert a.name == b.name
        for x, y in zip(_arrays(a), _arrays(b), strict=True):
            assert x.dtype == y.dtype and np.array_equal(x, y)
    # A different seed changes the clips (motion and masks are drawn from the seed).
    assert not all(
        np.array_equal(x, y)
        for a, b in zip(first, other, strict=True)
        for x, y in zip(_arrays(a), _arrays(b), strict=True)
    )


def test_demo_is_deterministic() -> None:
    cfg = DemoConfig(size=(32, 48), frames=3)
    a, b = demo_clips(cfg), demo_clips(cfg)
    for x, y in zip(a, b, strict=True):
        for u, v in zip(_arrays(x), _arrays(y), strict=True):
            assert np.array_equal(u, v)


def test_shift_ground_truth_is_exact_slices_of_the_photo() -> None:
    clip = suite_clips("shift-inpaint", SuiteConfig(clips=1, frames=5, size=(40, 56)))[0]
    vx, vy = clip.info["shift_px"]
    ox, oy = clip.info["canvas_origin"]
    canvas = clip.info["canvas"]
    # The canvas is the photograph itself, resized once (area) before any cropping.
    src = photo(clip.info["photo"])
    assert canvas.shape[0] / canvas.shape[1] == pytest.approx(src.shape[0] / src.shape[1], 0.01)
    truth = np.asarray(clip.truth)
    h, w = 40, 56
    for t in range(5):
        y, x = oy - vy * t, ox - vx * t
        assert np.array_equal(truth[t], canvas[y : y + h, x : x + w])  # pixel for pixel
        # The content moved by exactly (vx, vy) * t: np.roll of frame 0 on the interior.
        rolled = np.roll(truth[0], (vy * t, vx * t), axis=(0, 1))
        my, mx = abs(vy) * t, abs(vx) * t
        assert np.array_equal(truth[t][my : h - my, mx : w - mx], rolled[my : h - my, mx : w - mx])
        # The mask is attached to the scene: it moves the same way.
        masks = np.asarray(clip.masks)
        rolled_m = np.roll(masks[0], (vy * t, vx * t), axis=(0, 1))
        assert np.array_equal(
            masks[t][my : h - my, mx : w - mx], rolled_m[my : h - my, mx : w - mx]
        )
    assert np.all(clip.forward[:, 0] == vx) and np.all(clip.forward[:, 1] == vy)
    assert np.all(clip.backward == -clip.forward)
    # The hole is unknown in the inputs (grey), the rest is the ground truth.
    hole = np.asarray(clip.masks)[..., None] > 0.5
    assert np.array_equal(np.where(hole, truth, clip.inputs), truth)
    assert np.all(clip.inputs[hole[..., 0]] == 0.5)


def test_shift_sr_inputs_move_by_whole_low_resolution_pixels() -> None:
    """shift-sr: the truth pans by whole 4x4 blocks, the input is its area downsample, so the
    input itself moves by whole pixels (an exactly equivariant problem)."""
    for clip in suite_clips("shift-sr", SuiteConfig(clips=3, frames=4, size=(32, 48), seed=2)):
        assert clip.task == "upscale" and clip.scale == 4 and clip.masks is None
        vx, vy = clip.info["shift_px"]
        assert (vx, vy) != (0, 0) and vx % 4 == 0 and vy % 4 == 0 and max(abs(vx), abs(vy)) == 4
        truth, low = np.asarray(clip.truth), np.asarray(clip.inputs)
        np.testing.assert_allclose(low, downsample(truth, 4), atol=1e-6)
        assert np.all(clip.forward[:, 0] == vx) and np.all(clip.backward == -clip.forward)
        cx, cy, t = vx // 4, vy // 4, 3
        rolled = np.roll(low[0], (cy * t, cx * t), axis=(0, 1))
        my, mx = abs(cy) * t, abs(cx) * t
        assert np.array_equal(low[t][my : 8 - my, mx : 12 - mx], rolled[my : 8 - my, mx : 12 - mx])


def _interior(valid: torch.Tensor, margin: int) -> np.ndarray:
    m = valid[0].numpy() > 0.5
    m[:margin], m[-margin:], m[:, :margin], m[:, -margin:] = False, False, False, False
    return m


@pytest.mark.parametrize("suite", ["shift-inpaint", "motion-inpaint", "motion-sr"])
def test_exact_flows_reproduce_the_frames(suite: str) -> None:
    """warp(frame t+1, forward t) ~ frame t and warp(frame t, backward t) ~ frame t+1 inside.

    Tolerance: exact for integer shifts; for sub-pixel motion bilinear interpolation of a real
    photograph (and the box filter under zoom/rotation) leaves a mean error of ~0.01-0.02.
    """
    cfg = SuiteConfig(clips=4, frames=4, size=(48, 48), seed=1)  # 4 clips: pan, zoom, rotate, mixed
    for clip in suite_clips(suite, cfg):
        truth = torch.from_numpy(np.asarray(clip.truth)).permute(0, 3, 1, 2)
        tol = 1e-6 if suite == "shift-inpaint" else 0.03
        for t in range(clip.n_frames - 1):
            for src, dst, flow in ((truth[t + 1], truth[t], clip.forward[t]),
                                   (truth[t], truth[t + 1], clip.backward[t])):  # fmt: skip
                warped, valid = warp(src, torch.from_numpy(flow))
                m = _interior(valid, 4)
                assert m.sum() > 0.3 * m.size
                err = (warped - dst).abs().numpy()[:, m].mean()
                assert err < tol, (clip.name, t, err)
                # A wrong flow (none) is far worse: the test can fail.
                still = (src - dst).abs().numpy()[:, m].mean()
                assert still > 2 * err or still < tol


def test_exact_flows_are_inverse_of_each_other() -> None:
    for clip in suite_clips("motion-sr", SuiteConfig(clips=4, frames=3, size=(32, 32))):
        fwd, bwd = torch.from_numpy(clip.forward[0]), torch.from_numpy(clip.backward[0])
        back_at, valid = warp(bwd, fwd)
        m = _interior(valid, 2)
        assert (fwd + back_at).abs().numpy()[
            :, m
        ].max() < 0.02  # bilinear sampling of a smooth flow


def test_super_resolution_inputs_are_area_downsamples() -> None:
    clips = suite_clips("motion-sr", SuiteConfig(clips=2, frames=3, size=(32, 32)))
    assert [c.scale for c in clips] == [4, 8]
    for clip in clips:
        truth = np.asarray(clip.truth)
        assert clip.inputs.shape == (3, 32 // clip.scale, 32 // clip.scale, 3)
        expected = truth.reshape(3, 32 // clip.scale, clip.scale, 32 // clip.scale, clip.scale, 3)
        np.testing.assert_allclose(clip.inputs, expected.mean(axis=(2, 4)), atol=1e-6)


def test_demo_mask_covers_the_object_and_the_plate_is_clean() -> None:
    inpaint, upscale = demo_clips(DemoConfig(size=(48, 64), frames=4))
    masks, comp, plate = np.asarray(inpaint.masks), np.asarray(inpaint.inputs), inpaint.truth
    assert 0.03 < masks.mean() < 0.3
    outside = masks < 0.5
    # Outside the mask the composite is the clean plate: the object is entirely inside it.
    assert np.abs(comp - plate)[outside].max() < 1e-6
    assert np.abs(comp - plate)[~outside].mean() > 0.05  # and the object really differs
    # The object moves: its mask is not static.
    assert not np.array_equal(masks[0], masks[-1])
    np.testing.assert_allclose(upscale.inputs, downsample(plate, 4), atol=0)
    assert upscale.truth is plate and upscale.scale == 4


def test_bad_configs_are_refused() -> None:
    with pytest.raises(InvalidInput, match="frames"):
        SuiteConfig(frames=1)
    with pytest.raises(InvalidInput, match="scales"):
        SuiteConfig(size=(36, 36))  # 8 does not divide 36
    with pytest.raises(InvalidInput, match="suite"):
        suite_clips("nope")
    with pytest.raises(InvalidInput, match="size"):
        DemoConfig(size=(30, 64))


def test_video_suite_reads_the_users_footage(tmp_path: Path) -> None:
    from warpcore.video import write_video

    frames = [np.asarray(f) for f in demo_clips(DemoConfig(size=(32, 48), frames=3))[0].inputs]
    write_video(tmp_path / "street.mp4", frames)
    write_video(tmp_path / "shop.mp4", frames)
    mask = np.zeros((32, 48, 3), np.float32)
    mask[8:20, 10:30] = 1
    write_video(tmp_path / "shop_mask", [mask] * 3)  # a folder of PNG frames
    clips = {c.name: c for c in video_suite(tmp_path, scale=4, max_frames=2)}
    assert set(clips) == {"street", "shop"}
    shop, street = clips["shop"], clips["street"]
    assert shop.task == "inpaint" and shop.truth is None and not shop.exact_flows
    m = list(shop.masks)
    assert len(m) == 2 == shop.n_frames and m[0][10, 15] == 1 and m[0][0, 0] == 0
    assert street.task == "upscale" and street.scale == 4 and street.n_frames == 2
    lows, truths = list(street.inputs), list(street.truth)
    assert lows[0].shape == (8, 12, 3) and truths[0].shape == (32, 48, 3)
    np.testing.assert_allclose(lows[1], downsample(truths[1][None], 4)[0], atol=1e-6)
    with pytest.raises(InvalidInput, match="no clips"):
        video_suite(tmp_path / "shop_mask")
