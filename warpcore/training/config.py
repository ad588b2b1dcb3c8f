"""Training configuration: one dataclass, read from TOML or JSON and saved as JSON in the run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from warpcore.errors import InvalidInput

TASKS = ("inpaint", "upscale")

# Paper recipe (METHOD.md section 5) for SDXL; a faster one for the small built-in model.
SDXL_DEFAULTS = {"lr": 5e-6, "weight_decay": 1e-2, "ema_decay": 0.0, "warmup": 0}
BUILTIN_DEFAULTS = {"lr": 1e-3, "weight_decay": 0.0, "ema_decay": 0.999, "warmup": 200}


@dataclass
class TrainConfig:
    """Everything that decides a training trajectory (saved as ``config.json`` in the run).

    ``mean_fraction``: the share of built-in samples trained as the one-call estimate
    (``sigma = sigma_max`` and ``x = b``: a plain regression of ``x0`` on the condition), the
    rest at ``ln sigma ~ N(p_mean, p_std^2)``. ``videos``: add the frames of Debian opencv-doc's
    training videos (:data:`warpcore.training.data.TRAIN_VIDEOS`) to the stills.

    ``part``: which network of the built-in model trains: ``"unet"`` (the denoiser) or
    ``"estimator"`` (the upscale one-call estimate, :class:`warpcore.models.blocknet.BlockNet`
    of ``estimator_width`` channels and ``estimator_blocks`` residual blocks, an L1 regression
    of the clean crop on its bicubic upsample; the UNet of ``init`` is kept as it is).

    ``model``: ``"builtin"`` (train the small pixel-space UNet from scratch, or from ``init``)
    or a diffusers SDXL folder (fine-tune its UNet in latent space, one task). ``lr``,
    ``weight_decay``, ``ema_decay`` and ``warmup`` left at None take the model's defaults.
    """

    run_dir: str = "runs/builtin"
    model: str = "builtin"
    tasks: tuple[str, ...] = TASKS
    noise: str = "gp"
    steps: int = 6000
    batch: int = 12
    crop: int = 64
    lr: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float | None = None
    grad_clip: float = 1.0
    schedule: str = "cosine"
    warmup: int | None = None
    ema_decay: float | None = None
    p_mean: float = -0.8
    p_std: float = 1.6
    mean_fraction: float = 0.4
    scales: tuple[int, ...] = (2, 4, 8)
    scale_weights: tuple[float, ...] = (0.1, 0.8, 0.1)
    block_out_channels: tuple[int, ...] = (16, 32, 64, 128)
    layers_per_block: int = 1
    part: str = "unet"
    estimator_width: int = 64
    estimator_blocks: int = 8
    init: str | None = None
    bank_size: int = 64
    max_side: int = 512
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    validate_every: int = 500
    val_crops: int = 16
    val_steps: int = 12
    seed: int = 0
    threads: int = 1
    prompt: str = ""
    extra_data: tuple[str, ...] = field(default_factory=tuple)
    videos: bool = True

    def __post_init__(self) -> None:
        defaults = BUILTIN_DEFAULTS if self.model == "builtin" else SDXL_DEFAULTS
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.tasks = tuple(self.tasks)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        for name in ("scales", "scale_weights", "block_out_channels", "extra_data"):
            setattr(self, name, tuple(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        if not self.tasks or any(t not in TASKS for t in self.tasks):
            raise InvalidInput(
                f"tasks: got {self.tasks!r}; accepted: a non-empty subset of {TASKS}"
            )
        if self.model != "builtin" and len(self.tasks) != 1:
            raise InvalidInput("tasks: an SDXL fine-tune trains one task: inpaint or upscale")
        if self.part not in ("unet", "estimator"):
            raise InvalidInput(f"part: got {self.part!r}; accepted: unet, estimator")
        if self.part == "estimator" and (
            self.model != "builtin" or self.tasks != ("upscale",) or not self.init
        ):
            raise InvalidInput(
                "part 'estimator': trains the built-in model's upscale estimator beside a trained "
                "UNet: needs model 'builtin', tasks ['upscale'] and init (the UNet's weights)"
            )
        if self.noise not in ("gp", "white"):
            raise InvalidInput(f"noise: got {self.noise!r}; accepted: gp, white")
        if self.schedule not in ("cosine", "constant"):
            raise InvalidInput(f"schedule: got {self.schedule!r}; accepted: cosine, constant")
        for name, lo in (
            ("steps", 1),
            ("batch", 1),
            ("checkpoint_every", 1),
            ("bank_size", 1),
            ("validate_every", 0),
            ("val_crops", 1),
            ("val_steps", 1),
            ("threads", 1),
            ("keep_checkpoints", 1),
            ("seed", 0),
            ("estimator_width", 1),
            ("estimator_blocks", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise InvalidInput(f"{name}: expected an integer >= {lo}, got {value!r}")
        multiple = 8 * max(self.scales) if self.model != "builtin" else max(self.scales)
        if self.crop < 16 or self.crop % multiple:
            raise InvalidInput(f"crop: expected a multiple of {multiple} >= 16, got {self.crop}")
        if any(s not in (2, 4, 8) for s in self.scales) or len(self.scales) != len(
            self.scale_weights
        ):
            raise InvalidInput("scales: expected values in (2, 4, 8), one weight per scale")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise InvalidInput(f"ema_decay: expected a number in [0, 1), got {self.ema_decay}")
        if not 0.0 <= float(self.mean_fraction) <= 1.0:
            raise InvalidInput(
                f"mean_fraction: expected a number in [0, 1], got {self.mean_fraction!r}"
            )
        if not float(self.lr) > 0.0:
            raise InvalidInput(f"lr: expected a positive number, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"train config: unknown keys {unknown}; accepted: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """A config from ``.toml`` or ``.json`` (keys = the dataclass fields)."""
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"config: {path} is not a file; expected a .toml or .json file")
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            raise InvalidInput(f"config: {path} has suffix {path.suffix!r}; accepted: .toml, .json")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
