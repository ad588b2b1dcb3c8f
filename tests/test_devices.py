"""Device placement: every tensor a method function makes follows its input's device.

This machine has no GPU, so a dropped ``device=`` or a skipped ``.to(device)`` changes nothing
on the CPU. PyTorch's ``meta`` device holds shapes but no data, and any op that mixes a meta and
a CPU tensor raises ("Tensor on device cpu is not on the expected device meta"): running a
pure-torch path on meta inputs and finding its outputs on meta proves each tensor it built
followed the input, without a GPU. Paths that read a number out (``float``, ``bool``) or go
through numpy cannot run on meta; those are checked on meta up to that read-out, and the
``gpu`` tests at the end run them for real on a CUDA device (skipped without one).
"""

from __future__ import annotations

import pytest
import torch

from warpcore.flow import warp
from warpcore.guidance import EquivarianceGuidance, matched_blur
from warpcore.noise import GPNoise
from warpcore.sampler import sample, start_noise
from warpcore.warps import SCHEMES, make_warper

META = torch.device("meta")
# What torch raises at the first read-out of a meta tensor's data (float, bool, item); a mixed
# meta/CPU op raises "... is not on the expected device meta" instead.
READ_OUT = r"item\(\) cannot be called on meta tensors"


def test_matched_blur_and_warp_stay_on_the_inputs_device() -> None:
    """The blur's weights come from a CPU flow and must follow the values onto their device;
    warp's sampling grid must be built on the flow's device. Mutants: ``.to(values)`` ->
    ``.to(None)`` (guidance matched_blur 5); ``torch.arange(.., device=flow.device)`` with the
    device dropped or None (flow sample_points 12, 15, 18, 21)."""
    values = torch.empty(1, 3, 6, 5, device=META)
    assert matched_blur(values, torch.full((2, 6, 5), 0.3)).device == META
    warped, valid = warp(values, torch.empty(2, 6, 5, device=META))
    assert warped.device == META and valid.device == META


def _guidance(rule: str, device: str = "cpu") -> EquivarianceGuidance:
    h, w = 6, 5
    gen = torch.Generator().manual_seed(2)
    return EquivarianceGuidance(
        strength=0.5, forward=torch.full((2, h, w), -0.25, device=device),
        mask=torch.ones(1, h, w, device=device),
        previous=torch.rand(2, 3, h, w, generator=gen).to(device), active=frozenset({0, 1}),
        rule=rule, backward=torch.full((2, h, w), 0.25, device=device),  # type: ignore[arg-type]
        backward_mask=torch.ones(1, h, w, device=device),
    )  # fmt: skip


@pytest.mark.parametrize("rule", ["blend", "band"])
def test_blend_and_band_move_the_stored_tensors_to_the_estimates_device(rule: str) -> None:
    """On a meta estimate, every op up to e_k's ``float`` runs: the previous estimate, the
    backward flow and its mask were moved to the estimate's device. The read-out is the only
    failure (a meta tensor has no number). Mutants: ``.to(h)`` -> ``.to(None)`` in band
    (6, 12, 15) and blend (10, 11, 15, 16)."""
    g = _guidance(rule)  # its tensors on the CPU: blend and band move them to the estimate
    with pytest.raises(RuntimeError, match=READ_OUT):
        g.step(torch.empty(3, 6, 5, device=META), torch.empty(3, 6, 5, device=META), 1, 0.5)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_sampler_gives_the_model_sigmas_on_the_samples_device(method: str) -> None:
    """The schedule lives on the CPU; the per-sample sigma the model receives must be on the
    sample's device (a model mixes it with x). Mutants: ``_batch_sigma``'s ``device=x.device``
    -> None or dropped (sampler _batch_sigma 2, 4)."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x / (1.0 + sigma[:, None, None, None] ** 2)

    sigmas = torch.tensor([2.0, 1.0, 0.5, 0.0])
    result = sample(denoise, torch.empty(2, 3, 4, 4, device=META), sigmas, method=method)
    assert result.x.device == META and result.denoised.device == META


def test_start_noise_follows_the_noises_device_and_dtype() -> None:
    """A float64 CPU start point joins float32 noise on its device. Mutant: ``start.to(noise)``
    -> ``.to(None)`` (sampler start_noise 9: a float64 sum, or a mixed-device one). (Its
    ``sigmas[0].to(noise)`` -> ``.to(None)``, start_noise 3, is equivalent on any device: a
    0-dim CPU tensor may multiply a tensor anywhere and takes its dtype.)"""
    noise = torch.empty(1, 3, 4, 4, device=META)
    start = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    x = start_noise(noise, torch.tensor([2.0, 0.0]), start)
    assert x.device == META and x.dtype == torch.float32


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_warper_makes_its_noise_on_its_device(scheme: str) -> None:
    """A warper on ``meta`` (its noise drawn on the CPU generator, then moved) gives frame 0 on
    meta, and "fixed" and "resample" give frame 1 there too (the others read their flow's
    values, which meta cannot). Mutants: ``white``'s ``.to(self.device)`` -> ``.to(None)``
    (warps _Base.white 12), ``fresh``'s GP field built without the device (fresh 20), the
    GP noise's grid, features and phases left on the CPU (noise grid_coords, _draw, _exact /
    _block)."""
    warper = make_warper(scheme, 2, 8, 8, 3, device="meta", gp_features=64)
    assert warper.first().device == META
    if scheme in ("fixed", "resample"):
        flow = torch.zeros(2, 8, 8)
        assert warper.next(flow, flow).device == META


def test_a_warper_loads_a_cpu_state_onto_its_device() -> None:
    """Mutants: ``state[k].to(self.device, ref.dtype)`` -> ``.to(None, ..)`` or the device
    dropped (warps load_state_dict 31, 33)."""
    warper = make_warper("fixed", 2, 8, 8, 3, device="meta")
    warper.load_state_dict({"frame": torch.tensor(4), "noise": torch.randn(2, 8, 8)})
    assert warper.noise.device == META
    flow = torch.zeros(2, 8, 8)
    assert warper.next(flow, flow).device == META


def test_gp_noise_grid_is_made_on_its_device() -> None:
    """GPNoise(device=meta).grid(): features drawn on the CPU generator and moved, the grid's
    coordinates and the evaluation all on meta."""
    noise = GPNoise(channels=2, seed=5, device=META, n_features=64, res=(8, 6))
    assert noise.grid(6, 8).device == META


# --- On a real GPU (skipped on this CPU-only machine: not verified here) ----------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("scheme", SCHEMES)
def test_warpers_run_on_cuda_and_match_the_cpu(scheme: str) -> None:
    """Every scheme on CUDA: frames on CUDA and equal to the CPU run (same seed, same flows;
    the noise is drawn on the CPU generator, so it matches up to float rounding)."""
    gen = torch.Generator().manual_seed(0)
    flows = [torch.randn(2, 2, 16, 12, generator=gen) * 1.5 for _ in range(3)]
    runs = {}
    for device in ("cpu", "cuda"):
        warper = make_warper(scheme, 3, 16, 12, 7, device=device, gp_features=256)
        frames = [warper.first()]
        frames += [warper.next(fwd.to(device), bwd.to(device)) for fwd, bwd in flows]
        assert all(f.device.type == device for f in frames)
        runs[device] = torch.stack([f.cpu() for f in frames])
    torch.testing.assert_close(runs["cuda"], runs["cpu"], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("rule", ["dps", "newton", "blend", "band"])
def test_guided_sampling_runs_on_cuda(rule: str) -> None:
    """A guided sample on CUDA (the guidance's tensors there, as the restorer builds them)
    equals the same sample on the CPU."""
    sigmas = torch.tensor([2.0, 1.0, 0.0])

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x / (1.0 + sigma[:, None, None, None] ** 2)

    x = torch.randn(1, 3, 6, 5, generator=torch.Generator().manual_seed(3))
    runs = {}
    for device in ("cpu", "cuda"):
        result = sample(denoise, x.to(device), sigmas, guidance=_guidance(rule, device))
        assert result.x.device.type == device and result.warp_errors[1] is not None
        runs[device] = result.x.cpu()
    torch.testing.assert_close(runs["cuda"], runs["cpu"], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@cuda
def test_scores_take_cuda_frames_and_masks() -> None:
    """The metrics take frames and masks on CUDA (they score on the CPU)."""
    from warpcore.metrics import restoration_scores

    gen = torch.Generator().manual_seed(1)
    out, ref = torch.rand(3, 16, 16, generator=gen), torch.rand(3, 16, 16, generator=gen)
    mask = torch.ones(16, 16)
    mask[:4] = 0.0
    on_cpu = restoration_scores(out, ref, mask)
    on_gpu = restoration_scores(out.cuda(), ref.cuda(), mask.cuda())
    assert on_gpu == pytest.approx(on_cpu, rel=1e-6)


@pytest.mark.gpu
@cuda
def test_flow_takes_cuda_frames_and_fills_a_cuda_flow() -> None:
    """Flow estimation reads CUDA frames through the CPU (OpenCV) and equals the CPU answer;
    the masked fill returns on the flow's device."""
    from warpcore.flow import estimate_flow, fill_masked

    gen = torch.Generator().manual_seed(4)
    a = torch.rand(3, 32, 40, generator=gen)
    b = torch.roll(a, 2, dims=2)
    on_cpu = estimate_flow(a, b, "farneback")
    on_gpu = estimate_flow(a.cuda(), b.cuda(), "farneback")
    assert on_gpu.device.type == "cpu" and torch.equal(on_gpu, on_cpu)
    mask = torch.zeros(32, 40)
    mask[10:20, 10:20] = 1.0
    filled = fill_masked(on_cpu.cuda(), mask.numpy())
    assert filled.device.type == "cuda"
    torch.testing.assert_close(filled.cpu(), fill_masked(on_cpu, mask.numpy()))
