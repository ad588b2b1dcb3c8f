"""The built-in model's network ``F``: a small convolutional UNet in plain PyTorch.

Conv / GroupNorm / SiLU residual blocks, a sinusoidal noise-level embedding plus a learned
task (class) embedding added in every block, strided-conv downsampling, nearest + conv
upsampling, skip connections; no attention, so any frame size works (padded to ``2**(L-1)``).

It is layer for layer the layout of diffusers' ``UNet2DModel`` with ``DownBlock2D`` /
``UpBlock2D`` blocks, no attention, positional time embedding (``flip_sin_to_cos``, frequency
shift 0) and ``num_class_embeds`` classes, with the same parameter names, so weights saved from
either load into the other (``tests/test_builtin.py`` compares the two outputs). Building it
needs no diffusers import: that import alone took ~7 s of every CLI run's start-up.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NORM_EPS = 1e-5


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) -> (N, dim): ``[cos(t f_k), sin(t f_k)]``, ``f_k = max_period ** (-k / (dim/2))``."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    angles = t[:, None].float() * torch.exp(exponent / half)[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + embedding, GroupNorm-SiLU-conv, plus a (1x1) shortcut."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=NORM_EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=NORM_EPS)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.conv_shortcut is None else self.conv_shortcut(x))


class _Conv(nn.Module):
    """A conv held as ``.conv`` (the parameter names of diffusers' resamplers)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=stride, padding=1)


class Down(_Conv):
    def __init__(self, channels: int) -> None:
        super().__init__(channels, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Up(_Conv):
    def __init__(self, channels: int) -> None:
        super().__init__(channels, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    def __init__(
        self, cin: int, cout: int, layers: int, emb_dim: int, groups: int, down: bool
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResBlock(cin if i == 0 else cout, cout, emb_dim, groups) for i in range(layers)
        )
        self.downsamplers = nn.ModuleList([Down(cout)] if down else [])

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for block in self.resnets:
            x = block(x, emb)
            skips.append(x)
        for down in self.downsamplers:
            x = down(x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    def __init__(
        self,
        cin: int,
        cprev: int,
        cout: int,
        layers: int,
        emb_dim: int,
        groups: int,
        up: bool,
    ) -> None:
        super().__init__()
        blocks = []
        for i in range(layers):
            skip = cin if i == layers - 1 else cout
            blocks.append(ResBlock((cprev if i == 0 else cout) + skip, cout, emb_dim, groups))
        self.resnets = nn.ModuleList(blocks)
        self.upsamplers = nn.ModuleList([Up(cout)] if up else [])

    def forward(
        self, x: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor
    ) -> torch.Tensor:
        for block in self.resnets:
            x = block(torch.cat([x, skips.pop()], dim=1), emb)
        for up in self.upsamplers:
            x = up(x)
        return x


class MidBlock(nn.Module):
    def __init__(self, channels: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResBlock(channels, channels, emb_dim, groups) for _ in range(2)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block in self.resnets:
            x = block(x, emb)
        return x


class UNet(nn.Module):
    """``F(x, t, label)``: (N, in_channels, H, W) -> (N, out_channels, H, W), H and W multiples
    of ``2 ** (len(widths) - 1)``; ``t`` (N,) the noise-level input of the sinusoidal
    embedding, ``label`` (N,) long in ``[0, classes)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        widths: tuple[int, ...],
        layers_per_block: int = 1,
        groups: int = 8,
        classes: int = 2,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        emb_dim = 4 * widths[0]
        self.embed_dim = widths[0]
        self.time_embedding = TimestepEmbedding(widths[0], emb_dim)
        self.class_embedding = nn.Embedding(classes, emb_dim)
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        last = len(widths) - 1
        self.down_blocks = nn.ModuleList(
            DownBlock(widths[max(i - 1, 0)], w, layers_per_block, emb_dim, groups, down=i < last)
            for i, w in enumerate(widths)
        )
        self.mid_block = MidBlock(widths[-1], emb_dim, groups)
        rev = widths[::-1]
        self.up_blocks = nn.ModuleList(
            UpBlock(
                rev[min(i + 1, last)],
                rev[max(i - 1, 0)],
                w,
                layers_per_block + 1,
                emb_dim,
                groups,
                up=i < last,
            )
            for i, w in enumerate(rev)
        )
        self.conv_norm_out = nn.GroupNorm(groups, widths[0], eps=NORM_EPS)
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1).expand(x.shape[0])
        emb = self.time_embedding(timestep_embedding(t, self.embed_dim).to(x.dtype))
        emb = emb + self.class_embedding(label).to(x.dtype)
        x = self.conv_in(x)
        skips = [x]
        for block in self.down_blocks:
            x, more = block(x, emb)
            skips += more
        x = self.mid_block(x, emb)
        for block in self.up_blocks:
            x = block(x, skips, emb)
        return self.conv_out(F.silu(self.conv_norm_out(x)))
