"""The preview panel: inputs, parameters, Run/Cancel, progress, viewer, plot, export.

State lives in plain objects (:class:`ui.runs.Clip`, :class:`ui.runs.Run`); the widgets only
render it. Every server call goes through :func:`ui.workers.run_call` or an
:class:`ui.workers.EventPump`, so the GUI thread never waits on the server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QThreadPool, QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QLineEdit,
    QWidget,
)

from server.client import DEFAULT_ADDRESS
from ui.connection import Connection
from ui.jobs import analyze_shot, prepare_and_submit, probe_clip
from ui.layout import PanelLayout
from ui.runs import Clip, Run
from ui.viewer import heat_rgba
from ui.workers import EventPump, run_call, to_display


# -- the panel -------------------------------------------------------------------------------
class Panel(PanelLayout, QWidget):
    """The whole panel; ``connection`` may be shared (a host keeps one per session)."""

    message_changed = Signal(str, bool)  # text, is_error
    clip_opened = Signal()
    frame_arrived = Signal(int, int)  # run number, frame
    run_finished = Signal(object)  # Run
    analysis_ready = Signal(object)  # Run
    exported = Signal(str)

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        connection: Connection | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Warped Diffusion preview")
        self.connection = connection or Connection(address, self)
        self.clip: Clip | None = None
        self.runs: list[Run] = []
        self.pumps: dict[int, EventPump] = {}
        self.current = 0
        self.closed = False
        self.last_message, self.last_error = "", ""
        self._build()
        self.connection.state_changed.connect(self._on_state)
        self.connection.log_line.connect(self.log_view.appendPlainText)
        self._play = QTimer(self)
        self._play.timeout.connect(self._next_frame)
        self.connection.start()

    # -- messages and state -----------------------------------------------------------------
    def _call(self, fn: Any, on_done: Any = None, on_failed: Any = None) -> None:
        """:func:`run_call` whose results are dropped once the panel has shut down."""
        run_call(fn, on_done, on_failed, alive=lambda: not self.closed)

    def say(self, text: str, error: bool = False) -> None:
        self.last_message = text
        if error:
            self.last_error = text
        self.message.setStyleSheet("color: #e05050;" if error else "")
        self.message.setText(text)
        self.message_changed.emit(text, error)

    def _on_state(self, state: str, text: str) -> None:
        self.state_label.setText(text)
        self.start_button.setEnabled(state == "unreachable")

    def _ready(self, what: str) -> bool:
        if self.connection.state in ("ready", "busy"):
            return True
        reason = self.connection.info.get("reason", "")
        self.say(f"cannot {what}: server {self.connection.state} ({reason})", error=True)
        return False

    def _toggle_log(self) -> None:
        self.log_view.setVisible(not self.log_view.isVisible())

    def _browse(self, edit: QLineEdit) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open", edit.text())
        if path:
            edit.setText(path)

    # -- inputs -----------------------------------------------------------------------------
    def _open_clicked(self) -> None:
        self.open_clip(self.clip_edit.text().strip(), self.matte_edit.text().strip() or None)

    def open_clip(self, path: str, matte: str | None = None) -> None:
        """Ask the server for the clip's size (and check the matte against it)."""
        self.clip_edit.setText(path)
        self.matte_edit.setText(matte or "")
        if not path:
            self.say("clip: give a video file or a frame folder", error=True)
            return
        if not self._ready("open the clip"):
            return
        client = self.connection.client
        self.say(f"opening {path}…")
        self._call(lambda: probe_clip(client, path, matte), self._on_opened, self._on_open_failed)

    def _on_opened(self, info: dict[str, Any]) -> None:
        self.clip = Clip(
            info["path"],
            info["n_frames"],
            info["height"],
            info["width"],
            info["fps"],
            info["has_alpha"],
            self.matte_edit.text().strip() or None,
        )
        if info.get("first") is not None:
            self.clip.inputs[0] = to_display(info["first"])
        self.range_stop.setMaximum(self.clip.n_frames)
        self.range_start.setMaximum(max(0, self.clip.n_frames - 1))
        self.say(
            f"opened {Path(self.clip.path).name}: {self.clip.n_frames} frames, "
            f"{self.clip.width}x{self.clip.height}, {self.clip.fps:g} fps"
        )
        self.refresh()
        self.clip_opened.emit()

    def _on_open_failed(self, message: str) -> None:
        self.clip = None
        self.say(f"cannot open: {message}", error=True)

    def _attach_clicked(self) -> None:
        self.attach(self.key_edit.text().strip())

    def attach(self, key: str) -> None:
        """Follow a shot a host submitted (its frames stream in; a partial one resumes)."""
        if not key or not self._ready("attach"):
            return
        client = self.connection.client
        run = Run(len(self.runs) + 1, {}, key=key)
        self._call(
            lambda: client.subscribe(key),
            lambda summary: self._on_submitted(run, {"key": key, **summary}),
            lambda m: self.say(f"cannot attach {key}: {m}", error=True),
        )

    # -- running ----------------------------------------------------------------------------
    def _sync_clip(self) -> None:
        if self.clip is None:
            return
        self.clip.start, self.clip.stop = self.range_start.value(), self.range_stop.value()
        x, y, w, h = (s.value() for s in self.crop)
        self.clip.crop = (x, y, w, h) if w > 0 and h > 0 else None

    def run(self) -> None:
        """Submit the opened clip with the form's parameters (the cache serves a repeat)."""
        if self.clip is None:
            self.say("Run: open a clip first (or attach a shot)", error=True)
            return
        if not self._ready("run"):
            return
        self._sync_clip()
        run = Run(len(self.runs) + 1, self.params.request())
        client, clip = self.connection.client, self.clip
        self.say(f"{run.label}: reading and sending the frames…")
        self._call(
            lambda: prepare_and_submit(client, clip, run.request),
            lambda result: self._on_submitted(run, result),
            lambda m: self.say(f"{run.label} refused: {m}", error=True),
        )

    def _on_submitted(self, run: Run, result: dict[str, Any]) -> None:
        run.key, run.n_frames = result["key"], int(result.get("n_frames") or 0)
        if result.get("task") and not run.request:
            run.request = {"task": result["task"]}
        if "inputs" in result and self.clip is not None:
            self.clip.inputs = dict(enumerate(result["inputs"]))
        self.runs.append(run)
        self._update_run_lists(select_b=run)
        self.frame_bar.setRange(0, max(1, run.n_frames))
        self.frame_bar.setValue(0)
        self.cancel_button.setEnabled(True)
        self.say(f"{run.label}: submitted as {run.key}")
        pump = EventPump(self.connection.client, run.key)
        pump.event.connect(lambda ev, img, r=run: self._on_event(r, ev, img))
        pump.failed.connect(lambda m, r=run: self._on_stream_failed(r, m))
        self.pumps[run.number] = pump
        pump.start()

    def _on_event(self, run: Run, ev: Any, image: np.ndarray | None) -> None:
        if self.closed:
            return
        run.n_frames = ev.n_frames or run.n_frames
        if ev.kind == "queued":
            run.state = "queued"
            self.say(f"{run.label}: queued (position {ev.body.get('position')})")
        elif ev.kind in ("started", "progress"):
            if ev.kind == "started":
                self.say(f"{run.label}: running from frame {ev.body.get('resume_from', 0)}")
            run.state, run.computed = "running", True
            if ev.kind == "progress" and ev.n_steps:
                self.step_bar.setRange(0, ev.n_steps)
                self.step_bar.setValue(ev.step + 1)
                eta = f", {ev.eta_s:.0f} s left" if ev.eta_s is not None else ""
                self.eta_label.setText(f"frame {ev.frame + 1} of {run.n_frames}{eta}")
        elif ev.kind == "frame":
            if image is not None:
                run.frames[ev.frame] = image
            self.frame_bar.setRange(0, max(1, run.n_frames))
            self.frame_bar.setValue(ev.frame + 1)
            if self._shown_b() is run and not self._play.isActive():
                self.slider.setMaximum(max(0, run.n_frames - 1))
                self.slider.setValue(ev.frame)
            self.frame_arrived.emit(run.number, ev.frame)
            self._analyze(run)  # the plot grows as frames arrive
        else:
            self._on_done(run, ev.kind, ev.message)

    def _on_done(self, run: Run, kind: str, message: str) -> None:
        import time

        run.state, run.message = kind, message
        run.elapsed_s = time.monotonic() - run.started
        self.pumps.pop(run.number, None)
        self.cancel_button.setEnabled(bool(self.pumps))
        how = " (from the cache)" if run.cached else ""
        self.say(
            f"{run.label}: {kind}{how}, {len(run.frames)} frames"
            + (f": {message}" if message else ""),
            error=kind == "error",
        )
        self.eta_label.setText("")
        self.run_finished.emit(run)
        self._analyze(run)

    def _analyze(self, run: Run) -> None:
        """Ask the server for the errors of the frames made since the last ask (one at a time)."""
        if run.analyzing:
            run.analyze_again = True
            return
        if run.analyzed >= len(run.frames):
            if run.state in ("finished", "cancelled", "error") and run.frames:
                self.analysis_ready.emit(run)
            return
        run.analyzing, run.analyze_again = True, False
        client, start = self.connection.client, run.analyzed
        self._call(
            lambda: analyze_shot(client, run.key, start),
            lambda a, r=run: self._on_analysis(r, a),
            lambda m, r=run: self._on_analysis_failed(r, m),
        )

    def _on_stream_failed(self, run: Run, message: str) -> None:
        if self.closed:
            return
        self.pumps.pop(run.number, None)
        run.state, run.message = "error", message
        self.say(f"{run.label}: lost its events: {message}", error=True)

    def _on_analysis(self, run: Run, result: dict[str, Any]) -> None:
        run.analyzing = False
        n = max(run.n_frames, len(run.errors))
        run.errors += [None] * (n - len(run.errors))
        run.e_warp += [None] * (n - len(run.e_warp))
        run.matte_errors += [None] * (n - len(run.matte_errors))
        for frame, (error, e_warp, in_matte, heat) in result["rows"].items():
            run.errors[frame], run.e_warp[frame] = error, e_warp
            run.matte_errors[frame] = in_matte
            if heat is not None:
                run.heat[frame] = heat
            run.analyzed = max(run.analyzed, frame + 1)
        run.heat_p99 = max(run.heat_p99, result["p99"])
        self.refresh()
        if run.analyze_again or run.state in ("finished", "cancelled", "error"):
            self._analyze(run)

    def _on_analysis_failed(self, run: Run, message: str) -> None:
        run.analyzing = False
        self.say(f"{run.label}: analysis failed: {message}", error=True)

    def cancel(self) -> None:
        """Cancel every running shot of this panel (finished frames stay in the cache)."""
        client = self.connection.client
        for number in list(self.pumps):
            run = self.runs[number - 1]
            self._call(
                lambda k=run.key: client.cancel(k),
                None,
                lambda m: self.say(f"cancel failed: {m}", error=True),
            )

    # -- viewing ----------------------------------------------------------------------------
    def _update_run_lists(self, select_b: Run | None = None) -> None:
        for box in (self.run_a, self.run_b):
            box.blockSignals(True)
            keep = box.currentIndex()
            box.clear()
            box.addItems([r.label for r in self.runs])
            box.setCurrentIndex(keep)
            box.blockSignals(False)
        if select_b is not None:
            self.run_b.setCurrentIndex(select_b.number - 1)
            self.run_a.setCurrentIndex(max(0, select_b.number - 2))
        self.refresh()

    def _shown_b(self) -> Run | None:
        i = self.run_b.currentIndex()
        return self.runs[i] if 0 <= i < len(self.runs) else None

    def _shown_a(self) -> Run | None:
        i = self.run_a.currentIndex()
        return self.runs[i] if 0 <= i < len(self.runs) else None

    def compare(self, a: int, b: int) -> None:
        """Show run ``a`` left and run ``b`` right of the divider (run numbers from 1)."""
        self.run_a.setCurrentIndex(a - 1)
        self.run_b.setCurrentIndex(b - 1)
        self.mode.setCurrentIndex(1)

    def set_heat_visible(self, on: bool) -> None:
        self.heat_check.setChecked(on)
        self.viewer.set_heat_visible(on)
        self.refresh()

    def refresh(self) -> None:
        """Re-render the viewer, the timeline and the plot from the state."""
        b, a = self._shown_b(), self._shown_a()
        n = max([b.n_frames if b else 0, self.clip.n_frames if self.clip and not b else 0, 1])
        self.slider.blockSignals(True)
        self.slider.setMaximum(n - 1)
        self.slider.blockSignals(False)
        matte = self.plot_region.currentIndex() == 1
        series = {}
        for run in (a, b) if self.mode.currentIndex() == 1 else (b,):
            values = run.matte_errors if matte and run else run.errors if run else []
            if values:
                series[run.label] = values
        self.plot.set_series(series)
        self.plot.title = (
            "warping error per frame inside the matte" if matte else "warping error per frame"
        ) + " (MSE against the previous frame warped by the flow)"
        self.show_frame(self.slider.value())

    def _heat(self, run: Run | None, t: int) -> np.ndarray | None:
        if run is None or t not in run.heat or not self.heat_check.isChecked():
            return None
        shown = [r.heat_p99 for r in (self._shown_a(), self._shown_b()) if r is not None]
        return heat_rgba(run.heat[t], max(shown + [1e-6]))

    def show_frame(self, t: int) -> None:
        self.current = int(t)
        self.frame_label.setText(str(self.current))
        b = self._shown_b()
        after = b.frames.get(self.current) if b else None
        if self.mode.currentIndex() == 1:
            a = self._shown_a()
            before = a.frames.get(self.current) if a else None
            self.viewer.set_labels(a.label if a else "A", b.label if b else "B")
        else:
            before = self.clip.inputs.get(self.current) if self.clip else None
            self.viewer.set_labels("input", b.label if b else "result")
        heat_a = self._heat(self._shown_a(), self.current) if self.mode.currentIndex() else None
        self.viewer.set_images(before, after, self._heat(b, self.current), heat_a)
        self.plot.set_current(self.current)

    def toggle_play(self) -> None:
        if self._play.isActive():
            self._play.stop()
            self.play_button.setText("Play")
            return
        fps = self.clip.fps if self.clip else 24.0
        self._play.start(max(1, round(1000.0 / fps)))
        self.play_button.setText("Pause")

    def _next_frame(self) -> None:
        self.slider.setValue((self.slider.value() + 1) % (self.slider.maximum() + 1))

    # -- presets and export -----------------------------------------------------------------
    def _save_preset(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save preset", "", "JSON (*.json)")
        if path:
            self.params.save_preset(path)

    def _load_preset(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load preset", "", "JSON (*.json)")
        if path:
            try:
                self.params.load_preset(path)
            except ValueError as exc:
                self.say(str(exc), error=True)

    def _export_result_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export result (.mp4/.mov/.mkv or folder)")
        if path:
            self.export_result(path)

    def _export_plot_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save plot", "", "PNG (*.png)")
        if path:
            self.export_plot(path)

    def _export_params_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save parameters", "", "JSON (*.json)")
        if path:
            self.export_params(path)

    def export_result(self, path: str) -> None:
        """Run B's finished frames to a video or frame folder (the server writes them)."""
        run = self._shown_b()
        if run is None or not run.key:
            self.say("export: run something first", error=True)
            return
        client, fps = self.connection.client, self.clip.fps if self.clip else 24.0
        body = {"key": run.key, "path": path, "fps": fps}
        self._call(
            lambda: client.request("export", body, timeout=600).body,
            lambda r: self._on_exported(r, path),
            lambda m: self.say(f"export failed: {m}", error=True),
        )

    def _on_exported(self, reply: dict[str, Any], path: str) -> None:
        self.say(f"exported {reply['frames']} frames to {reply['path']}")
        self.exported.emit(path)

    def export_plot(self, path: str) -> None:
        if self.plot.save_png(path):
            self.say(f"plot saved to {path}")
            self.exported.emit(path)
        else:
            self.say(f"cannot write the plot to {path}", error=True)

    def export_params(self, path: str) -> None:
        run = self._shown_b()
        data = {
            "request": run.request if run else self.params.request(),
            "key": run.key if run else None,
            "clip": self.clip.path if self.clip else None,
            "range": list(self.clip.frame_range()) if self.clip else None,
            "crop": list(self.clip.crop_box()) if self.clip else None,
            "mean_warp_error": run.mean_error() if run else None,
        }
        try:
            Path(path).write_text(json.dumps(data, indent=1) + "\n")
        except OSError as exc:
            self.say(f"cannot write {path}: {exc}", error=True)
            return
        self.say(f"parameters saved to {path}")
        self.exported.emit(path)

    def closeEvent(self, event: Any) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop event readers and the connection (a server this panel started stops too)."""
        if self.closed:
            return
        self.closed = True
        self._play.stop()
        for pump in self.pumps.values():
            pump.stop()
        self.connection.close()  # wakes the readers: their queues get None
        for pump in list(self.pumps.values()):
            pump.wait(5000)
        self.pumps.clear()
        # Calls still on the pool hold QObjects of this panel: let them end before it goes
        # (a pool thread deleting them at interpreter exit crashed the process).
        QThreadPool.globalInstance().waitForDone(10000)
