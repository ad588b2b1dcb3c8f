"""The restoration request: a frozen dataclass validated before any compute."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from warpcore.errors import InvalidInput

TASKS = ("inpaint", "upscale")
MIN_TILE, MAX_TILE = 64, 8192  # a request's tile side in output pixels (warpcore.tiles)
NOISE_SCHEMES = (
    "gp",
    "integral",
    "fixed",
    "resample",
    "nearest",
    "bilinear",
    "gp-fixed",
    "gp-resample",
    "gp-nearest",
)
FLOW_METHODS = ("dis", "dis-fast", "dis-ultrafast", "farneback", "raft")
SAMPLERS = ("euler", "heun")
SCALES = (2, 4, 8)
GUIDANCE_RULES = ("dps", "newton", "blend", "band")
# The rule and lambda a request gets when it names none (docs/guidance.md has the tables).
# Upscaling: the band step at 0.8, far ahead of the paper's step on the shift, motion and
# real-video suites with the built-in model. Inpainting: band at 0.65 with the fill's mean colour
# kept (EquivarianceGuidance.keep_mean_in): 16x below GP noise alone on shift-inpaint where the
# paper's step reached 4.4x, and on real removal less hole flicker, no colour cast (session 10).
DEFAULT_RULE = {"inpaint": "band", "upscale": "band"}
_LAMBDA = {"blend": 0.5, "band": 0.8, "dps": 1.0, "newton": 0.5}
DEFAULT_LAMBDA = {"inpaint": {**_LAMBDA, "band": 0.65}, "upscale": _LAMBDA}  # task, rule
DEFAULT_CAMERA = {"inpaint": True, "upscale": False}  # measured per task (docs/guidance.md)
GUIDANCE_GRADS = ("network", "output")


@dataclass(frozen=True)
class RestoreRequest:
    """Everything that decides a clip's output, except the frames themselves.

    ``guidance`` is the self-guidance strength lambda (0 = off; None: DEFAULT_LAMBDA of the
    task and rule). ``guidance_rule`` (None: DEFAULT_RULE of the task): "blend"
    (docs/guidance.md) pulls each step's estimate toward the previous frame's estimate warped
    onto this frame, weighted per pixel by how faithfully the warp reproduces it; its lambda
    (at most 1) is the fraction of that residual removed per step, the same at every resolution
    and on every model. "band" (the default: lambda 0.8 upscaling, 0.65 inpainting) is blend
    with both sides low-passed alike: the current estimate is compared through the blur the
    warp gave the previous one, so sub-pixel motion is followed without importing that blur;
    for inpainting neither rule moves the fill's mean colour. "dps" is the paper's normalised
    step (lambda = 1 as in the paper); "newton" takes Gauss-Newton steps (lambda = 1 removes
    the whole residual when the Jacobian is the identity).
    ``guidance_grad`` "output" (default) takes the denoiser's Jacobian as the identity and costs
    no backward pass (measured as good as the paper's on our models: ``warpdiff bench sampler``);
    "network" backpropagates through the denoiser, as the paper does.
    ``guidance_range`` is the half-open range of step fractions [start, stop) where guidance
    applies. ``strength`` < 1 starts from the noised condition instead of pure noise (a
    img2img-style partial run: less is closer to the input); None takes the model's default
    (``default_strength``: 1 for SDXL fine-tunes, 0.5 for zero-shot SDXL upscaling; the built-in
    model: its config.json, 0.2 inpainting and 0.1 upscaling, chosen on real video, TRAINING.md).
    ``steps`` None takes the model's default (``default_steps``: 25; the built-in model 10, where
    it measured better than 25 with guidance, TRAINING.md). ``propagate`` (inpaint): before
    diffusion, each hole is filled with the background that the frames up to this many frames
    before and after show (:mod:`warpcore.propagate`); only what no frame of that window shows
    is generated. 0 turns it off. ``crop`` (inpaint): restore only a window around the remaining
    hole, at the model's working scale (:mod:`warpcore.crops`); pixels outside it are never
    touched. False sends the whole frame to the model. ``flow_check``: guidance skips pixels
    where the flow moves frame j-1's input onto frame j's worse than a flow misplaced by this
    many pixels would (:func:`warpcore.flow.photometric_mask`): a flow that is wrong there
    would pull the frame toward a misplaced previous one; nor where the flow scatters by more
    than half a pixel within 5 px (:func:`warpcore.flow.coherence_mask`: DIS on motion blur);
    0 turns both checks off.
    ``camera_motion``: the restorer's flows (and propagation's) take the camera's motion, fitted
    on the whole frame, wherever it moves one frame onto the other as well as the dense flow
    does (:mod:`warpcore.camera`): exact to a few hundredths of a pixel where DIS is a few
    tenths off; False keeps the dense flow alone; None takes the task's default
    (``DEFAULT_CAMERA``: on for inpainting, off for upscaling, where it measured no better).
    ``tile``: output frames larger than this many pixels a side go through the model in
    overlapping tiles whose estimates are blended at every step (:mod:`warpcore.tiles`); None
    takes the model's native size (1024 px), 0 sends the whole frame at once.
    """

    task: str
    scale: int = 4
    model: str = "builtin"
    noise: str = "gp"
    guidance: float | None = None
    guidance_range: tuple[float, float] = (0.0, 1.0)
    guidance_rule: str | None = None
    guidance_grad: str = "output"
    steps: int | None = None
    sampler: str = "euler"
    seed: int = 0
    prompt: str = ""
    negative_prompt: str = ""
    cfg_scale: float = 1.0
    strength: float | None = None
    flow: str = "dis"
    occlusion_mask: bool = True
    flow_check: float = 1.0
    camera_motion: bool | None = None
    composite: bool = True
    propagate: int = 8
    crop: bool = True
    tile: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        _choice("task", self.task, TASKS)
        _choice("noise", self.noise, NOISE_SCHEMES)
        _choice("flow", self.flow, FLOW_METHODS)
        _choice("sampler", self.sampler, SAMPLERS)
        if self.guidance_rule is None:  # measured per task (docs/guidance.md)
            object.__setattr__(self, "guidance_rule", DEFAULT_RULE[self.task])
        _choice("guidance_rule", self.guidance_rule, GUIDANCE_RULES)
        if self.camera_motion is None:
            object.__setattr__(self, "camera_motion", DEFAULT_CAMERA[self.task])
        if self.guidance is None:
            object.__setattr__(self, "guidance", DEFAULT_LAMBDA[self.task][self.guidance_rule])
        _choice("guidance_grad", self.guidance_grad, GUIDANCE_GRADS)
        if self.task == "upscale":
            _choice("scale", self.scale, SCALES)
        if self.steps is not None:
            _int_range("steps", self.steps, 1, 1000)
        _int_range("seed", self.seed, 0, 2**63 - 1)
        _int_range("propagate", self.propagate, 0, 64)
        for name in ("crop", "camera_motion"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInput(f"{name}: expected true or false, got {getattr(self, name)!r}")
        if self.tile is not None and (
            isinstance(self.tile, bool)
            or not isinstance(self.tile, int)
            or not (self.tile == 0 or MIN_TILE <= self.tile <= MAX_TILE)
        ):
            raise InvalidInput(
                f"tile: expected 0 (whole frames) or a side in pixels in [{MIN_TILE}, {MAX_TILE}], "
                f"got {self.tile!r}"
            )
        _float_range("guidance", self.guidance, 0.0, 100.0)
        if self.guidance_rule in ("blend", "band") and self.guidance > 1.0:
            raise InvalidInput(
                f"guidance: the {self.guidance_rule} rule's lambda is the fraction of the residual "
                f"removed per "
                f"step, in [0, 1]; got {self.guidance}"
            )
        _float_range("flow_check", self.flow_check, 0.0, 64.0)
        _float_range("cfg_scale", self.cfg_scale, 0.0, 30.0)
        if self.strength is not None:
            _float_range("strength", self.strength, 0.01, 1.0)
        start, stop = _pair("guidance_range", self.guidance_range)
        if not 0.0 <= start < stop <= 1.0:
            raise InvalidInput(
                f"guidance_range: expected 0 <= start < stop <= 1 (fractions of the steps), "
                f"got {self.guidance_range!r}"
            )
        if not isinstance(self.model, str) or not self.model:
            raise InvalidInput("model: expected 'builtin', 'gaussian', a folder or a hub id")
        if not isinstance(self.device, str) or not self.device:
            raise InvalidInput("device: expected 'cpu', 'cuda', 'cuda:N' or 'mps'")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["guidance_range"] = list(self.guidance_range)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestoreRequest:
        """Build from plain data (JSON, msgpack); unknown keys are an error that lists the known."""
        if not isinstance(data, dict):
            raise InvalidInput(f"request: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"request: unknown fields {unknown}; accepted: {sorted(known)}")
        if "task" not in data:
            raise InvalidInput(f"request: 'task' is required, one of {TASKS}")
        values = dict(data)
        if "guidance_range" in values:
            values["guidance_range"] = tuple(_pair("guidance_range", values["guidance_range"]))
        return cls(**values)

    def key(self) -> str:
        """A stable content hash of every field that changes the output (not the device)."""
        d = self.to_dict()
        d.pop("device")
        if d["tile"] is None:  # the default keeps the keys of requests made before tiles
            d.pop("tile")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:32]


def _choice(name: str, value: object, accepted: tuple) -> None:
    if value not in accepted:
        raise InvalidInput(f"{name}: got {value!r}; accepted: {', '.join(map(str, accepted))}")


def _int_range(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(f"{name}: expected an integer in [{lo}, {hi}], got {value!r}")


def _float_range(name: str, value: object, lo: float, hi: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not lo <= float(value) <= hi:  # NaN fails the comparison too
        raise InvalidInput(f"{name}: expected a number in [{lo}, {hi}], got {value!r}")


def _pair(name: str, value: object) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InvalidInput(f"{name}: expected two numbers [start, stop], got {value!r}")
    for v in value:
        _float_range(name, v, 0.0, 1.0)
    return float(value[0]), float(value[1])
