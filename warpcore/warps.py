"""Noise warping: every scheme behind one small stateful interface (METHOD.md section 2).

A warper yields the initial noise of frame 0 (:meth:`NoiseWarper.first`), then of frame j from
the flows between frames j-1 and j (:meth:`NoiseWarper.next`). Flows live on the noise grid
(ARCHITECTURE.md): ``forward`` = flow j-1 -> j on frame j-1's grid, ``backward`` = flow
j -> j-1 on frame j's grid. State is small and constant in clip length; fresh noise of frame j
is drawn from a generator seeded by (seed, j) alone, so a warper restored from
:meth:`NoiseWarper.state_dict` continues bit-identically.

Schemes: ``fixed``, ``resample``, ``nearest``, ``bilinear`` on white noise; the same on GP noise
(``gp-fixed``, ``gp-resample``, ``gp-nearest``); ``gp`` (evaluate one GP field at each pixel's
back-mapped position in frame 0, the paper's method); ``integral`` (a distribution-preserving
warp of white noise: every frame exactly i.i.d. N(0, 1), see :class:`IntegralWarper`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch

from warpcore.errors import InvalidInput
from warpcore.flow import warp
from warpcore.noise import GPNoise, check_int, derive_seed, grid_coords

SCHEMES = (
    "fixed",
    "resample",
    "nearest",
    "bilinear",
    "integral",
    "gp",
    "gp-fixed",
    "gp-resample",
    "gp-nearest",
)
_STREAM_WHITE = 1  # derive_seed stream ids: fresh white noise, fresh GP fields, edge splits
_STREAM_GP = 2
_STREAM_SPLIT = 3


class NoiseWarper(Protocol):
    """Initial noise for each frame of a clip, warped along the flow."""

    def first(self) -> torch.Tensor:
        """Noise of frame 0, (C, H, W) float32; (re)starts the clip."""
        ...

    def next(self, forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
        """Noise of the next frame from the flows (2, H, W) between it and the previous one."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything the next call of :meth:`next` needs (constant size)."""
        ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from a state saved by :meth:`state_dict` of the same configuration."""
        ...


class _Base:
    """Frame counter, seeded fresh noise, flow validation and the state-dict plumbing."""

    _state_keys: tuple[str, ...] = ()

    def __init__(self, channels: int, height: int, width: int, seed: int, device: str) -> None:
        self.shape = (channels, height, width)
        self.seed = seed
        self.device = torch.device(device)
        self.frame = -1

    def white(self, frame: int) -> torch.Tensor:
        """Fresh i.i.d. N(0, 1) noise of ``frame``: a function of (seed, frame) only."""
        g = torch.Generator(device="cpu").manual_seed(derive_seed(self.seed, _STREAM_WHITE, frame))
        return torch.randn(self.shape, generator=g).to(self.device)

    def first(self) -> torch.Tensor:
        self.frame = 0
        return self._start()

    def next(self, forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
        if self.frame < 0:
            raise InvalidInput("next(): call first() (or load_state_dict) before next()")
        fwd = self._check_flow("forward", forward)
        bwd = self._check_flow("backward", backward)
        self.frame += 1
        return self._step(fwd, bwd)

    def _check_flow(self, name: str, flow: object) -> torch.Tensor:
        _, h, w = self.shape
        if not isinstance(flow, torch.Tensor) or not flow.is_floating_point():
            kind = flow.dtype if isinstance(flow, torch.Tensor) else type(flow).__name__
            raise InvalidInput(
                f"{name}: expected a floating-point tensor (2, {h}, {w}), got {kind}"
            )
        if tuple(flow.shape) != (2, h, w):
            raise InvalidInput(
                f"{name}: expected shape (2, {h}, {w}) on the noise grid, got {tuple(flow.shape)}"
            )
        if not bool(torch.isfinite(flow).all()):
            raise InvalidInput(f"{name}: expected finite flow values, got NaN or infinity")
        return flow.to(self.device, torch.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"frame": torch.tensor(self.frame, dtype=torch.int64)}
        state.update({k: getattr(self, k).clone() for k in self._state_keys})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = {"frame", *self._state_keys}
        if not isinstance(state, dict) or set(state) != expected:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise InvalidInput(f"state: expected keys {sorted(expected)}, got {got}")
        for k in self._state_keys:
            ref = getattr(self, k)
            if not isinstance(state[k], torch.Tensor) or state[k].shape != ref.shape:
                raise InvalidInput(f"state[{k!r}]: expected a tensor of shape {tuple(ref.shape)}")
            setattr(self, k, state[k].to(self.device, ref.dtype).clone())
        self.frame = int(state["frame"])

    def _start(self) -> torch.Tensor:
        raise NotImplementedError

    def _step(self, forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _GridWarper(_Base):
    """fixed / resample / nearest / bilinear, on white noise or on grid samples of GP noise."""

    _state_keys = ("noise",)

    def __init__(self, mode: str, gp: dict | None, *args: object) -> None:
        super().__init__(*args)
        self.mode = mode
        self.gp = gp  # GPNoise keyword arguments, or None for white noise
        self.noise = torch.zeros(self.shape, device=self.device)

    def fresh(self, frame: int) -> torch.Tensor:
        if self.gp is None:
            return self.white(frame)
        seed = self.seed if frame == 0 else derive_seed(self.seed, _STREAM_GP, frame)
        field = GPNoise(channels=self.shape[0], seed=seed, device=self.device, **self.gp)
        return field.grid(*self.shape[1:])

    def _start(self) -> torch.Tensor:
        self.noise = self.fresh(0)
        return self.noise.clone()

    def _step(self, forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
        if self.mode == "fixed":
            return self.noise.clone()
        if self.mode == "resample":
            self.noise = self.fresh(self.frame)
            return self.noise.clone()
        if self.mode == "nearest":
            _, h, w = self.shape
            src, inside = _cell_of(backward, h, w)
            flat = self.noise.reshape(self.shape[0], -1)
            warped = flat[:, src.clamp(0, h * w - 1).reshape(-1)].reshape(self.shape)
        else:  # bilinear: shrinks the variance between pixels (the known flaw of the baseline)
            warped, valid = warp(self.noise, backward, mode="bilinear")
            inside = valid[0] > 0
        # Fresh noise (a function of seed and frame) only where the point left the frame.
        self.noise = (
            warped if bool(inside.all()) else torch.where(inside, warped, self.fresh(self.frame))
        )
        return self.noise.clone()


def _cell_of(flow: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat index of the pixel cell containing x + flow(x), and whether it is inside the frame.

    Pixel i's cell is [i - 0.5, i + 0.5) along each axis.
    """
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device), torch.arange(w, device=flow.device), indexing="ij"
    )
    cx = torch.floor(xs + flow[0] + 0.5).long()
    cy = torch.floor(ys + flow[1] + 0.5).long()
    inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    return cy * w + cx, inside


class GPWarper(_Base):
    """The paper's GP warping: ``u^(j)(x) = xi(Phi_j(x))``, ``Phi_j = Phi_{j-1} o (id + B_j)``.

    State: the displacement ``Phi - id`` (2, H, W) in frame-0 pixels, float64 so that far-away
    coordinates keep sub-micro-pixel precision. Composition samples the previous displacement
    bilinearly with border extension, so points that left the frame extrapolate.
    """

    _state_keys = ("displacement",)

    def __init__(self, gp: dict, *args: object) -> None:
        super().__init__(*args)
        c, h, w = self.shape
        self.field = GPNoise(channels=c, seed=self.seed, device=self.device, **gp)
        self.displacement = torch.zeros((2, h, w), dtype=torch.float64, device=self.device)
        self._unit = grid_coords(h, w, self.device).permute(2, 0, 1)  # (2, H, W)
        self._scale = torch.tensor([1.0 / w, 1.0 / h], dtype=torch.float64, device=self.device)

    def _start(self) -> torch.Tensor:
        self.displacement.zero_()
        return self.field.grid(*self.shape[1:])

    def _step(self, forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
        self.compose(backward)
        coords = self._unit + self.displacement * self._scale[:, None, None]
        return self.field.at(coords.permute(1, 2, 0))

    def compose(self, backward: torch.Tensor) -> None:
        """``Phi_j = Phi_{j-1} o (id + B_j)``: the map only, no noise evaluated (a chunk that
        starts at frame s composes B_1 .. B_{s-1} this way, see :func:`fast_forward`)."""
        back = backward.double()
        previous, _ = warp(self.displacement, back, mode="bilinear", padding="border")
        self.displacement = back + previous


def fast_forward(
    warper: NoiseWarper, flows: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> NoiseWarper:
    """Advance ``warper`` (just after :meth:`~NoiseWarper.first`) through the flow pairs
    (forward, backward) of frames 1, 2, ... without using the noise: its state afterwards is
    bit-identical to a run that called ``next`` on each pair. For ``gp`` only the composed map
    is updated (the noise of frame j depends only on frame 0's field and the map 0 -> j), so a
    chunk of a long shot starts at any frame for the price of the flow compositions."""
    for forward, backward in flows:
        if isinstance(warper, GPWarper):
            if warper.frame < 0:
                raise InvalidInput("fast_forward: call first() before fast_forward()")
            warper._check_flow("forward", forward)
            warper.compose(warper._check_flow("backward", backward))
            warper.frame += 1
        else:
            warper.next(forward, backward)
    return warper


class IntegralWarper(_Base):
    """A distribution-preserving warp of white noise: every frame exactly i.i.d. N(0, 1).

    Each previous pixel value ``X_p`` is the integral of a white-noise measure over its unit
    cell. Edges (source p, target q): every target q links to the source cell containing
    ``q + backward(q)``, every source p to the target cell containing ``p + forward(p)`` (so
    stretched and squeezed regions are both covered). Source p gives each of its ``d_p`` edges
    the share ``a = 1 / d_p`` and splits ``X_p`` by Brownian-bridge conditioning:
    ``W_e = a_e X_p + sqrt(a_e) Z_e - a_e sum_f sqrt(a_f) Z_f`` with ``Z`` i.i.d. N(0, 1); the
    parts are exactly independent N(0, a_e) and sum to ``X_p``. Target q returns
    ``sum_e W_e / sqrt(sum_e a_e)`` over its edges, exactly N(0, 1), independent of the other
    targets (disjoint parts); targets without an edge get fresh noise. An integer shift copies
    the noise exactly; a sub-pixel shift mixes the two overlapped sources. Linear time.
    """

    _state_keys = ("noise",)

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.noise = torch.zeros(self.shape, device=self.device)

    def _start(self) -> torch.Tensor:
        self.noise = self.white(0)
        return self.noise.clone()

    def _step(self, forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape
        n = h * w
        src, dst = _edges(forward, backward, h, w)
        share = 1.0 / torch.bincount(src, minlength=n).to(torch.float64)[src]  # (E,)
        root = share.sqrt()
        g = torch.Generator(device="cpu").manual_seed(
            derive_seed(self.seed, _STREAM_SPLIT, self.frame)
        )
        z = torch.randn((c, src.numel()), generator=g, dtype=torch.float64).to(self.device)
        x = self.noise.reshape(c, n).double()
        bridge = torch.zeros((c, n), dtype=torch.float64, device=self.device)
        bridge.index_add_(1, src, root * z)  # sum_f sqrt(a_f) Z_f, per source
        parts = share * (x[:, src] - bridge[:, src]) + root * z  # W_e, independent N(0, a_e)
        total = torch.zeros((c, n), dtype=torch.float64, device=self.device)
        total.index_add_(1, dst, parts)
        weight = torch.bincount(dst, weights=share, minlength=n)
        has = weight > 0
        value = (total / weight.clamp_min(1e-12).sqrt()).float().reshape(self.shape)
        self.noise = torch.where(has.reshape(1, h, w), value, self.white(self.frame))
        return self.noise.clone()


def _edges(
    forward: torch.Tensor, backward: torch.Tensor, h: int, w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (source, target) pixel pairs: targets' back-mapped cells, sources' forward cells."""
    idx = torch.arange(h * w, device=forward.device)
    from_target, in_b = _cell_of(backward, h, w)
    to_target, in_f = _cell_of(forward, h, w)
    in_b, in_f = in_b.reshape(-1), in_f.reshape(-1)
    src = torch.cat((from_target.reshape(-1)[in_b], idx[in_f]))
    dst = torch.cat((idx[in_b], to_target.reshape(-1)[in_f]))
    return src, dst


def make_warper(
    scheme: str,
    channels: int,
    height: int,
    width: int,
    seed: int,
    *,
    gp_features: int = 3000,
    gp_length_scale: float | None = None,
    device: str = "cpu",
) -> NoiseWarper:
    """A warper of ``scheme`` (one of :data:`SCHEMES`) for (channels, height, width) noise.

    GP schemes use ``gp_features`` random features and ``gp_length_scale`` eps in unit
    coordinates (None: ``2 / (pi * res)`` per axis with res = the grid's width and height).
    """
    if scheme not in SCHEMES:
        raise InvalidInput(f"scheme: got {scheme!r}; accepted: {', '.join(SCHEMES)}")
    for name, value, hi in (("channels", channels, 64), ("height", height, 1 << 14)):
        check_int(name, value, 1, hi)
    check_int("width", width, 1, 1 << 14)
    check_int("seed", seed, 0, 2**63 - 1)
    gp = {"n_features": gp_features, "length_scale": gp_length_scale, "res": (width, height)}
    GPNoise(channels=1, **gp)  # validates the GP arguments up front (cheap)
    args = (channels, height, width, seed, device)
    if scheme == "gp":
        return GPWarper(gp, *args)
    if scheme == "integral":
        return IntegralWarper(*args)
    base = scheme.removeprefix("gp-")
    return _GridWarper(base, gp if scheme.startswith("gp-") else None, *args)
