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

    def __init__(
        self, default_model: str = "builtin", device: str = "cpu", memory_budget: int | None = None
    ) -> None:
        self.default_model = default_model
        self.device = device
        self.memory_budget = memory_budget  # bytes (--memory-budget); None: a GPU's total
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

    def memory_info(self) -> dict[str, Any]:
        """The budget requests are planned against (bytes or None) and where it comes from."""
        from warpcore.memory import device_budget

        budget, source = device_budget(self.device, self.memory_budget)
        return {"budget": budget, "source": source}

    def plan(self, request: RestoreRequest, frame_size: tuple[int, int], n_frames: int) -> Any:
        """``request`` with the tile that fits the memory budget (the model is loaded to
        estimate it); a ``ProtocolError("over_memory")`` when nothing fits. Intake thread."""
        from server.protocol import ProtocolError
        from warpcore.memory import OverBudget, device_budget, plan

        budget, source = device_budget(self.device, self.memory_budget)
        if budget is None:
            return request
        denoiser = self.denoiser(request.model, request.task)
        try:
            planned = plan(request, denoiser, frame_size, budget, source=source, n_frames=n_frames)
        except OverBudget as exc:
            raise ProtocolError("over_memory", str(exc)) from None
        return planned.request

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
