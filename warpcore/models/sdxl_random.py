"""SDXL with random weights, built from its real configuration: what memory and speed are made of.

Cost needs no trained weights: ``random_sdxl(9, "cuda")`` builds the diffusers / transformers
classes with SDXL base 1.0's published configuration (UNet 2.6 B parameters, the VAE, CLIP ViT-L
and OpenCLIP ViT-bigG text encoders) directly on the device, with nothing downloaded, and wraps
them in :class:`warpcore.models.sdxl.SDXLDenoiser`. ``size="tiny"`` builds the tiny classes of
:mod:`warpcore.models.sdxl_tiny` instead (tests, CPU). Used by ``warpdiff bench memory``.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from warpcore.models import sdxl_tiny
from warpcore.models.sdxl import SDXLDenoiser

# SDXL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0, unet/config.json): the inpainting
# checkpoint differs only by in_channels = 9.
UNET = {
    "sample_size": 128,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}
VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}
# CLIP ViT-L/14 (text_encoder) and OpenCLIP ViT-bigG/14 (text_encoder_2).
TEXT = [
    {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
     "num_hidden_layers": 12, "projection_dim": 768, "hidden_act": "quick_gelu"},
    {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20,
     "num_hidden_layers": 32, "projection_dim": 1280, "hidden_act": "gelu"},
]  # fmt: skip


def random_sdxl(
    in_channels: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    *,
    size: str = "full",
    seed: int = 0,
) -> SDXLDenoiser:
    """An SDXL denoiser of random weights: ``in_channels`` 9 inpainting, 8 super-resolution.
    The UNet and VAE come from :func:`random_unet` / :func:`random_vae` (built on ``meta``,
    given storage once in their dtype: no float32 UNet first); the text encoders are built
    with their own initialisers (their integer position ids need them)."""
    if size not in ("full", "tiny"):
        raise ValueError(f"size: expected 'full' or 'tiny', got {size!r}")
    device = torch.device(device)
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    unet = random_unet(in_channels, device, dtype, size=size, seed=seed)
    vae = random_vae(device, torch.float32, size=size, seed=seed)  # decoded in fp32 (upcast)
    torch.manual_seed(seed)  # the text encoders' own initialisers (their position ids too)
    with torch.device(device):
        if size == "tiny":
            encoders = [sdxl_tiny.tiny_text_encoder(with_projection=p) for p in (False, True)]
        else:
            vocab = len(sdxl_tiny.byte_vocab())
            encoders = [
                cls(CLIPTextConfig(vocab_size=vocab, max_position_embeddings=77, bos_token_id=0,
                                   eos_token_id=1, pad_token_id=1, **cfg)).to(dtype)
                for cls, cfg in zip((CLIPTextModel, CLIPTextModelWithProjection), TEXT, strict=True)
            ]  # fmt: skip
    return SDXLDenoiser(
        unet=unet,
        vae=vae,
        text_encoders=encoders,
        tokenizers=[sdxl_tiny.tiny_tokenizer(), sdxl_tiny.tiny_tokenizer()],
        scheduler_config=dict(sdxl_tiny.SCHEDULER_CONFIG),
        name=f"sdxl-random-{size}",
        device=device,
        dtype=dtype,
    )


def random_unet(
    in_channels: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    size: str = "full",
    seed: int = 0,
) -> UNet2DConditionModel:
    """SDXL's UNet alone (2.567 B parameters; ``size="tiny"``: the tiny class of
    :mod:`warpcore.models.sdxl_tiny`), frozen, its weights N(0, 0.02) in ``dtype``.

    Built on ``meta`` and given storage once, in ``dtype``: no float32 copy first (fp32: 10.3
    GB, bf16 / fp16: 5.1 GB) and no per-layer initialiser (what a memory or speed measurement
    needs is every weight resident, not a trained or well-scaled one). ``"meta"``: no storage.
    """
    if size not in ("full", "tiny"):
        raise ValueError(f"size: expected 'full' or 'tiny', got {size!r}")
    with torch.device("meta"):
        if size == "tiny":
            unet = sdxl_tiny.tiny_unet(in_channels).to(dtype)
        else:
            unet = UNet2DConditionModel(in_channels=in_channels, **UNET).to(dtype)
    return _materialised(unet, device, seed)


def random_vae(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    size: str = "full",
    seed: int = 0,
) -> AutoencoderKL:
    """SDXL's VAE alone (or the tiny class), weights N(0, 0.02), as :func:`random_unet`."""
    if size not in ("full", "tiny"):
        raise ValueError(f"size: expected 'full' or 'tiny', got {size!r}")
    with torch.device("meta"):
        vae = (sdxl_tiny.tiny_vae() if size == "tiny" else AutoencoderKL(**VAE)).to(dtype)
    return _materialised(vae, device, seed)


def _materialised(module: torch.nn.Module, device: str | torch.device, seed: int) -> Any:
    """A meta module frozen, given storage on ``device`` and filled with N(0, 0.02)."""
    module = module.eval().requires_grad_(False)
    if torch.device(device).type == "meta":
        return module
    module = module.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for t in (*module.parameters(), *module.buffers()):
            t.normal_(0.0, 0.02, generator=generator)
    return module
