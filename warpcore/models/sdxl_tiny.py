"""Tiny random SDXL models of the real diffusers/transformers classes, saved as diffusers folders.

Used by every test that needs an SDXL-shaped model without real weights (none can be downloaded
here). ``make_tiny_sdxl(path, in_channels)`` writes a folder that loads through exactly the code
path a user's downloaded checkpoint takes:

- ``in_channels=9``: inpainting (a ``StableDiffusionXLInpaintPipeline`` folder),
- ``in_channels=8``: super-resolution fine-tune layout (noisy latent + upsampled low-res latent),
- ``in_channels=4``: a plain text-to-image model (zero-shot super-resolution).

Seeded, so the same call writes the same weights. About 13 MB and ~1 s per folder on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

TEXT_HIDDEN = 32  # each encoder; the UNet's cross_attention_dim is the concatenation (64)
TIME_EMBED_DIM = 8  # 6 add_time_ids * 8 + pooled 32 = projection_class_embeddings_input_dim 80
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 1,
}


def make_tiny_sdxl(path: str | Path, in_channels: int, *, seed: int = 0) -> Path:
    """Build a tiny random SDXL with a ``in_channels``-channel UNet and save it under ``path``."""
    if in_channels not in (4, 8, 9):
        raise ValueError(f"in_channels: expected 4, 8 or 9, got {in_channels!r}")
    torch.manual_seed(seed)
    parts = {
        "unet": tiny_unet(in_channels),
        "vae": tiny_vae(),
        "text_encoder": tiny_text_encoder(with_projection=False),
        "text_encoder_2": tiny_text_encoder(with_projection=True),
        "tokenizer": tiny_tokenizer(),
        "tokenizer_2": tiny_tokenizer(),
        "scheduler": EulerDiscreteScheduler(**SCHEDULER_CONFIG),
    }
    if in_channels == 9:
        pipe = StableDiffusionXLInpaintPipeline(**parts, requires_aesthetics_score=False)
    else:
        pipe = StableDiffusionXLPipeline(**parts)
    out = Path(path)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def tiny_unet(in_channels: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TEXT_HIDDEN,
        cross_attention_dim=2 * TEXT_HIDDEN,
        norm_num_groups=8,
    )


def tiny_vae() -> AutoencoderKL:
    """Four blocks (three downsamples): the x8 latent grid of SDXL; tiles above 128 px."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=128,
        scaling_factor=0.13025,
    )


def tiny_text_encoder(*, with_projection: bool) -> CLIPTextModel | CLIPTextModelWithProjection:
    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=3,
        vocab_size=len(byte_vocab()),
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=TEXT_HIDDEN,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval()


def tiny_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer: every byte alone and as a word end, no merges."""
    return CLIPTokenizer(vocab=byte_vocab(), merges=[], model_max_length=77)


def byte_vocab() -> dict[str, int]:
    """CLIP's byte alphabet (GPT-2 bytes-to-unicode), plain and with ``</w>``, + 2 specials."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in chars]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab[s] = len(vocab)
    return vocab
