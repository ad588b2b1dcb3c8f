"""The SDXL adapter on tiny random models of the real classes, loaded from saved folders."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from warpcore.errors import InvalidInput, ModelNotFound
from warpcore.models import Condition, Denoiser, load_denoiser
from warpcore.models.conditions import box_down
from warpcore.models.gaussian import GaussianDenoiser
from warpcore.models.sdxl_schedule import sigmas_from_config
from warpcore.models.zeroshot import ZeroShotSR

SIZE = 64  # pixels; latents 8x8


@pytest.fixture(scope="module")
def models(tiny_sdxl_dirs):
    torch.manual_seed(0)
    return {
        "inpaint": load_denoiser(str(tiny_sdxl_dirs[9]), "inpaint"),
        "upscale": load_denoiser(str(tiny_sdxl_dirs[8]), "upscale"),
        "zeroshot": load_denoiser(str(tiny_sdxl_dirs[4]), "upscale", strength=0.5),
    }


def inpaint_condition(**kw) -> Condition:
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, 16:48, 20:52] = 1
    return Condition("inpaint", torch.rand(3, SIZE, SIZE, generator=g), mask, **kw)


def test_loads_with_task_from_in_channels(models):
    assert models["inpaint"].tasks == ("inpaint",)
    assert models["upscale"].tasks == ("upscale",)
    assert isinstance(models["zeroshot"], ZeroShotSR)
    for m in models.values():
        assert isinstance(m, Denoiser)
        assert (m.channels, m.downscale, m.dtype) == (4, 8, torch.float32)
        assert 0.02 < m.sigma_min < 0.03 and 14 < m.sigma_max < 15  # SDXL's training schedule


def test_missing_and_misfit_models_say_what_to_do(tmp_path, tiny_sdxl_dirs):
    with pytest.raises(ModelNotFound, match="stable-diffusion-xl-1.0-inpainting-0.1.*--model"):
        load_denoiser(str(tmp_path / "nowhere"), "inpaint")
    with pytest.raises(ModelNotFound, match="Hugging Face cache"):
        load_denoiser("someone/not-cached-model", "inpaint")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "unet").mkdir()
    with pytest.raises(ModelNotFound, match="missing vae/"):
        load_denoiser(str(tmp_path / "half"), "inpaint")
    with pytest.raises(InvalidInput, match="in_channels=9.*'upscale'"):
        load_denoiser(str(tiny_sdxl_dirs[9]), "upscale")
    with pytest.raises(InvalidInput, match="strength"):
        load_denoiser(str(tiny_sdxl_dirs[4]), "upscale", strength=1.0)
    with pytest.raises(InvalidInput, match="in_channels=4.*'inpaint'"):
        load_denoiser(str(tiny_sdxl_dirs[4]), "inpaint")


def test_lone_unet_fine_tune_loads_with_a_base(tmp_path, tiny_sdxl_dirs):
    """The training command exports only unet/; base= supplies the rest."""
    import shutil

    shutil.copytree(tiny_sdxl_dirs[8] / "unet", tmp_path / "finetune" / "unet")
    with pytest.raises(ModelNotFound, match="base= option"):
        load_denoiser(str(tmp_path / "finetune"), "upscale")
    m = load_denoiser(str(tmp_path / "finetune"), "upscale", base=str(tiny_sdxl_dirs[4]))
    assert m.tasks == ("upscale",) and m.unet.config.in_channels == 8


def test_shapes_and_bad_inputs(models):
    m = models["inpaint"]
    prep = m.prepare(inpaint_condition(prompt="a cat"))
    assert prep.concat.shape == (1, 5, 8, 8)
    out = m(torch.randn(2, 4, 8, 8), torch.tensor([1.0, 3.0]), prep)
    assert out.shape == (2, 4, 8, 8) and out.dtype == torch.float32
    assert m.decode(out).shape == (2, 3, SIZE, SIZE)
    assert m.encode(torch.rand(1, 3, SIZE, SIZE)).shape == (1, 4, 8, 8)
    with pytest.raises(InvalidInput, match=r"x: expected latents \(N, 4, 8, 8\)"):
        m(torch.randn(1, 4, 16, 16), torch.tensor(1.0), prep)
    with pytest.raises(InvalidInput, match="multiple of 8"):
        m.prepare(Condition("inpaint", torch.rand(3, 60, 64), torch.zeros(1, 60, 64)))
    with pytest.raises(InvalidInput, match="does not fit"):
        m.prepare(Condition("upscale", torch.rand(3, 16, 16), scale=4))
    sr = models["upscale"]
    prep = sr.prepare(Condition("upscale", torch.rand(3, 16, 16), scale=4))
    assert prep.concat.shape == (1, 4, 8, 8)


def test_large_frames_go_through_the_tiled_vae(models):
    """The tiny VAE's sample_size is 128 px: a 192 px frame is encoded/decoded in tiles."""
    m = models["inpaint"]
    assert m.vae.use_tiling
    image = torch.rand(1, 3, 192, 192)
    latents = m.encode(image)
    assert latents.shape == (1, 4, 24, 24) and torch.isfinite(latents).all()
    decoded = m.decode(latents)
    assert decoded.shape == (1, 3, 192, 192) and decoded.min() >= 0 and decoded.max() <= 1


def test_sigma_to_t_matches_the_scheduler_table():
    from diffusers import EulerDiscreteScheduler

    from warpcore.models.sdxl_tiny import SCHEDULER_CONFIG

    table = sigmas_from_config(SCHEDULER_CONFIG)
    sched = EulerDiscreteScheduler(**SCHEDULER_CONFIG)
    theirs = ((1 - sched.alphas_cumprod) / sched.alphas_cumprod).sqrt().double()
    torch.testing.assert_close(table.sigmas, theirs, rtol=1e-6, atol=0)
    t = table.sigma_to_t(theirs.float())
    torch.testing.assert_close(t, torch.arange(1000.0), atol=2e-3, rtol=0)
    sched.set_timesteps(25)  # inference sigmas sit at integer training steps
    torch.testing.assert_close(
        table.sigma_to_t(sched.sigmas[:-1]), sched.timesteps.float(), atol=2e-3, rtol=0
    )
    mid = table.t_to_sigma(torch.tensor([10.5]))
    assert abs(float(table.sigma_to_t(mid.float())) - 10.5) < 1e-3


def test_matches_the_diffusers_inpaint_pipeline(models, tiny_sdxl_dirs):
    """Our Euler loop over D reproduces StableDiffusionXLInpaintPipeline's latents (cfg 3)."""
    from diffusers import StableDiffusionXLInpaintPipeline

    m = models["inpaint"]
    pipe = StableDiffusionXLInpaintPipeline.from_pretrained(tiny_sdxl_dirs[9])
    pipe.set_progress_bar_config(disable=True)
    cond = inpaint_condition(prompt="a red door", negative_prompt="blurry", cfg_scale=3.0)
    keep = cond.mask[None] < 0.5
    masked_latents = m.encode(
        cond.image[None] * keep + 0.5 * ~keep
    )  # the pipeline samples; we pass the mode
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    theirs = pipe(
        prompt="a red door",
        negative_prompt="blurry",
        image=cond.image[None],
        mask_image=cond.mask[None],
        masked_image_latents=masked_latents,
        height=SIZE,
        width=SIZE,
        num_inference_steps=3,
        strength=1.0,
        guidance_scale=3.0,
        latents=noise,
        output_type="latent",
    ).images
    sigmas = pipe.scheduler.sigmas
    x = noise * pipe.scheduler.init_noise_sigma
    prep = m.prepare(cond)
    with torch.no_grad():
        for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
            x = x + (s_next - s) * (x - m(x, s, prep)) / s  # METHOD.md section 3, Euler step
    torch.testing.assert_close(x, theirs, atol=1e-4, rtol=1e-4)


def test_cfg_batching_equals_separate_calls(models):
    m = models["inpaint"]
    prep = m.prepare(inpaint_condition(prompt="a cat", negative_prompt="a dog", cfg_scale=4.0))
    cond_only = dataclasses.replace(prep, uncond_text=None, cfg_scale=1.0)
    uncond_only = dataclasses.replace(
        cond_only, text=prep.uncond_text, pooled=prep.uncond_pooled, time_ids=prep.uncond_time_ids
    )
    x, sigma = torch.randn(2, 4, 8, 8), torch.tensor([0.5, 5.0])
    with torch.no_grad():
        both = m(x, sigma, prep)
        c, u = m(x, sigma, cond_only), m(x, sigma, uncond_only)
    torch.testing.assert_close(both, u + 4.0 * (c - u), atol=1e-4, rtol=1e-4)
    assert (c - u).abs().max() > 1e-3  # the prompts do matter


def test_tiny_sigma_is_near_identity_and_gradients_reach_x(models):
    m = models["upscale"]
    prep = m.prepare(Condition("upscale", torch.rand(3, 16, 16), scale=4))
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    with torch.no_grad():
        for sigma in (m.sigma_min, 1e-3):
            gap = (m(x, torch.tensor(sigma), prep) - x).abs().max()
            assert gap < 3 * sigma  # D = x - sigma * eps, |eps| of order 1
    out = m(x, torch.tensor(2.0), prep)
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.unet.parameters())


def test_v_prediction_conversion(models, monkeypatch):
    from diffusers import EulerDiscreteScheduler

    from warpcore.models.sdxl_tiny import SCHEDULER_CONFIG

    m = models["upscale"]
    v_table = sigmas_from_config({**SCHEDULER_CONFIG, "prediction_type": "v_prediction"})
    monkeypatch.setattr(m, "schedule", v_table)
    sched = EulerDiscreteScheduler(**{**SCHEDULER_CONFIG, "prediction_type": "v_prediction"})
    sched.set_timesteps(10)
    prep = m.prepare(Condition("upscale", torch.rand(3, 16, 16), scale=4))
    x = torch.randn(1, 4, 8, 8)
    sigma, t = sched.sigmas[3], sched.timesteps[3]
    with torch.no_grad():
        v = m.model_output(sched.scale_model_input(x, t), t[None].float(), prep)
        ours = m(x, sigma, prep)
    expected = v * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)  # diffusers' x0 from v
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_zero_shot_projection_enforces_low_resolution_consistency():
    """Exact in pixel space (the Gaussian oracle's codec is affine): down(out) == lr."""
    inner = GaussianDenoiser(data_lengthscale=1.5, conditioned=False)
    lowres = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(4))
    errors = {}
    for project in (True, False):
        model = ZeroShotSR(inner, project=project)
        prep = model.prepare(Condition("upscale", lowres, scale=4))
        x = model.start(prep) + 0.8 * torch.randn(
            1, 3, 32, 32, generator=torch.Generator().manual_seed(5)
        )
        for s, s_next in ((0.8, 0.4), (0.4, 0.1), (0.1, 0.0)):
            x = x + (s_next - s) * (x - model(x, torch.tensor(s), prep)) / s
        image = inner.decode_differentiable(x)  # unclamped: the projection may leave [0, 1]
        errors[project] = (box_down(image, 4)[0] - lowres).abs().max()
    assert errors[True] < 1e-5 and errors[False] > 100 * errors[True]


def test_zero_shot_sdxl_runs_and_is_differentiable(models):
    m = models["zeroshot"]
    lowres = torch.rand(3, 16, 16)
    prep = m.prepare(Condition("upscale", lowres, scale=4, prompt="sharp"))
    assert m.start(prep).shape == (1, 4, 8, 8)
    x = (m.start(prep) + 0.5 * torch.randn(1, 4, 8, 8)).requires_grad_(True)
    out = m(x, torch.tensor(0.5), prep)
    out.square().sum().backward()
    assert out.shape == (1, 4, 8, 8) and x.grad.abs().sum() > 0
    image = m.inner.decode_differentiable(m.inner(x.detach(), torch.tensor(0.5), prep.inner))
    projected = image + (lowres - box_down(image, 4)).repeat_interleave(4, -2).repeat_interleave(
        4, -1
    )
    assert (box_down(projected, 4)[0] - lowres).abs().max() < 1e-5


def test_builtin_missing_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "warpcore.models.builtin", None)
    with pytest.raises(ModelNotFound, match="built-in"):
        load_denoiser("builtin", "inpaint")
