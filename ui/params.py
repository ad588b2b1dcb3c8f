"""The parameter form: every restoration parameter with a tooltip; presets as JSON files.

The form holds no state of its own beyond its widgets: :meth:`ParamsForm.request` is the
``request`` map a ``submit`` takes (``warpcore.request.RestoreRequest`` fields), and
:meth:`ParamsForm.set_request` shows one (a preset, or the parameters of an attached shot).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QSpinBox,
    QWidget,
)

from warpcore.request import GUIDANCE_RULES, NOISE_SCHEMES, SCALES, TASKS

TASK_DEFAULT = "task default"  # the guidance rule combo's first item: no rule is sent

TIPS = {
    "task": "inpaint: fill the matte's region (1 = remove) with what the scene shows behind it. "
    "upscale: super-resolve the clip by 'scale'.",
    "scale": "Upscale factor (upscale only): the output is this many times larger.",
    "model": "The denoiser: 'builtin' (small, fast, bundled), 'gaussian' (analytic test model), "
    "or an SDXL folder / hub id the server has. Empty: the server's default.",
    "strength": "How much of the diffusion to run: 1 = from pure noise, lower keeps more of the "
    "classical result. 0 = the model's own default (0.2 inpaint, 0.1 upscale for builtin).",
    "steps": "Sampler steps of a full run (a partial-strength run takes fewer). 0 = the model's "
    "default (10 for builtin). More steps: slower, usually cleaner.",
    "seed": "Random seed: the same seed and inputs give the same frames, bit for bit.",
    "guidance": "Equivariance self-guidance strength (lambda): pulls each frame towards the "
    "previous one warped by the flow. 0 turns guidance off (more flicker); 'rule default' "
    "takes the rule's own (band 0.8 upscale and 0.65 inpaint, blend 0.5, dps 1, newton 0.5).",
    "guidance_rule": "task default: band for both, keeping the fill's mean colour (measured, "
    "docs/guidance.md). band: removes a fraction lambda (0-1) of the gap to the previous "
    "frame's warped estimate per step, compared through the warp's own blur (the same at any "
    "resolution). dps: the paper's step lambda/sqrt(e) grad e. blend: moves each step's "
    "estimate a fraction lambda of the way to the previous frame's, where the warp reproduces "
    "it. newton: Gauss-Newton, strong on whole-pixel motion.",
    "noise": "How the noise follows the motion: gp (Warped Diffusion's GP noise, warped "
    "exactly), integral (noise transport), fixed / resample (baselines that flicker or stick), "
    "nearest / bilinear (naive warps), gp-* (GP noise without the warp).",
    "propagate": "Inpaint: copy hole pixels from up to this many frames before and after "
    "along the plate's flow before diffusing; 0 = off.",
}


class ParamsForm(QWidget):
    """Widgets for task, scale, model, strength, steps, seed, guidance, rule, noise, radius."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.task = self._combo(TASKS)
        self.scale = self._combo([str(s) for s in SCALES])
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.addItems(["", "builtin", "gaussian"])
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.0, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setSpecialValueText("model default")
        self.steps = QSpinBox()
        self.steps.setRange(0, 1000)
        self.steps.setSpecialValueText("model default")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(-0.1, 100.0)  # the minimum shows as "rule default"
        self.guidance.setSingleStep(0.1)
        self.guidance.setSpecialValueText("rule default")
        self.guidance.setValue(-0.1)
        self.guidance_rule = self._combo((TASK_DEFAULT, *GUIDANCE_RULES))
        self.noise = self._combo(NOISE_SCHEMES)
        self.propagate = QSpinBox()
        self.propagate.setRange(0, 64)
        self.propagate.setValue(8)
        self.widgets: dict[str, QWidget] = {
            "task": self.task,
            "scale": self.scale,
            "model": self.model,
            "strength": self.strength,
            "steps": self.steps,
            "seed": self.seed,
            "guidance": self.guidance,
            "guidance_rule": self.guidance_rule,
            "noise": self.noise,
            "propagate": self.propagate,
        }
        for name, widget in self.widgets.items():
            widget.setToolTip(TIPS[name])
            widget.setObjectName(name)
            form.addRow(name.replace("_", " "), widget)
        self.task.currentTextChanged.connect(self._on_task)
        self._on_task(self.task.currentText())

    @staticmethod
    def _combo(items: Any) -> QComboBox:
        box = QComboBox()
        box.addItems(list(items))
        return box

    def _on_task(self, task: str) -> None:
        self.scale.setEnabled(task == "upscale")
        self.propagate.setEnabled(task == "inpaint")

    def request(self) -> dict[str, Any]:
        """The ``request`` map of a submit: only what differs from the model's defaults."""
        req: dict[str, Any] = {
            "task": self.task.currentText(),
            "seed": self.seed.value(),
            "noise": self.noise.currentText(),
        }
        if self.guidance.value() >= 0:
            req["guidance"] = round(self.guidance.value(), 4)
        if self.guidance_rule.currentText() != TASK_DEFAULT:
            req["guidance_rule"] = self.guidance_rule.currentText()
        if req["task"] == "upscale":
            req["scale"] = int(self.scale.currentText())
        else:
            req["propagate"] = self.propagate.value()
        if self.model.currentText().strip():
            req["model"] = self.model.currentText().strip()
        if self.strength.value() > 0:
            req["strength"] = round(self.strength.value(), 4)
        if self.steps.value() > 0:
            req["steps"] = self.steps.value()
        return req

    def set_request(self, req: dict[str, Any]) -> None:
        """Show ``req``; unknown fields are ignored, missing ones keep their widget's value."""
        for name in ("task", "guidance_rule", "noise"):
            if name in req:
                self._set_combo(self.widgets[name], str(req[name]), name)
        if "scale" in req:
            self._set_combo(self.scale, str(req["scale"]), "scale")
        if "model" in req:
            self.model.setEditText(str(req["model"] or ""))
        for name in ("strength", "steps", "seed", "guidance", "propagate"):
            if name in req:
                value = req[name]
                widget = self.widgets[name]
                if value is not None and not isinstance(value, (int, float)):
                    raise ValueError(f"{name}: expected a number, got {value!r}")
                widget.setValue(0 if value is None else value)  # type: ignore[attr-defined]

    @staticmethod
    def _set_combo(box: QComboBox, value: str, name: str) -> None:
        index = box.findText(value)
        if index < 0:
            accepted = [box.itemText(i) for i in range(box.count())]
            raise ValueError(f"{name}: got {value!r}; accepted: {accepted}")
        box.setCurrentIndex(index)

    def save_preset(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.request(), indent=1, sort_keys=True) + "\n")

    def load_preset(self, path: str | Path) -> None:
        """Read a preset; a bad file raises ValueError saying what was wrong (form unchanged)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"preset {path}: not a readable JSON file ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"preset {path}: expected a JSON object of parameters")
        before = self.request()
        try:
            self.set_request(data)
        except ValueError as exc:
            self.set_request(before)
            raise ValueError(f"preset {path}: {exc}") from None
