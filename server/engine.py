"""The server's view of the engine: models loaded once, a ClipRestorer per shot.

The engine modules are imported on first use, so the socket loop starts (and answers ``hello``)
before torch and the models are in memory.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from warpcore.request import RestoreRequest


class Engine:
    """Loads each (model, task) once on ``device`` and keeps it; makes restorers."""

    def __init__(self, default_model: str = "builtin", device: str = "cpu") -> None:
        self.default_model = default_model
        self.device = device
        self._models: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.load_seconds: dict[str, float] = {}

    def is_loaded(self, model: str, task: str) -> bool:
        with self._lock:
            return (model, task) in self._models

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted({f"{model}:{task}" for model, task in self._models})

    def denoiser(self, model: str, task: str) -> Any:
        """The denoiser for (model, task), loaded on first use."""
        with self._lock:
            found = self._models.get((model, task))
        if found is not None:
            return found
        from warpcore.models import load_denoiser

        t0 = time.perf_counter()
        loaded = load_denoiser(model, task, device=self.device)
        with self._lock:
            self._models[(model, task)] = loaded
            self.load_seconds[f"{model}:{task}"] = time.perf_counter() - t0
        return loaded

    def restorer(
        self,
        request: RestoreRequest,
        frame_size: tuple[int, int],
        n_frames: int,
        flow_fn: Any = None,
    ) -> Any:
        """A fresh ClipRestorer for a shot (validates the request against the model);
        ``flow_fn``: plate flows already estimated (by propagation), else the restorer's own."""
        from warpcore.restore import ClipRestorer

        denoiser = self.denoiser(request.model, request.task)
        return ClipRestorer(request, denoiser, frame_size, n_frames, flow_fn)

    def device_info(self) -> dict[str, Any]:
        """Device name and free memory (bytes; None where unknown)."""
        info: dict[str, Any] = {"device": self.device, "free_memory": None}
        if self.device.startswith("cuda"):
            import torch

            if torch.cuda.is_available():
                free, total = torch.cuda.mem_get_info(torch.device(self.device))
                info.update(free_memory=int(free), total_memory=int(total))
                info["name"] = torch.cuda.get_device_name(torch.device(self.device))
            return info
        try:
            with open("/proc/meminfo") as f:
                fields = dict(line.split(":", 1) for line in f)
            info["free_memory"] = int(fields["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            pass
        return info
