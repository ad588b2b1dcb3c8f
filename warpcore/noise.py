"""Gaussian-process noise by Random Fourier Features (METHOD.md section 1; paper 3.1, F.2).

``xi(x) = sqrt(2/J) * sum_i w_i cos(<z_i, x> + b_i)`` with ``w_i ~ N(0, 1)``,
``z_i ~ N(0, eps^-2 I)`` truncated at ``truncation`` standard deviations per component and
``b_i ~ U(0, 2 pi)``: a sample of a GP with (almost) the squared-exponential kernel
``exp(-|x - y|^2 / (2 eps^2))`` and unit marginal variance, defined on the whole plane. The
truncation (the paper's 2 sd) makes the exact kernel (:meth:`GPNoise.kernel`) up to 0.05 higher
than the squared exponential near one pixel of lag, with a small negative lobe at two pixels.

Coordinates are the unit square of frame 0, x along width; grid pixel (i, j) of an H x W grid
sits at ``((j + 0.5) / W, (i + 0.5) / H)`` (:func:`grid_coords`).

Channels share the features ``(z_i, b_i)`` and have independent weights ``w_i``: every channel
is an exact RFF sample of the GP, and two channels are uncorrelated at every pair of points
(``E[w_ic w_ic'] = 0``). They are not exactly independent for finite J (they share one set of
random frequencies), which costs nothing measurable at J = 3000 and lets all channels share one
matrix of cosines, the whole cost of the exact :meth:`GPNoise.at` (C times cheaper than separate
features).

Two evaluations, both exact up to float32 rounding (about 1e-6, also far outside the frame):
- :meth:`GPNoise.grid` on a regular grid is separable: ``cos(z_x x + b + z_y y)`` expands by
  angle addition into (H x 2J) @ (2J x W) matrix products per channel; the trigonometric tables
  are computed in float64 and reduced modulo 2 pi.
- :meth:`GPNoise.at` at arbitrary points builds the N x J phase matrix in float32 around float64
  anchors: ``<z, x> + b = theta(a) + <z, x - a>`` where ``a`` is ``x`` rounded to a lattice fine
  enough that ``|<z, x - a>| <= 4 pi`` and ``theta(a)`` is reduced modulo 2 pi in float64. So the
  float32 phases stay small and accurate wherever ``x`` is.

:meth:`GPNoise.at` is exactly a 2-D type-3 non-uniform FFT,
``xi_c(x_k) = Re sum_j c_jc exp(i <z_j, x_k>)`` with ``c_jc = sqrt(2/J) w_jc exp(i b_j)``. When
FINUFFT is importable (the ``finufft`` package, CPU) and a tile of points is large enough, it is
evaluated by ``finufft.nufft2d3`` in float64 at tolerance :data:`NUFFT_EPS` (max abs error
against the exact float64 sum measured ~2e-7 on unit-variance noise, mostly the float32 output
rounding, vs ~1.5e-6 for the exact float32 path): O(J + N + grid log grid) instead of O(N J),
with two channels packed into one complex transform. Far-away points keep their
precision the same way as the exact path: each tile is centred on a float64 anchor ``a`` whose
phase ``<z, a> + b`` is reduced modulo 2 pi in float64 and folded into the coefficients, so
the transform only sees offsets ``x - a`` of a tile's size. Points are split into tiles small
enough that the transform's fine grid stays bounded (:data:`_NUFFT_MAX_BANDWIDTH`); tiles with
too few points (and everything when FINUFFT is missing or the field is not on the CPU) take
the exact path. Both paths are deterministic for a given thread count (FINUFFT spreads each
transform single-threaded); the two paths, or one path at two thread counts, differ at float32
rounding level (FINUFFT across thread counts: ~1e-9).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from warpcore.errors import InvalidInput

try:  # optional accelerator of GPNoise.at (a plain CPU wheel); the exact path needs nothing
    import finufft
except ImportError:  # pragma: no cover - exercised only where finufft is not installed
    finufft = None

MAX_FEATURES = 100_000
MAX_CHANNELS = 64
TWO_PI = 2.0 * math.pi
_PHASE_BOUND = 4.0 * math.pi  # largest |<z, x - anchor>| in float32 (ulp < 1e-6)
_CHUNK = 1024  # points per block of the N x J cosine matrix (12 MB in float32 at J = 3000)
_SUM_BLOCK = 256  # features per float32 partial sum
_MASK64 = (1 << 64) - 1
NUFFT_EPS = 1e-8  # FINUFFT relative tolerance (float64 transform)
NUFFT_MIN_POINTS = 512  # fewer points in a tile: the exact path is as fast (measured)
# FINUFFT's cost is about its fine grid (~prod_k(max|z_k| * half-span_k + 16) cells, each
# ~6x the cost of one point-feature cosine of the exact path, measured): a tile whose points
# are sparse for its area (scattered points) is cheaper exactly.
_NUFFT_CELL_COST = 6.0
_NUFFT_THREADED_POINTS = 1 << 17  # fewer points: FINUFFT runs on one thread
# Largest half-span x frequency bound product per axis of one type-3 transform: its fine grid
# (upsampling 1.25) is about this + 16 points per axis (~70 MB of complex128 per transform).
_NUFFT_MAX_BANDWIDTH = 2048.0


def default_length_scale(res: float) -> float:
    """The paper's rule of thumb ``eps = 2 / (pi * res)``: frequencies stay under Nyquist."""
    return 2.0 / (math.pi * res)


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed mixed from ``seed`` and integer ``keys`` (splitmix64), stable everywhere.

    Used to give every (stream, frame) its own generator, so that frame j's fresh noise is a
    function of (seed, j) alone and a restored state continues bit-identically.
    """
    x = seed & _MASK64
    for k in (*keys, 0x5EED):
        x = (x + 0x9E3779B97F4A7C15 + (k & _MASK64)) & _MASK64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        x = z ^ (z >> 31)
    return x >> 1


def grid_coords(
    h: int, w: int, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Unit-square coordinates (h, w, 2) of the pixel centres of an h x w grid, (x, y) order."""
    check_int("h", h, 1, 1 << 20)
    check_int("w", w, 1, 1 << 20)
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1).to(device=device, dtype=dtype)


class GPNoise:
    """One seeded RFF sample of GP noise with ``channels`` channels.

    ``length_scale`` is eps in unit coordinates, a number or an (x, y) pair; None picks
    ``2 / (pi * res)``, where ``res`` is the grid size the noise is sampled on (an int, or a
    (width, height) pair for a non-square grid, which keeps each axis under its own Nyquist
    limit and gives the same per-pixel statistics as a square grid).
    Parameters are drawn on the CPU in float64 in a fixed order (truncated frequencies by
    inverse CDF, then phases, then weights), so a seed gives the same field on every machine.
    """

    def __init__(
        self,
        channels: int = 4,
        n_features: int = 3000,
        length_scale: float | tuple[float, float] | None = None,
        res: int | tuple[int, int] = 128,
        truncation: float = 2.0,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        check_int("channels", channels, 1, MAX_CHANNELS)
        check_int("n_features", n_features, 1, MAX_FEATURES)
        check_int("seed", seed, 0, 2**63 - 1)
        if not _is_number(truncation) or not 0.0 < float(truncation) <= 10.0:
            raise InvalidInput(f"truncation: expected a number in (0, 10], got {truncation!r}")
        self.channels = channels
        self.n_features = n_features
        self.truncation = float(truncation)
        self.seed = seed
        self.length_scale = _length_scales(length_scale, res)
        self.device = torch.device(device)
        self._draw()

    def _draw(self) -> None:
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        j, t = self.n_features, self.truncation
        u = torch.rand((j, 2), generator=g, dtype=torch.float64)
        b = torch.rand((j,), generator=g, dtype=torch.float64) * TWO_PI
        w = torch.randn((j, self.channels), generator=g, dtype=torch.float64)
        lo = torch.special.ndtr(torch.tensor(-t, dtype=torch.float64))
        std = torch.special.ndtri(lo + u * (1.0 - 2.0 * lo))  # N(0, 1) truncated to [-t, t]
        std = std.clamp(-t, t)
        inv_eps = torch.tensor([1.0 / e for e in self.length_scale], dtype=torch.float64)
        dev = self.device
        self.z = (std * inv_eps).to(dev)  # (J, 2) float64
        self.b = b.to(dev)  # (J,) float64
        self.w = w.to(dev)  # (J, C) float64
        self._w32 = (w * math.sqrt(2.0 / j)).to(dev, torch.float32)  # (J, C)
        self._zt32 = self.z.t().contiguous().float()  # (2, J)
        self._w2 = self._w32.t().repeat(1, 2).unsqueeze(1).contiguous()  # (C, 1, 2J)
        # Anchor lattice: |z_k| <= t / eps_k and |x_k - a_k| <= 1 / (2 G_k), so
        # |<z, x - a>| <= sum_k t / (2 eps_k G_k) <= 4 pi.
        self._lattice = tuple(t / (e * _PHASE_BOUND) for e in self.length_scale)

    def at(self, xy: torch.Tensor, method: str = "auto") -> torch.Tensor:
        """The field at points ``xy`` (..., 2) in unit coordinates: returns (C, ...) float32.

        Any leading shape works; a batch of frames' coordinates (N, h, w, 2) gives (C, N, h, w).
        ``method``: "auto" (FINUFFT type 3 on tiles of at least :data:`NUFFT_MIN_POINTS`
        points when available, the exact sum elsewhere), "exact" (one float32 cosine per point
        and feature, shared by all channels, in blocks of 1024 points), or "nufft" (FINUFFT on
        every tile whatever its size; raises InvalidInput without finufft or off the CPU).
        Memory stays bounded for any number of points and any spread of coordinates.
        """
        if method not in ("auto", "exact", "nufft"):
            raise InvalidInput(f"method: expected 'auto', 'exact' or 'nufft', got {method!r}")
        xy = _check_points(xy)
        lead = xy.shape[:-1]
        fast = nufft_available() and self.device.type == "cpu"
        if method == "nufft" and not fast:
            raise InvalidInput("method: 'nufft' needs the finufft package and a CPU field")
        n = math.prod(lead)
        if method == "exact" or not fast or n == 0 or (method == "auto" and n < NUFFT_MIN_POINTS):
            out = self._exact(xy.to(self.device, torch.float64).reshape(-1, 2))
            return out.t().reshape(self.channels, *lead)
        # The fast path runs in numpy: a few tiny torch ops with 2 threads on a loaded 2-core
        # machine cost more (~50 ms of thread wake-ups, measured) than the transform itself.
        flat = xy.detach().to("cpu", torch.float64).numpy().reshape(-1, 2)
        out = self._tiled(flat, 1 if method == "nufft" else NUFFT_MIN_POINTS)
        return torch.from_numpy(np.ascontiguousarray(out.T)).reshape(self.channels, *lead)

    def _exact(self, flat: torch.Tensor) -> torch.Tensor:
        """(n, 2) float64 points -> (n, C) float32 by the exact sum, in blocks of points."""
        out = torch.empty((flat.shape[0], self.channels), dtype=torch.float32, device=self.device)
        for s in range(0, flat.shape[0], _CHUNK):
            out[s : s + _CHUNK] = self._block(flat[s : s + _CHUNK])
        return out

    def _tiled(self, flat: np.ndarray, min_points: int) -> np.ndarray:
        """(n, 2) float64 points -> (n, C) float32: FINUFFT per tile, exact on small tiles.

        Tiles are cells of a lattice whose side keeps ``half-span * max|z_k|`` under
        :data:`_NUFFT_MAX_BANDWIDTH` per axis; usually all points of a frame fit in one tile.
        A tile too sparse for FINUFFT to pay (see :data:`_NUFFT_CELL_COST`) is summed exactly,
        unless ``min_points`` is 1 (``method="nufft"``).
        """
        zmax = np.array([self.truncation / e for e in self.length_scale])
        side = 2.0 * _NUFFT_MAX_BANDWIDTH / zmax
        lo = flat.min(0)
        if bool(((flat.max(0) - lo) <= side).all()):
            groups = [None]
        else:
            cells = np.floor((flat - lo) / side).astype(np.int64)
            _, tile = np.unique(cells, axis=0, return_inverse=True)
            tile = tile.reshape(-1)
            order = np.argsort(tile, kind="stable")
            groups = np.split(order, np.cumsum(np.bincount(tile))[:-1])
        out = np.empty((flat.shape[0], self.channels), dtype=np.float32)
        for idx in groups:
            pts = flat if idx is None else flat[idx]
            cells = float(np.prod(zmax * 0.5 * (pts.max(0) - pts.min(0)) + 16.0))
            cheap = _NUFFT_CELL_COST * cells <= len(pts) * self.n_features
            if len(pts) >= min_points and (cheap or min_points == 1):
                value = self._nufft(pts)
            else:
                value = self._exact(torch.from_numpy(pts).to(self.device)).cpu().numpy()
            if idx is None:
                return value
            out[idx] = value
        return out

    def _nufft(self, pts: np.ndarray) -> np.ndarray:
        """(n, 2) float64 points of one tile -> (n, C) float32 by one type-3 FINUFFT (numpy).

        The tile's centre ``a`` (float64) carries the large part of the phase: ``c_j`` gets
        ``exp(i (<z_j, a> + b_j) mod 2 pi)`` and the transform sees only ``x - a``. Two real
        channels share one complex transform: with sources ``z_j`` and ``-z_j`` carrying
        ``(c_jp + i c_jq) / 2`` and ``(conj c_jp + i conj c_jq) / 2``, the result is
        ``xi_p + i xi_q`` exactly (each channel's sum made real by its conjugate twin).
        """
        anchor = 0.5 * (pts.min(0) + pts.max(0))
        z = self.z.cpu().numpy()
        phase = np.remainder(z @ anchor + self.b.cpu().numpy(), TWO_PI)
        weights = self.w.cpu().numpy().T * math.sqrt(0.5 / self.n_features)  # (C, J): c / 2
        if self.channels % 2:
            weights = np.concatenate((weights, np.zeros_like(weights[:1])))
        rot = np.exp(1j * phase)
        coef = np.concatenate(
            (
                (weights[0::2] + 1j * weights[1::2]) * rot,
                (weights[0::2] + 1j * weights[1::2]) * rot.conj(),
            ),
            axis=1,
        )  # (ceil(C / 2), 2J) complex128
        offsets = pts - anchor
        # FINUFFT's threads pay only on large tiles: a 128^2 frame took 19 ms on one thread and
        # 116 ms on two on a loaded 2-core machine (measured).
        threads = max(1, torch.get_num_threads()) if len(pts) >= _NUFFT_THREADED_POINTS else 1
        values = finufft.nufft2d3(
            np.concatenate((z[:, 0], -z[:, 0])),
            np.concatenate((z[:, 1], -z[:, 1])),
            np.ascontiguousarray(coef),
            np.ascontiguousarray(offsets[:, 0]),
            np.ascontiguousarray(offsets[:, 1]),
            eps=NUFFT_EPS,
            isign=1,
            upsampfac=1.25,
            nthreads=threads,
            spread_thread=2,  # each transform spread by one thread: deterministic sums
        ).reshape(-1, pts.shape[0])
        out = np.stack((values.real, values.imag), axis=1).reshape(-1, pts.shape[0])
        return np.ascontiguousarray(out[: self.channels].T, dtype=np.float32)

    def _block(self, pts: torch.Tensor) -> torch.Tensor:
        """(n, 2) float64 points -> (n, C) float32 values, n <= _CHUNK."""
        lattice = torch.tensor(self._lattice, dtype=torch.float64, device=pts.device)
        cells = torch.round(pts * lattice)
        anchors, inverse = torch.unique(cells, dim=0, return_inverse=True)
        theta = torch.addmm(self.b, anchors / lattice, self.z.t())  # (A, J) float64
        theta = torch.remainder(theta, TWO_PI).float()
        offsets = (pts - cells / lattice).float()  # |offset| <= 1 / (2 G)
        phase = theta.index_select(0, inverse)
        phase.addmm_(offsets, self._zt32)
        phase.cos_()
        # Float32 products summed over blocks of features, blocks summed in float64: the
        # rounding of one 3000-term float32 sum (~1e-5) would dominate every other error.
        out = torch.zeros((pts.shape[0], self.channels), dtype=torch.float64, device=pts.device)
        for k in range(0, self.n_features, _SUM_BLOCK):
            out += (phase[:, k : k + _SUM_BLOCK] @ self._w32[k : k + _SUM_BLOCK]).double()
        return out.float()

    def grid(self, h: int, w: int, origin: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
        """The field on an h x w grid of the unit square shifted by ``origin``: (C, h, w).

        Pixel (i, j) is evaluated at ``origin + ((j + 0.5) / w, (i + 0.5) / h)``. Separable:
        ``cos(z_x x + b + z_y y) = cos(z_x x + b) cos(z_y y) - sin(z_x x + b) sin(z_y y)``.
        """
        check_int("h", h, 1, 1 << 16)
        check_int("w", w, 1, 1 << 16)
        if not (isinstance(origin, (tuple, list)) and len(origin) == 2) or not all(
            _is_number(v) and math.isfinite(float(v)) for v in origin
        ):
            raise InvalidInput(f"origin: expected two finite numbers (x, y), got {origin!r}")
        f64 = {"dtype": torch.float64, "device": self.device}
        xs = float(origin[0]) + (torch.arange(w, **f64) + 0.5) / w
        ys = float(origin[1]) + (torch.arange(h, **f64) + 0.5) / h
        px = _reduce(torch.outer(self.z[:, 0], xs) + self.b[:, None])  # (J, w)
        py = _reduce(torch.outer(ys, self.z[:, 1]))  # (h, J)
        cols = torch.cat((torch.cos(px), torch.sin(px)))  # (2J, w)
        rows = torch.cat((torch.cos(py), -torch.sin(py)), dim=1)  # (h, 2J)
        return (rows[None] * self._w2) @ cols  # channel weights folded into the rows

    def kernel(self, lag: torch.Tensor) -> torch.Tensor:
        """The exact covariance ``E[xi(x) xi(x + lag)]`` of this construction, lag (..., 2).

        The product over axes of ``E[cos(z_k lag_k)]`` for the truncated normal ``z_k``
        (Gauss-Legendre quadrature); close to ``exp(-|lag|^2 / (2 eps^2))``.
        """
        lag = _check_points(lag).to(torch.float64).cpu()
        nodes, weights = np.polynomial.legendre.leggauss(256)
        u = torch.tensor(nodes * self.truncation, dtype=torch.float64)
        pdf = torch.exp(-0.5 * u * u) * torch.tensor(weights, dtype=torch.float64)
        pdf = pdf / pdf.sum()
        out = torch.ones(lag.shape[:-1], dtype=torch.float64)
        for k, eps in enumerate(self.length_scale):
            out = out * (torch.cos(lag[..., k, None] / eps * u) * pdf).sum(-1)
        return out


def nufft_available() -> bool:
    """Whether FINUFFT (the fast path of :meth:`GPNoise.at`) is importable here."""
    return finufft is not None


def _reduce(phase: torch.Tensor) -> torch.Tensor:
    """float64 phases reduced to [-pi, pi] in float64, then float32 (exact to ~2e-7)."""
    return (phase - torch.round(phase * (1.0 / TWO_PI)) * TWO_PI).float()


def _length_scales(
    length_scale: float | tuple[float, float] | None, res: int | tuple[int, int]
) -> tuple[float, float]:
    if length_scale is None:
        pair = tuple(res) if isinstance(res, (tuple, list)) else (res, res)
        if len(pair) != 2:
            raise InvalidInput(f"res: expected an int or (width, height), got {res!r}")
        for r in pair:
            check_int("res", r, 1, 1 << 20)
        return (default_length_scale(pair[0]), default_length_scale(pair[1]))
    pair = tuple(length_scale) if isinstance(length_scale, (tuple, list)) else (length_scale,) * 2
    ok = len(pair) == 2 and all(_is_number(v) and math.isfinite(v) and v > 0 for v in pair)
    if not ok:
        raise InvalidInput(
            f"length_scale: expected a finite number > 0 (or an (x, y) pair), got {length_scale!r}"
        )
    return (float(pair[0]), float(pair[1]))


def _check_points(xy: object) -> torch.Tensor:
    if not isinstance(xy, torch.Tensor) or not xy.is_floating_point():
        kind = xy.dtype if isinstance(xy, torch.Tensor) else type(xy).__name__
        raise InvalidInput(f"xy: expected a floating-point tensor (..., 2), got {kind}")
    if xy.dim() < 1 or xy.shape[-1] != 2:
        raise InvalidInput(f"xy: expected shape (..., 2) of (x, y) pairs, got {tuple(xy.shape)}")
    if xy.device.type == "cpu" and xy.dtype in (torch.float32, torch.float64):
        finite = bool(np.isfinite(xy.detach().numpy()).all())  # no thread pool wake-up
    else:
        finite = bool(torch.isfinite(xy).all())
    if not finite:
        raise InvalidInput("xy: expected finite coordinates, got NaN or infinity")
    return xy


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: object, lo: int, hi: int) -> None:
    """Raise InvalidInput unless ``value`` is an int (not a bool) in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(f"{name}: expected an integer in [{lo}, {hi}], got {value!r}")
