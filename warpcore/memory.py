"""Memory planning: a request's peak memory, estimated before it runs, and the tile that fits.

The peak of a clip is reached inside one frame (frame 1 on: guidance holds the previous
frame's estimates). It is the sum of

- **weights**: every parameter and buffer of the model (the built-in model's from its weights;
  SDXL's UNet, VAE and both text encoders, counted from the modules in their dtypes);
- **model call**: the activations of one denoiser call on one tile (or the whole frame when it
  is not tiled), traced on the ``meta`` device (:mod:`warpcore.memory_trace`: the network's own
  graph at the tile's size, no per-model constant). A run whose guidance gradient goes through
  the network (``guidance_grad="network"``) holds the saved tensors of *every* tile's forward
  until the backward pass: tiling does not bound that part (``graph``). SDXL also has a VAE
  phase (encoding the condition, decoding the frame; tiled above the VAE's sample size);
- **state**: the frame-sized tensors the restorer and the sampler hold, counted term by term in
  :func:`_state` from ``restore.py``, ``sampler.py``, ``tiles.py``, ``guidance.py`` and
  ``warps.py``: the previous frame's estimate at each of the K steps of the run (guidance reads
  them), this frame's K estimates (stacked at the end), the sample and its temporaries, the
  noise warper's displacement field, the tiles' conditions, the input and output frames;
- **host**: on the CPU whatever the device: the frames, the flows and, for inpainting with
  propagation, the window of ``2r + 1`` frames, masks and flows that :mod:`warpcore.propagate`
  keeps. It counts against the budget only when the model runs on the CPU.

The per-step peak does not depend on the number of steps; the state does, by the K stored
estimates (one model-grid frame each), which guidance needs.

:func:`plan` picks the largest tile (a multiple of the model's grid, at most the request's or
the model's working size) whose estimate fits the budget, or raises :class:`OverBudget` before
any compute, saying what was asked, the estimate, the budget and what would fit.
``warpdiff bench memory`` measures the estimate against the allocator.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from warpcore.errors import InvalidInput
from warpcore.memory_trace import trace_peak
from warpcore.request import MIN_TILE, RestoreRequest

GiB = 2**30
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS.update({"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12})
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})
# Measured against traced activation peak of a model call on the CPU, per model: the trace
# sees what PyTorch's code holds, not oneDNN's reorders of NCHW activations and weights into
# its blocked layouts. Built-in model (channels-last): 972 bytes per pixel measured at 1024x1024
# against 833 traced (4109 vs 3921 with the backward pass). SDXL's UNet (NCHW), float32, one
# call in a fresh process (`warpdiff bench memory --model sdxl-random --device cpu`, peak RSS
# after a reset, bytes): measured = constant + factor * traced, from the calls at the ends of
# the measured range (the middle ones check it: README "Memory planning"):
_SDXL_CPU = {  # (tile side, backward): (traced, measured)
    (512, False): (83_665_180, 194_617_344),
    (1024, False): (332_718_364, 609_759_232),
    (256, True): (718_840_604, 968_687_616),
    (512, True): (2_719_628_060, 3_514_490_880),
}


def _line(a: tuple[int, int], b: tuple[int, int]) -> tuple[float, float]:
    """(factor, constant) of measured = constant + factor * traced through two calls."""
    factor = (b[1] - a[1]) / (b[0] - a[0])
    return factor, a[1] - factor * a[0]


# SDXL's VAE decode, float32, the same way: 4_027_490_304 measured against 3_221_749_760
# traced at 1024 px (at 512 px: 1_013_243_904 against 805_437_440, the same factor within 1 %).
VAE_CALIBRATION = {"cpu": 4_027_490_304 / 3_221_749_760}
# (device type, model kind) -> ((factor, constant) forward, (factor, constant) with backward).
# CUDA: the traced peak as is, until the GPU bench (`--device cuda`) measures it.
CALL_CALIBRATION = {
    ("cpu", "builtin"): ((972 / 833, 0.0), (4109 / 3921, 0.0)),  # forward, with backward
    ("cpu", "sdxl"): (
        _line(_SDXL_CPU[512, False], _SDXL_CPU[1024, False]),
        _line(_SDXL_CPU[256, True], _SDXL_CPU[512, True]),
    ),
}
F32 = 4


class OverBudget(InvalidInput):
    """A request whose estimated peak memory exceeds the budget at every tile size."""


def parse_bytes(text: str | int, what: str = "--memory-budget") -> int:
    """``"8GiB"``, ``"512MiB"``, ``"24GB"``, ``"1.5e9"`` or an int -> bytes (> 0)."""
    if isinstance(text, bool):
        raise InvalidInput(f"{what}: expected a size such as 8GiB, got {text!r}")
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
        if not m or m.group(2) not in _UNITS:
            raise InvalidInput(
                f"{what}: expected a size such as 8GiB, 512MiB, 24GB or a number of bytes, "
                f"got {text!r}"
            )
        value = int(float(m.group(1)) * _UNITS[m.group(2)])
    if value <= 0:
        raise InvalidInput(f"{what}: expected a size > 0, got {text!r}")
    return value


def format_bytes(n: float) -> str:
    """Bytes as ``"3.21 GiB"`` / ``"412 MiB"``."""
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / 2**20:.0f} MiB"


def device_budget(device: str, stated: int | None = None) -> tuple[int | None, str]:
    """(bytes, where from): the stated budget, else a CUDA device's total memory, else None (on
    a CPU without ``--memory-budget`` nothing is planned)."""
    if stated is not None:
        return int(stated), "--memory-budget"
    if device.startswith("cuda") and torch.cuda.is_available():
        _free, total = torch.cuda.mem_get_info(torch.device(device))
        return int(total), f"{device} total memory"
    return None, "none (give --memory-budget)"


# -- the model's cost -----------------------------------------------------------------------------
class ModelCost:
    """Weights and traced call peaks of one loaded denoiser (see the module docstring)."""

    def __init__(self, denoiser: Any, device: str | None = None) -> None:
        """``device``: the device type the model will run on, when it is not the one it is
        loaded on (a ``meta`` copy planned for a ``cuda`` card or the CPU)."""
        while hasattr(denoiser, "inner"):  # TiledDenoiser, ZeroShotSR
            denoiser = denoiser.inner
        self.denoiser = denoiser
        self.channels, self.downscale = int(denoiser.channels), int(denoiser.downscale)
        self.device = device or torch.device(getattr(denoiser, "device", "cpu")).type
        if hasattr(denoiser, "unet"):
            self.kind, modules = "sdxl", [denoiser.unet, denoiser.vae, *denoiser.text_encoders]
        elif hasattr(denoiser, "net"):
            self.kind, modules = "builtin", [denoiser.net]
        else:
            self.kind = "other"
            modules = [m for m in vars(denoiser).values() if isinstance(m, torch.nn.Module)]
        tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        self.weights = sum(t.numel() * t.element_size() for t in tensors)
        self._meta: dict[str, torch.nn.Module] = {}
        self._calls: dict[tuple, tuple[int, int]] = {}

    @property
    def multiple(self) -> int:
        """The model grid in pixels: tiles are multiples of it."""
        return 1 if self.downscale == 1 else self.downscale * 8

    def call(self, h: int, w: int, grad: bool = False, cfg: bool = False) -> tuple[int, int]:
        """(peak, held after) bytes of one denoiser call on an ``h x w``-pixel tile: the peak
        calibrated (:data:`CALL_CALIBRATION`); held = its output (+ its graph when ``grad``).

        A fully convolutional network's call is linear in its pixels (attention too, fused):
        ``a + b * pixels``, with ``a`` and ``b`` from traces at two tile sizes (``coefficients``),
        the tile padded to the network's multiple first as the model pads it."""
        m = self.multiple if self.kind != "builtin" else self._twin("net").multiple
        pixels = (-(-h // m) * m) * (-(-w // m) * m)
        (pa, pb), (ha, hb) = self._fit(grad, cfg)
        peak, held = pa + pb * pixels, ha + hb * pixels
        calibration = CALL_CALIBRATION.get((self.device, self.kind))
        factor, constant = (1.0, 0.0) if calibration is None else calibration[grad]
        return int(peak * factor + constant), int(held)

    def _fit(self, grad: bool, cfg: bool) -> tuple[tuple[float, float], tuple[float, float]]:
        key = (grad, cfg)
        if key not in self._calls:
            a, b = self.fit_sides
            (p1, h1), (p2, h2) = self._trace(a, a, grad, cfg), self._trace(b, b, grad, cfg)
            slope_p, slope_h = (p2 - p1) / (b * b - a * a), (h2 - h1) / (b * b - a * a)
            self._calls[key] = ((p1 - slope_p * a * a, slope_p), (h1 - slope_h * a * a, slope_h))
        return self._calls[key]

    @property
    def fit_sides(self) -> tuple[int, int]:
        """The two tile sides (pixels) the call is traced at: 128 and 256 for the built-in
        model, 256 and 512 (latents 32 and 64) for SDXL."""
        return (128, 256) if self.downscale == 1 else (256, 512)

    def coefficients(self) -> dict[str, float]:
        """Traced call bytes per output pixel: forward, and with the backward pass."""
        return {
            "forward": self._fit(False, False)[0][1],
            "network_grad": self._fit(True, False)[0][1],
        }

    def vae_peak(self, h: int, w: int) -> int:
        """SDXL: the peak of encoding / decoding an ``h x w`` frame (0 for pixel models), traced,
        calibrated for the device (:data:`VAE_CALIBRATION`)."""
        if self.kind != "sdxl":
            return 0
        key = (h, w, "vae")
        if key not in self._calls:
            vae = self._twin("vae")

            def decode() -> Any:
                z = torch.empty(1, 4, h // 8, w // 8, device="meta", dtype=vae.dtype)
                return vae.decode(z, return_dict=False)[0].float()

            def encode() -> Any:
                img = torch.empty(1, 3, h, w, device="meta", dtype=vae.dtype)
                return vae.encode(img).latent_dist.mode().float()

            with torch.no_grad():
                self._calls[key] = (max(trace_peak(decode)[0], trace_peak(encode)[0]), 0)
        return int(self._calls[key][0] * VAE_CALIBRATION.get(self.device, 1.0))

    def _twin(self, name: str) -> torch.nn.Module:
        """The network ``name`` rebuilt from its config on the meta device (no memory)."""
        if name not in self._meta:
            if name == "net":
                from warpcore.models.builtin import EDMUNet

                twin = EDMUNet(self.denoiser.net.config).to("meta")
            else:
                real = getattr(self.denoiser, name)
                with torch.device("meta"):
                    twin = type(real).from_config(real.config)
                if twin.dtype != real.dtype:
                    twin = twin.to(dtype=real.dtype)
                if name == "vae":
                    if getattr(real, "use_tiling", False):
                        twin.enable_tiling()
                    # a tiled frame runs the same encoder / decoder on tens of equal tiles
                    twin.encoder, twin.decoder = _Replayed(twin.encoder), _Replayed(twin.decoder)
                    # its blends write the overlap into the tile in place, one row or column at
                    # a time (temporaries of one row): the same memory as returning the tile
                    twin.blend_v = twin.blend_h = lambda a, b, extent: b
            self._meta[name] = twin.eval().requires_grad_(False)
        return self._meta[name]

    def _trace(self, h: int, w: int, grad: bool, cfg: bool) -> tuple[int, int]:
        if self.kind == "builtin":
            fn = _builtin_call(self._twin("net"), h, w, grad)
        elif self.kind == "sdxl":
            fn = _sdxl_call(self._twin("unet"), h, w, grad, 2 if cfg else 1)
        else:  # a model we cannot trace (the analytic Gaussian): a few model-grid frames
            cells = (h // self.downscale) * (w // self.downscale)
            return 8 * self.channels * cells * F32, self.channels * cells * F32

        def whole() -> Any:
            x, out = fn()
            if grad:  # the guidance's backward pass through the network
                (g,) = torch.autograd.grad(out.sum(), x)
                return x, g
            return x, out

        if not grad:  # one trace: the forward is the whole call, its result what it keeps
            return trace_peak(fn)
        peak, _ = trace_peak(whole)
        _, held = trace_peak(fn)  # what a forward keeps (its output and its graph)
        return peak, held


class _Replayed(torch.nn.Module):
    """A submodule traced once per input shape, then replayed inside the trace.

    A replay allocates (and frees) a scratch buffer of the traced call's peak above its input,
    then returns an empty output of the traced shape: the enclosing trace sees the same peak
    (what is live before the call + the call's own) for a fraction of the ops. The VAE's tiled
    decode of a 7680x4320 frame runs its decoder on 60 tiles of at most 4 shapes."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.traced: dict[tuple, tuple[int, torch.Size, torch.dtype]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.utils._python_dispatch import _disable_current_modes

        key = (tuple(x.shape), x.dtype, torch.is_grad_enabled())
        if key not in self.traced:
            out: list[torch.Tensor] = []

            def one() -> torch.Tensor:
                out.append(self.inner(torch.empty(x.shape, dtype=x.dtype, device="meta")))
                return out[-1]

            with _disable_current_modes():  # a trace of its own, not the enclosing one's
                peak, _ = trace_peak(one)
            self.traced[key] = (peak - x.nbytes, out[0].shape, out[0].dtype)
        peak, shape, dtype = self.traced[key]
        scratch = torch.empty(peak, dtype=torch.uint8, device="meta")
        del scratch
        return torch.empty(shape, dtype=dtype, device="meta")


def _builtin_call(net: torch.nn.Module, h: int, w: int, grad: bool) -> Any:
    def fn() -> Any:
        x = torch.empty(1, 3, h, w, device="meta", requires_grad=grad)
        cond = torch.empty(1, 4, h, w, device="meta")
        sigma, task = torch.empty(1, device="meta"), torch.zeros(1, dtype=torch.long, device="meta")
        with torch.set_grad_enabled(grad):
            return x, net(x, sigma, cond, task)

    return fn


def _sdxl_call(unet: torch.nn.Module, h: int, w: int, grad: bool, n: int) -> Any:
    """``SDXLDenoiser.__call__``: scaled input + condition channels, CFG batch ``n``, on the
    UNet's device (meta: traced; a real device: ``warpdiff bench memory --model sdxl-random``
    measures this same call)."""
    cfg = unet.config
    per_id, ids = int(cfg.addition_time_embed_dim), 6
    pooled = unet.add_embedding.linear_1.in_features - ids * per_id
    ch, cw, dt = h // 8, w // 8, unet.dtype
    device = unet.device
    new = torch.empty if device.type == "meta" else torch.randn

    def fn() -> Any:
        x = new(1, 4, ch, cw, device=device, requires_grad=grad)
        extra = new(1, int(cfg.in_channels) - 4, ch, cw, device=device)
        with torch.set_grad_enabled(grad):
            inp = torch.cat([x * 1.0, extra], dim=1)
            out = unet(
                torch.cat([inp] * n).to(dt),
                torch.full((n,), 500.0, device=device),
                encoder_hidden_states=new(n, 77, cfg.cross_attention_dim, device=device, dtype=dt),
                added_cond_kwargs={
                    "text_embeds": new(n, pooled, device=device, dtype=dt),
                    "time_ids": torch.full((n, ids), 1024.0, device=device, dtype=dt),
                },
                return_dict=False,
            )[0].float()
            if n == 2:
                uncond, cond = out.chunk(2)
                out = uncond + 2.0 * (cond - uncond)
            return x, x - out

    return fn


def model_cost(denoiser: Any) -> ModelCost:
    """The (cached) :class:`ModelCost` of a loaded denoiser, kept on the denoiser itself: it
    goes when the model is unloaded (a module-level cache kept every model a server loaded)."""
    cost = getattr(denoiser, "_memory_cost", None)
    if cost is None:
        cost = ModelCost(denoiser)
        denoiser._memory_cost = cost
    return cost


# -- a request's estimate -------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """The estimated peak bytes of a request, by part (module docstring)."""

    tile: int  # the tile side in output pixels; 0 = whole frames
    tiles: int  # tiles per frame
    work: tuple[int, int]  # the grid the model restores (H, W) in output pixels
    weights: int
    call: int  # one model call's activations above what it keeps
    graph: int  # saved tensors of every tile's forward, held for the network-grad backward
    vae: int
    state: int  # held through the frame
    sampling: int  # the sampler's working set (with the model call)
    ending: int  # the end of a frame: history stacked, decoded (with the VAE)
    host: int
    host_counts: bool  # the model runs on the CPU: host memory is device memory

    @property
    def peak(self) -> int:
        """Weights + state + the larger of the sampling phase and the VAE phase (+ host)."""
        return (
            self.weights
            + self.state
            + max(self.sampling + self.call + self.graph, self.ending + self.vae)
            + (self.host if self.host_counts else 0)
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["work"] = list(self.work)
        d["peak"] = self.peak
        return d

    def describe(self) -> str:
        held = self.state + max(self.sampling, self.ending)
        parts = [f"weights {format_bytes(self.weights)}", f"frame state {format_bytes(held)}"]
        parts.append(f"model call {format_bytes(self.call + self.graph)}")
        if self.vae:
            parts.append(f"VAE {format_bytes(self.vae)}")
        if self.host_counts:
            parts.append(f"frames/flows {format_bytes(self.host)}")
        return f"{format_bytes(self.peak)} ({', '.join(parts)})"


def estimate(
    request: RestoreRequest,
    denoiser: Any,
    frame_size: tuple[int, int],
    *,
    tile: int | None = None,
    n_frames: int | None = None,
    window: tuple[int, int] | None = None,
) -> Estimate:
    """The peak memory of ``request`` on ``frame_size`` (H, W input pixels) frames.

    ``tile``: the tile side to estimate (None: the request's, as the restorer resolves it).
    ``window``: inpainting through a crop, the window (H, W) in frame pixels; None takes the
    worst case (the whole frame). ``n_frames`` bounds the propagation window.
    """
    from warpcore.restore import padded_size, resolve_steps, resolve_strength
    from warpcore.schedule import kept_steps
    from warpcore.tiles import resolve_tile, tile_plan

    cost = model_cost(denoiser)
    h_in, w_in = int(frame_size[0]), int(frame_size[1])
    scale = request.scale if request.task == "upscale" else 1
    work = (h_in, w_in)
    crop = request.task == "inpaint" and request.crop and window is not None
    if crop and window[0] * window[1] <= 0.5 * h_in * w_in:  # CropInpainter.MAX_FRACTION
        work = _working(cost, window)
    pad_in = padded_size(work, cost.downscale)
    out = (pad_in[0] * scale, pad_in[1] * scale)
    side = resolve_tile(request.tile if tile is None else tile, cost.denoiser)
    m = cost.multiple
    tiles = [(out[0], out[1])]
    if side and max(out) > side:
        unit = m * scale
        overlap = max(unit, side // 4 // unit * unit)
        tiles = [(t.y1 - t.y0, t.x1 - t.x0) for t in tile_plan(out, side, overlap, unit)]
    k = kept_steps(resolve_steps(request, cost.denoiser), resolve_strength(request, cost.denoiser))
    guided = request.guidance > 0 and (n_frames is None or n_frames > 1)
    grad = guided and request.guidance_grad == "network"
    cfg = request.cfg_scale != 1.0 and cost.kind == "sdxl"
    big = max(tiles, key=lambda t: t[0] * t[1])
    if grad:
        peak_g, held_g = cost.call(*big, grad=True, cfg=cfg)
        graph = sum(cost.call(*t, grad=True, cfg=cfg)[1] for t in tiles)
        call = max(peak_g - held_g, cost.call(*big, cfg=cfg)[0])
    else:
        graph, call = 0, cost.call(*big, cfg=cfg)[0]
    tile_px = sum(t[0] * t[1] for t in tiles)
    state, sampling, ending = _state(cost, request, out, tile_px, k, guided, scale)
    return Estimate(
        tile=side if len(tiles) > 1 else 0,
        tiles=len(tiles),
        work=out,
        weights=cost.weights,
        call=call,
        graph=graph,
        vae=cost.vae_peak(*out),
        state=state,
        sampling=sampling,
        ending=ending,
        host=_host(request, (h_in, w_in), out, n_frames),
        host_counts=cost.device == "cpu",
    )


def _working(cost: ModelCost, window: tuple[int, int]) -> tuple[int, int]:
    """The crop window at the model's working scale (``CropInpainter.working``)."""
    native = getattr(cost.denoiser, "native_pixels", None)
    s = 1.0 if native is None else math.sqrt(float(native) / (window[0] * window[1]))
    m = cost.multiple
    return max(m, round(window[0] * s / m) * m), max(m, round(window[1] * s / m) * m)


def _state(
    cost: ModelCost,
    request: RestoreRequest,
    out: tuple[int, int],
    tile_px: int,
    k: int,
    guided: bool,
    scale: int,
) -> tuple[int, int, int]:
    """Frame-sized tensors on the model's device (bytes): (held through the frame, the
    sampling steps' working set, the end of the frame: history stacked and the decode)."""
    ds, c = cost.downscale, cost.channels
    cells, pixels = (out[0] // ds) * (out[1] // ds), out[0] * out[1]
    frame = c * cells * F32  # one model-grid frame (x, an estimate, the noise), float32
    # sampler.py: x, x_k, h and x_next + its temporary; restore.py: the noise and the start;
    # tiles.py: the blended estimate and its normalised copy; guidance.py (frames 1 on): the
    # warped previous estimate, its residual and the correction.
    working = 5 + 2 + 2 + (3 if guided else 0)
    # the previous frame's K estimates (read by guidance) and this frame's K (sampler history);
    # at the end of the frame torch.stack copies the history once more (+K) while the decode
    # runs, but no model call does.
    estimates = (2 * k - 1) * frame
    ending = (k + 1) * frame + 2 * 3 * pixels * F32  # + the decoded frame and its clamp
    warper = 2 * 2 * cells * 8  # GPWarper: displacement and unit coordinates, (2, h, w) float64
    flows = 2 * 2 * cells * F32  # forward and backward flows on the model grid
    # restore.py: this and the previous input at output size (+ the masks when inpainting);
    # the conditions the model prepared for every tile (tiles.py), their blend weights.
    inputs = 2 * (3 + (1 if request.task == "inpaint" else 0)) * pixels * F32
    if cost.kind == "builtin":
        prepared = tile_px * 4 * F32 + (pixels // (scale * scale)) * 3 * F32
    else:
        prepared = (tile_px // (ds * ds)) * c * F32
    prepared += (tile_px // (ds * ds) + cells) * F32
    return estimates + warper + flows + inputs + prepared, working * frame, ending


def _host(
    request: RestoreRequest,
    frame: tuple[int, int],
    out: tuple[int, int],
    n_frames: int | None,
) -> int:
    """Frames, flows and the propagation window held on the CPU (numpy / CPU tensors)."""
    h, w = frame
    scale = request.scale if request.task == "upscale" else 1
    px_in, px_out = h * w, (h * scale) * (w * scale)
    # the input frame and the caller's copy; the output and its composite; the restorer's
    # flows (forward and backward, 2 x float32, estimated at output size) and OpenCV's
    # grey images and pyramids for them.
    total = 2 * 3 * px_in * F32 + 2 * 3 * px_out * F32 + 2 * 2 * px_out * F32 + 4 * px_out
    if request.task == "inpaint" and request.propagate > 0:
        window = 2 * request.propagate + 1
        if n_frames is not None:
            window = min(window, n_frames)
        # propagate.py: the window's frames and masks (float32), the consecutive plate flows
        # in both directions, and the filled frame and reduced mask it hands on.
        total += window * 4 * px_in * F32 + 2 * max(0, window - 1) * 2 * px_in * F32
        total += 4 * px_in * F32
    return total


# -- planning -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """The request to run (its ``tile`` chosen), its estimate, and the budget it fits."""

    request: RestoreRequest
    estimate: Estimate
    budget: int | None
    source: str


def plan(
    request: RestoreRequest,
    denoiser: Any,
    frame_size: tuple[int, int],
    budget: int | None,
    *,
    source: str = "--memory-budget",
    n_frames: int | None = None,
    window: tuple[int, int] | None = None,
) -> Plan:
    """The largest tile that fits ``budget`` (bytes; None: no planning, the request as is).

    A request that names its tile (``tile`` > 0, or 0 = whole frames) is checked as it is; one
    that does not gets the largest multiple of the model's grid, at most the model's working
    size, that fits. Raises :class:`OverBudget` when nothing fits, before any compute.
    """
    from warpcore.tiles import resolve_tile

    kw = {"n_frames": n_frames, "window": window}
    first = estimate(request, denoiser, frame_size, **kw)
    if budget is None or first.peak <= budget:
        return Plan(request, first, budget, source)
    cost = model_cost(denoiser)
    scale = request.scale if request.task == "upscale" else 1
    unit = cost.multiple * scale
    smallest = max(unit, -(-MIN_TILE // unit) * unit)
    best: Estimate | None = None
    if request.tile is None:  # ours to choose: halve, then step down to the largest that fits
        side = resolve_tile(None, cost.denoiser) // unit * unit
        side = min(side, max(first.work))
        while side >= smallest and best is None:
            e = estimate(request, denoiser, frame_size, tile=side, **kw)
            if e.peak <= budget:
                best = e
            side -= unit if side - unit < smallest else max(unit, side // 8 // unit * unit)
    if best is not None:
        return Plan(dataclasses.replace(request, tile=best.tile or None), best, budget, source)
    low = estimate(request, denoiser, frame_size, tile=smallest, **kw)
    raise OverBudget(_refusal(request, frame_size, first, low, smallest, budget, source))


def _refusal(
    request: RestoreRequest,
    frame_size: tuple[int, int],
    asked: Estimate,
    low: Estimate,
    smallest: int,
    budget: int,
    source: str,
) -> str:
    h, w = frame_size
    what = f"upscale x{request.scale}" if request.task == "upscale" else "inpaint"
    what += f" of {w}x{h} frames"
    tile = "whole frames" if not asked.tile else f"{asked.tile} px tiles"
    grad = (
        ", or guidance_grad 'output' (no backward pass: the network-grad graph of every tile "
        f"takes {format_bytes(low.graph)})"
        if low.graph
        else ""
    )
    fixed = low.weights + (low.host if low.host_counts else 0)
    hint = (
        f"even the smallest tiles ({smallest} px) need {format_bytes(low.peak)}"
        if request.tile is None
        else f"the smallest tiles ({smallest} px, --tile {smallest}) need {format_bytes(low.peak)}"
    )
    if low.peak <= budget:
        hint = f"--tile {smallest} (or no tile: the planner chooses) fits: {format_bytes(low.peak)}"
    elif fixed >= budget:
        hint += f"; the weights and frames alone take {format_bytes(fixed)}"
    return (
        f"memory: {what} with model {request.model!r} at {tile} needs an estimated "
        f"{asked.describe()}; the budget is {format_bytes(budget)} ({source}); {hint}. "
        f"Give a larger budget or smaller frames{grad}"
    )
