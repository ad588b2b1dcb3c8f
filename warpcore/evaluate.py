"""Run restoration methods over evaluation suites and score them (METHOD.md section 6).

Every diffusion method is one :class:`warpcore.request.RestoreRequest` (a noise scheme, with or
without self-guidance) run through :func:`warpcore.restore.restore_clip` with the same seed on
every clip; the classical baselines are OpenCV's Telea inpainting and bicubic upscaling. Each
output is scored while it streams by a :class:`warpcore.metrics.ClipScorer`: the four
self-warping errors, E_warp, and PSNR / SSIM / MSE against the ground truth (inside the mask for
inpainting). Where a suite knows its exact flows the metrics warp with those (no flow-estimation
error in the score); the restorer itself estimates flows from its inputs unless ``oracle_flow``.

Results are plain dicts (JSON-ready); :mod:`warpcore.report` writes them out. Cancelling
(``should_stop`` or Ctrl-C) keeps every finished run and marks the result partial.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from warpcore.errors import Cancelled, InvalidInput
from warpcore.metrics import E_WARP_KEY, REFERENCE_KEYS, WARP_KEYS, ClipScorer
from warpcore.progress import Event, EventSink, ShouldStop, never_stop, no_events
from warpcore.suites import Clip

METRIC_KEYS = (*WARP_KEYS, E_WARP_KEY, *REFERENCE_KEYS, "lpips")
HEADLINE_KEY = "warp_pixel_first"  # the paper's Table 2 column: pixel error w.r.t. frame 0
FrameSink = Callable[[str, str, int, np.ndarray], None]  # (clip, method, index, frame)


@dataclass(frozen=True)
class Method:
    """One row of the tables: a noise scheme with or without guidance, or a classical baseline."""

    name: str
    label: str
    noise: str | None = None  # None: a classical baseline
    guidance: float = 0.0
    task: str | None = None  # classical baselines do one task
    rule: str | None = None  # the guidance step rule (None: the engine's default)

    @property
    def diffusion(self) -> bool:
        return self.noise is not None


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("fixed", "Fixed noise", "fixed"),
        Method("resample", "Resampled noise", "resample"),
        Method("nearest", "Nearest-neighbour warp", "nearest"),
        Method("bilinear", "Bilinear warp", "bilinear"),
        Method("integral", "Integral warp (HIWYN-style)", "integral"),
        Method("gp-fixed", "GP noise, fixed", "gp-fixed"),
        Method("gp-resample", "GP noise, resampled", "gp-resample"),
        Method("gp-nearest", "GP noise, nearest warp", "gp-nearest"),
        Method("gp", "GP warping (no guidance)", "gp"),
        Method("integral+guidance", "Integral warp + guidance", "integral", 1.0),
        Method("warped", "Warped Diffusion (GP + guidance)", "gp", 1.0),
        Method(
            "warped-newton",
            "Warped Diffusion, Gauss-Newton step (lambda 0.5)",
            "gp",
            0.5,
            rule="newton",
        ),
        Method(
            "warped-dps", "Warped Diffusion, the paper's DPS step (lambda 1)", "gp", 1.0, rule="dps"
        ),
        Method("warped-blend", "Warped Diffusion, blend (lambda 0.5)", "gp", 0.5, rule="blend"),
        Method("warped-band", "Warped Diffusion, band (lambda 0.5)", "gp", 0.5, rule="band"),
        Method("telea", "OpenCV inpainting (Telea)", task="inpaint"),
        Method("bicubic", "Bicubic upscaling", task="upscale"),
    )
}
DEFAULT_METHODS = (
    "fixed", "resample", "nearest", "bilinear", "integral", "gp", "integral+guidance", "warped",
    "warped-newton", "telea", "bicubic",
)  # fmt: skip
WARPED = "warped"


def resolve_methods(names: tuple[str, ...] | list[str]) -> tuple[Method, ...]:
    """Methods by name; ``all`` is every method, ``default`` the default set."""
    out: list[str] = []
    for name in names:
        expanded = {"all": tuple(METHODS), "default": DEFAULT_METHODS}.get(name, (name,))
        for n in expanded:
            if n not in METHODS:
                raise InvalidInput(
                    f"methods: got {n!r}; accepted: {', '.join(METHODS)}, all, default"
                )
            if n not in out:
                out.append(n)
    if not out:
        raise InvalidInput("methods: expected at least one method")
    return tuple(METHODS[n] for n in out)


@dataclass(frozen=True)
class EvalConfig:
    """How to run the methods. ``steps``/``seed``/``flow`` go into every request."""

    model: str = "builtin"
    steps: int = 10
    seed: int = 0
    methods: tuple[str, ...] = DEFAULT_METHODS
    flow: str = "dis"
    oracle_flow: bool = False  # give the restorer the suite's exact flows
    metric_flow: str = "exact"  # "exact" where the clip has them, else the estimated flow
    guidance: float | None = None  # lambda of the guided methods (None: the request default)
    guidance_rule: str | None = None  # "blend" / "dps" / "newton" (None: the request default)
    strength: float | None = None  # of every diffusion method (None: the request default)
    flow_check: float | None = None  # guidance's photometric check (None: the request default)
    camera_motion: bool | None = None  # flows follow the camera (None: the task's default)
    # Inpainting propagation radius. 0: the paper's comparisons, every hole pixel generated by
    # the method under test; None: the product default (the demo).
    propagate: int | None = 0
    seeds: int = 1  # runs per diffusion method and clip (seeds seed + index + r * n_clips)
    device: str = "cpu"

    def __post_init__(self) -> None:
        resolve_methods(self.methods)
        if self.metric_flow not in ("exact", "estimated"):
            raise InvalidInput(f"metric_flow: got {self.metric_flow!r}; accepted: exact, estimated")
        from warpcore.request import RestoreRequest

        RestoreRequest(task="inpaint", steps=self.steps, seed=self.seed, flow=self.flow)
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise InvalidInput(f"seeds: expected an integer >= 1, got {self.seeds!r}")

    def request(self, method: Method, clip: Clip, seed: int) -> Any:
        from warpcore.request import RestoreRequest

        strength: dict[str, Any] = {}  # a guided method with no lambda: the engine default
        if method.guidance <= 0:
            strength["guidance"] = 0.0
        elif method.rule is not None:  # a fixed recipe: the paper's rule and lambda
            strength.update(guidance=method.guidance, guidance_rule=method.rule)
        else:
            if self.guidance is not None:
                strength["guidance"] = self.guidance
            if self.guidance_rule is not None:
                strength["guidance_rule"] = self.guidance_rule
        if self.strength is not None:
            strength["strength"] = self.strength
        if self.flow_check is not None:
            strength["flow_check"] = self.flow_check
        if self.propagate is not None:
            strength["propagate"] = self.propagate
        return RestoreRequest(
            task=clip.task, scale=clip.scale if clip.task == "upscale" else 4, model=self.model,
            noise=method.noise, steps=self.steps, seed=seed, flow=self.flow, device=self.device,
            camera_motion=self.camera_motion, **strength,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Scoring with exact flows


class ExactFlowScorer(ClipScorer):
    """A :class:`ClipScorer` that warps with a clip's exact flows instead of estimating them."""

    def __init__(self, forward: np.ndarray, backward: np.ndarray) -> None:
        super().__init__()
        self.flow_method = "exact"
        self._exact = (forward, backward)

    def _input_flows(
        self, inp: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pair = len(self) - 1  # frames 0..len-1 are scored; this is pair (len-1, len)
        fwd, bwd = (torch.from_numpy(np.ascontiguousarray(f[pair])) for f in self._exact)
        if tuple(fwd.shape[1:]) != tuple(size):
            raise InvalidInput(f"flows: exact flows are {tuple(fwd.shape[1:])}, output is {size}")
        return fwd, bwd


def make_scorer(clip: Clip, config: EvalConfig) -> ClipScorer:
    if clip.exact_flows and config.metric_flow == "exact":
        return ExactFlowScorer(clip.forward, clip.backward)
    return ClipScorer(flow=config.flow)


def exact_flow_fn(clip: Clip) -> Callable[[int, torch.Tensor, torch.Tensor], tuple]:
    """A restorer ``flow_fn`` that hands out the clip's exact flows of pair (j-1, j)."""

    def flow_fn(j: int, _prev: torch.Tensor, _cur: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(
            torch.from_numpy(np.ascontiguousarray(f[j - 1])) for f in (clip.forward, clip.backward)
        )

    return flow_fn


# ---------------------------------------------------------------------------------------------
# Methods


def classical(method: Method, clip: Clip) -> Iterator[np.ndarray]:
    """Telea inpainting (radius 3, 8-bit as OpenCV requires) or bicubic upscaling per frame."""
    if method.name == "telea":
        for frame, mask in zip(clip.inputs, clip.masks, strict=True):
            u8 = np.clip(np.rint(frame[..., :3] * 255), 0, 255).astype(np.uint8)
            m8 = (np.asarray(mask) > 0.5).astype(np.uint8)
            out = cv2.inpaint(u8, m8, 3, cv2.INPAINT_TELEA).astype(np.float32) / 255.0
            keep = m8[..., None] == 0
            yield np.where(keep, frame[..., :3], out).astype(np.float32)
        return
    for frame in clip.inputs:
        up = cv2.resize(
            frame[..., :3], None, fx=clip.scale, fy=clip.scale, interpolation=cv2.INTER_CUBIC
        )
        yield np.clip(up, 0, 1).astype(np.float32)


def method_frames(
    method: Method, clip: Clip, config: EvalConfig, denoiser: Any, seed: int,
    on_event: EventSink, should_stop: ShouldStop,
) -> Iterator[np.ndarray]:  # fmt: skip
    """The output frames of ``method`` on ``clip``, streamed."""
    if not method.diffusion:
        for frame in classical(method, clip):
            if should_stop():
                raise Cancelled(f"{method.name}: cancelled")
            yield frame
        return
    from warpcore.restore import restore_clip

    request = config.request(method, clip, seed)
    for _index, frame in restore_clip(
        request, denoiser, iter(clip.inputs), iter(clip.masks) if clip.masks is not None else None,
        n_frames=clip.n_frames, on_event=on_event, should_stop=should_stop,
        flow_fn=exact_flow_fn(clip) if config.oracle_flow and clip.exact_flows else None,
    ):  # fmt: skip
        yield frame


def run_method(
    method: Method,
    clip: Clip,
    config: EvalConfig,
    denoiser: Any = None,
    *,
    seed: int = 0,
    on_event: EventSink = no_events,
    should_stop: ShouldStop = never_stop,
    sink: FrameSink | None = None,
    lpips: Callable[[np.ndarray, np.ndarray], float] | None = None,
) -> dict[str, Any]:
    """Run one method on one clip and score it; returns the scorer's summary plus timing."""
    scorer = make_scorer(clip, config)
    frames = method_frames(method, clip, config, denoiser, seed, on_event, should_stop)
    truth = iter(clip.truth) if clip.truth is not None else None
    masks = iter(clip.masks) if clip.masks is not None else None
    seconds, learned = 0.0, []
    for index, inp in enumerate(clip.inputs):
        start = time.perf_counter()
        out = next(frames)
        seconds += time.perf_counter() - start
        ref = next(truth) if truth else None
        scorer.add(out, inp, ref, next(masks) if masks else None)
        if lpips is not None and ref is not None:
            learned.append(lpips(out, ref))
        if sink is not None:
            sink(clip.name, method.name, index, out)
    summary = scorer.summary()
    summary["seconds_per_frame"] = seconds / max(1, clip.n_frames)
    if learned:
        summary["mean"]["lpips"] = float(np.mean(learned))
    return summary


def score_truth(clip: Clip, config: EvalConfig) -> dict[str, Any] | None:
    """The ground truth's own warping errors under the same metric (None without truth)."""
    if clip.truth is None:
        return None
    scorer = make_scorer(clip, config)
    masks = iter(clip.masks) if clip.masks is not None else None
    for gt, inp in zip(clip.truth, clip.inputs, strict=True):
        scorer.add(gt, inp, None, next(masks) if masks else None)
    return scorer.summary()


def choose_threads(requested: int | None = None) -> int:
    """Set torch's CPU threads: ``requested``, else all cores on an idle machine and 1 on a busy
    one (a 1-minute load average at or above the core count): oversubscribed torch threads run
    several times slower (measured 6x for the built-in model on a shared 2-core machine)."""
    cores = os.cpu_count() or 1
    if requested is None:
        busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores
        requested = 1 if busy else cores
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise InvalidInput(f"threads: expected a positive integer, got {requested!r}")
    torch.set_num_threads(requested)
    return requested


# ---------------------------------------------------------------------------------------------
# Whole suites


def evaluate(
    clips: list[Clip],
    config: EvalConfig,
    *,
    on_event: EventSink = no_events,
    should_stop: ShouldStop = never_stop,
    sink: FrameSink | None = None,
    denoisers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every method on every clip (same seed per clip for all methods); a JSON-ready dict.

    Progress goes to ``on_event`` as ``Event("progress", data={"done", "total"})`` in model
    steps (a classical frame counts as one); ``data["finished_run"]`` marks a finished run.
    On cancel (``should_stop``, ``Cancelled`` or Ctrl-C) the finished runs are kept and
    ``result["partial"]`` is True.
    """
    methods = resolve_methods(config.methods)
    plan = [
        (i, c, m, r)
        for i, c in enumerate(clips)
        for m in methods
        if m.task in (None, c.task)
        for r in range(config.seeds if m.diffusion else 1)
    ]
    if not plan:
        raise InvalidInput("methods: none of them applies to the clips' tasks")
    denoisers = {} if denoisers is None else denoisers
    cost = {  # model steps per frame (a partial-strength run takes fewer); a classical frame: 1
        (id(m), c.task): _steps_per_frame(config, m, c, denoisers) for _, c, m, _ in plan
    }
    total = sum(c.n_frames * cost[(id(m), c.task)] for _, c, m, _ in plan)
    result: dict[str, Any] = {
        "config": asdict(config), "clips": [_clip_meta(c) for c in clips], "runs": [],
        "truth": {}, "partial": False, "optional_metrics": optional_metrics(), "host": _host(),
    }  # fmt: skip
    lpips = lpips_metric(result["optional_metrics"])
    done, start = 0, time.perf_counter()
    on_event(Event("started", message=f"{len(plan)} runs", data={"done": 0, "total": total}))
    try:
        for index, clip, method, repeat in plan:
            if clip.name not in result["truth"]:
                result["truth"][clip.name] = score_truth(clip, config)
            denoiser = _denoiser(denoisers, config, clip.task) if method.diffusion else None
            seed = config.seed + index + repeat * len(clips)
            label = f"{clip.name} / {method.name}"
            if config.seeds > 1 and method.diffusion:
                label += f" / seed {seed}"
            relay = _relay(on_event, done, total, label)
            summary = run_method(
                method, clip, config, denoiser, seed=seed, on_event=relay,
                should_stop=should_stop, sink=sink if repeat == 0 else None, lpips=lpips,
            )  # fmt: skip
            request = config.request(method, clip, seed) if method.diffusion else None
            result["runs"].append({
                "clip": clip.name, "method": method.name, "seed": seed, **summary,
                "request": request.to_dict() if request is not None else {},
            })  # fmt: skip
            done += clip.n_frames * cost[(id(method), clip.task)]
            on_event(Event("progress", message=label, data={
                "done": done, "total": total, "finished_run": label,
            }))  # fmt: skip
    except (Cancelled, KeyboardInterrupt):
        result["partial"] = True
        on_event(Event("cancelled", message=f"kept {len(result['runs'])} finished runs"))
    result["wall_seconds"] = time.perf_counter() - start
    result["groups"] = aggregate(result)
    if not result["partial"]:
        on_event(Event("finished", data={"done": total, "total": total}))
    return result


def _steps_per_frame(config: EvalConfig, method: Method, clip: Clip, denoisers: dict) -> int:
    if not method.diffusion:
        return 1
    from warpcore.restore import resolve_strength
    from warpcore.schedule import kept_steps

    request = config.request(method, clip, config.seed)
    return kept_steps(
        config.steps, resolve_strength(request, _denoiser(denoisers, config, clip.task))
    )


def _host() -> str:
    load = f", load average {os.getloadavg()[0]:.1f} at start" if hasattr(os, "getloadavg") else ""
    return f"{os.cpu_count()} cores{load}"


def _denoiser(cache: dict[str, Any], config: EvalConfig, task: str) -> Any:
    if task not in cache:
        cache[task] = load_model(config.model, task, config.device)
    return cache[task]


def load_model(spec: str, task: str, device: str = "cpu") -> Any:
    """:func:`warpcore.models.load_denoiser`, plus a built-in checkpoint folder (a
    ``model.safetensors`` with its ``config.json``, e.g. ``runs/NAME/best``) to score training
    runs before they are exported."""
    folder = Path(spec)
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        from warpcore.models.builtin import load_builtin

        return load_builtin(task, device, weights=folder)
    from warpcore.models import load_denoiser

    return load_denoiser(spec, task, device=device)


def _relay(on_event: EventSink, offset: int, total: int, label: str) -> EventSink:
    """Restorer events -> global progress (steps done over the whole evaluation)."""

    def relay(event: Event) -> None:
        if event.kind != "progress":
            return
        done = offset
        if event.step >= 0:
            done += event.frame * event.n_steps + event.step + 1
        on_event(Event(
            "progress", frame=event.frame, n_frames=event.n_frames, step=event.step,
            n_steps=event.n_steps, message=label, data={"done": done, "total": total},
        ))  # fmt: skip

    return relay


def _clip_meta(clip: Clip) -> dict[str, Any]:
    info = {k: v for k, v in clip.info.items() if isinstance(v, (str, int, float, list))}
    return {
        "name": clip.name, "suite": clip.suite, "task": clip.task, "scale": clip.scale,
        "frames": clip.n_frames, "exact_flows": clip.exact_flows,
        "ground_truth": clip.truth is not None, **info,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Aggregation


def aggregate(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Group runs by (suite, task, scale); mean and std over runs (clips x seeds) of each
    run's mean."""
    meta = {c["name"]: c for c in result["clips"]}
    groups: dict[tuple, dict[str, Any]] = {}
    for run in result["runs"]:
        c = meta[run["clip"]]
        key = (c["suite"], c["task"], c["scale"])
        g = groups.setdefault(key, {
            "suite": c["suite"], "task": c["task"], "scale": c["scale"], "clips": [],
            "runs": {},
        })  # fmt: skip
        if run["clip"] not in g["clips"]:
            g["clips"].append(run["clip"])
        g["runs"].setdefault(run["method"], []).append(run)
    out = []
    for g in groups.values():
        runs = g.pop("runs")
        g["methods"] = {name: _stats(rs) for name, rs in runs.items()}
        truths = [result["truth"].get(c) for c in g["clips"]]
        truths = [t for t in truths if t is not None]
        g["truth"] = _stats(truths) if truths else None
        g["metric_flow"] = _metric_flow(runs)
        out.append(g)
    return out


def _stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    mean, std = {}, {}
    for key in METRIC_KEYS:
        values = [r["mean"].get(key) for r in runs]
        values = [v for v in values if v is not None]
        mean[key] = float(np.mean(values)) if values else None
        std[key] = float(np.std(values)) if values else None
    curves = {}
    for key in WARP_KEYS:
        lists = [r["per_frame"].get(key, []) for r in runs]
        n = min(len(x) for x in lists) if lists else 0
        curves[key] = [_mean_or_none([x[i] for x in lists]) for i in range(n)]
    spf = [r["seconds_per_frame"] for r in runs if "seconds_per_frame" in r]
    return {
        "clips": len(runs), "mean": mean, "std": std, "per_frame": curves,
        "seconds_per_frame": float(np.mean(spf)) if spf else None,
    }  # fmt: skip


def _mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _metric_flow(runs: dict[str, list[dict[str, Any]]]) -> str:
    kinds = {r.get("flow") for rs in runs.values() for r in rs}
    return "/".join(sorted(str(k) for k in kinds))


# ---------------------------------------------------------------------------------------------
# Optional learned metrics


@dataclass(frozen=True)
class OptionalMetric:
    name: str
    available: bool
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _hub_checkpoints() -> list[str]:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    folder = torch_home / "hub" / "checkpoints"
    return sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []


def optional_metrics() -> dict[str, dict[str, Any]]:
    """Whether LPIPS, FID and CLIP scores can run here, and why not (no downloads tried)."""
    found = _hub_checkpoints()
    have = {name: importlib.util.find_spec(name) is not None for name in
            ("lpips", "torchvision", "pytorch_fid", "torch_fidelity", "open_clip")}  # fmt: skip
    alex = [f for f in found if f.startswith("alexnet")]
    inception = [f for f in found if "inception" in f]
    lpips = OptionalMetric("lpips", have["lpips"] and have["torchvision"] and bool(alex), (
        "needs the 'lpips' package, torchvision and AlexNet weights in the torch hub cache "
        f"(lpips: {have['lpips']}, torchvision: {have['torchvision']}, weights: {bool(alex)})"
    ))  # fmt: skip
    fid_pkg = have["pytorch_fid"] or have["torch_fidelity"]
    fid = OptionalMetric("fid", False, (
        "not computed: needs pytorch-fid or torch-fidelity with Inception weights "
        f"(package: {fid_pkg}, weights: {bool(inception)}), and is not meaningful over a few "
        "short clips (FID needs thousands of frames)"
    ))  # fmt: skip
    clip = OptionalMetric("clip", False, (
        f"not computed: needs open_clip (installed: {have['open_clip']}) with downloaded CLIP "
        "weights, and a text prompt per clip, which the suites do not have"
    ))  # fmt: skip
    if lpips.available:
        lpips = OptionalMetric("lpips", True, "computed (AlexNet)")
    return {m.name: {"available": m.available, "reason": m.reason} for m in (lpips, fid, clip)}


def lpips_metric(
    status: dict[str, dict[str, Any]],
) -> Callable[[np.ndarray, np.ndarray], float] | None:
    """LPIPS (AlexNet) of two (H, W, 3) frames when its weights are here, else None.

    A failure to load is recorded in ``status["lpips"]`` (the report says why it was skipped).
    """
    if not status["lpips"]["available"]:
        return None
    try:
        import lpips as lpips_package

        net = lpips_package.LPIPS(net="alex", verbose=False).eval()
    except Exception as exc:  # an optional metric never stops an evaluation
        status["lpips"] = {"available": False, "reason": f"failed to load: {exc}"}
        return None

    def score(out: np.ndarray, ref: np.ndarray) -> float:
        a, b = (torch.from_numpy(np.ascontiguousarray(x[..., :3])).permute(2, 0, 1)[None] * 2 - 1
                for x in (out, ref))  # fmt: skip
        with torch.no_grad():
            return float(net(a.float(), b.float()))

    return score
