"""Plain state the panel renders: the opened clip, and each run with its frames and metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from warpcore.errors import InvalidInput
from warpcore.request import RestoreRequest


@dataclass
class Clip:
    """An opened clip (read by the server): its size, rate, the range and crop to run on."""

    path: str
    n_frames: int
    height: int
    width: int
    fps: float
    has_alpha: bool
    matte: str | None = None  # a path, "alpha", or None (upscale)
    start: int = 0
    stop: int = 0  # exclusive; 0 = to the end
    crop: tuple[int, int, int, int] | None = None  # x, y, w, h of the preview region
    inputs: dict[int, np.ndarray] = field(default_factory=dict)  # uint8 display, cropped

    def frame_range(self) -> tuple[int, int]:
        stop = self.n_frames if self.stop <= 0 else min(self.stop, self.n_frames)
        return min(self.start, stop), stop

    def crop_box(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) inside the frame; the whole frame without a crop."""
        if self.crop is None or self.crop[2] <= 0 or self.crop[3] <= 0:
            return 0, 0, self.width, self.height
        x, y, w, h = self.crop
        x, y = min(max(0, x), self.width - 1), min(max(0, y), self.height - 1)
        return x, y, min(w, self.width - x), min(h, self.height - y)


@dataclass
class Run:
    """One submit: its parameters, the frames as they arrived, and the server's analysis."""

    number: int
    request: dict[str, Any]
    key: str = ""
    n_frames: int = 0
    state: str = "submitting"  # submitting, queued, running, finished, cancelled, error
    message: str = ""
    frames: dict[int, np.ndarray] = field(default_factory=dict)  # uint8 (H, W, 3)
    computed: bool = False  # a started/progress event came: not (only) served from the cache
    errors: list[float | None] = field(default_factory=list)  # warp_pixel_prev per frame
    e_warp: list[float | None] = field(default_factory=list)
    matte_errors: list[float | None] = field(default_factory=list)  # the same, inside the matte
    heat: dict[int, np.ndarray] = field(default_factory=dict)  # float32 (H, W) per frame
    heat_p99: float = 0.0
    analyzed: int = 0  # frames 0 .. analyzed-1 have their errors
    analyzing: bool = False
    analyze_again: bool = False
    started: float = field(default_factory=time.monotonic)
    elapsed_s: float | None = None

    @property
    def label(self) -> str:
        r = self.request
        bits = [r.get("noise", "gp"), f"guidance {_guidance(r)}"]
        if "strength" in r:
            bits.append(f"strength {r['strength']:g}")
        return f"run {self.number}: {', '.join(bits)}"

    @property
    def cached(self) -> bool:
        """Finished without computing a frame: every frame came from the server's cache."""
        return self.state == "finished" and not self.computed

    def mean_error(self) -> float | None:
        values = [v for v in self.errors if v is not None]
        return float(np.mean(values)) if values else None


def _guidance(request: dict[str, Any]) -> str:
    """The lambda and rule the run got: the request's, or the task's defaults it resolved to."""
    try:
        made = RestoreRequest.from_dict(request)
    except InvalidInput:
        return str(request.get("guidance", "?"))
    return f"{made.guidance:g} {made.guidance_rule}"
