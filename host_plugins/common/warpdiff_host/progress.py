"""What a host shows while a shot runs: frame k of n, the step, the time left."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """``done`` frames of ``n_frames`` are finished; ``step`` of the frame being made."""

    done: int
    n_frames: int
    step: int = -1
    n_steps: int = 0
    eta_s: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float:
        """0..1 over the shot, counting the steps of the frame being made."""
        if self.n_frames <= 0:
            return 0.0
        partial = (self.step + 1) / self.n_steps if self.n_steps > 0 and self.step >= 0 else 0.0
        return min(1.0, (self.done + min(partial, 0.999)) / self.n_frames)

    @property
    def percent(self) -> int:
        return int(round(100 * self.fraction))

    def text(self) -> str:
        """``frame 3 of 10, step 2/4, ETA 12 s`` (what the progress bar's message says)."""
        parts = [f"frame {min(self.done + 1, self.n_frames)} of {self.n_frames}"]
        if self.n_steps > 0 and self.step >= 0:
            parts.append(f"step {self.step + 1}/{self.n_steps}")
        if self.eta_s is not None:
            parts.append(f"ETA {_duration(self.eta_s)}")
        if self.message:
            parts.append(self.message)
        return ", ".join(parts)


def _duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
