"""The panel's widgets and how they are laid out (the :class:`ui.panel.Panel` mixin).

Only construction and wiring: every slot it connects is a method of the panel.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ui.params import ParamsForm
from ui.plot import ErrorPlot
from ui.viewer import FrameViewer


class PanelLayout:
    """Builds the panel's widgets as attributes of ``self`` (a QWidget)."""

    def _build(self) -> None:
        controls = QWidget()
        col = QVBoxLayout(controls)
        col.addWidget(self._server_box())
        col.addWidget(self._inputs_box())
        params = QGroupBox("Parameters")
        pl = QVBoxLayout(params)
        self.params = ParamsForm()
        pl.addWidget(self.params)
        row = QHBoxLayout()
        self.save_preset_button = self._button("Save preset…", self._save_preset, row)
        self.load_preset_button = self._button("Load preset…", self._load_preset, row)
        pl.addLayout(row)
        col.addWidget(params)
        col.addWidget(self._run_box())
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(controls)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(330)

        self.viewer = FrameViewer()
        self.plot = ErrorPlot()
        right = QSplitter(Qt.Vertical)
        view = QWidget()
        vl = QVBoxLayout(view)
        vl.setContentsMargins(0, 0, 0, 0)
        vl.addWidget(self._compare_bar())
        vl.addWidget(self.viewer, 1)
        vl.addLayout(self._timeline())
        right.addWidget(view)
        right.addWidget(self.plot)
        right.setStretchFactor(0, 4)
        right.setStretchFactor(1, 1)
        split = QSplitter(Qt.Horizontal)
        split.addWidget(scroll)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        outer = QVBoxLayout(self)
        outer.addWidget(split, 1)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        outer.addWidget(self.message)

    @staticmethod
    def _button(text: str, slot: Any, layout: Any) -> QPushButton:
        b = QPushButton(text)
        b.clicked.connect(slot)
        layout.addWidget(b)
        return b

    def _server_box(self) -> QGroupBox:
        box = QGroupBox("Server")
        lay = QVBoxLayout(box)
        self.state_label = QLabel("checking…")
        self.state_label.setWordWrap(True)
        lay.addWidget(self.state_label)
        row = QHBoxLayout()
        self.start_button = self._button("Start server", self.connection.start_server, row)
        self.log_button = self._button("Server log", self._toggle_log, row)
        lay.addLayout(row)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setVisible(False)
        lay.addWidget(self.log_view)
        return box

    def _inputs_box(self) -> QGroupBox:
        box = QGroupBox("Inputs")
        form = QFormLayout(box)
        self.clip_edit, self.matte_edit = QLineEdit(), QLineEdit()
        self.clip_edit.setPlaceholderText("video or frame folder (on the server machine)")
        self.matte_edit.setPlaceholderText("matte video/folder, or 'alpha'")
        for edit, name in ((self.clip_edit, "clip"), (self.matte_edit, "matte")):
            row = QHBoxLayout()
            row.addWidget(edit, 1)
            self._button("…", lambda _=False, e=edit: self._browse(e), row)
            form.addRow(name, row)
        open_row = QHBoxLayout()
        self.open_button = self._button("Open", self._open_clicked, open_row)
        form.addRow(open_row)
        self.key_edit = QLineEdit()
        self.key_edit.setPlaceholderText("shot key from Nuke / OFX")
        attach_row = QHBoxLayout()
        attach_row.addWidget(self.key_edit, 1)
        self.attach_button = self._button("Attach", self._attach_clicked, attach_row)
        form.addRow("shot", attach_row)
        self.range_start, self.range_stop = QSpinBox(), QSpinBox()
        self.range_stop.setSpecialValueText("end")
        for s in (self.range_start, self.range_stop):
            s.setRange(0, 10**6)
        rr = QHBoxLayout()
        rr.addWidget(self.range_start)
        rr.addWidget(QLabel("to"))
        rr.addWidget(self.range_stop)
        form.addRow("frames", rr)
        self.crop = [QSpinBox() for _ in range(4)]
        cr = QHBoxLayout()
        for s, tip in zip(self.crop, ("x", "y", "width (0 = whole frame)", "height"), strict=True):
            s.setRange(0, 16384)
            s.setToolTip(f"preview region: {tip}")
            cr.addWidget(s)
        form.addRow("region", cr)
        return box

    def _run_box(self) -> QGroupBox:
        box = QGroupBox("Run")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        self.run_button = self._button("Run", self.run, row)
        self.cancel_button = self._button("Cancel", self.cancel, row)
        self.cancel_button.setEnabled(False)
        lay.addLayout(row)
        self.frame_bar, self.step_bar = QProgressBar(), QProgressBar()
        self.frame_bar.setFormat("frame %v / %m")
        self.step_bar.setFormat("step %v / %m")
        lay.addWidget(self.frame_bar)
        lay.addWidget(self.step_bar)
        self.eta_label = QLabel("")
        lay.addWidget(self.eta_label)
        ex = QHBoxLayout()
        self._button("Export result…", self._export_result_clicked, ex)
        self._button("Plot PNG…", self._export_plot_clicked, ex)
        self._button("Params JSON…", self._export_params_clicked, ex)
        lay.addLayout(ex)
        return box

    def _compare_bar(self) -> QWidget:
        bar = QWidget()
        row = QHBoxLayout(bar)
        row.setContentsMargins(0, 0, 0, 0)
        self.mode = QComboBox()
        self.mode.addItems(["input | B", "A | B"])
        self.mode.setToolTip("Left of the divider: the input (before) or run A; right: run B")
        self.run_a, self.run_b = QComboBox(), QComboBox()
        for box in (self.run_a, self.run_b):
            box.setSizeAdjustPolicy(QComboBox.AdjustToContents)
            box.setMinimumContentsLength(16)
        self.plot_region = QComboBox()
        self.plot_region.addItems(["whole frame", "inside the matte"])
        self.plot_region.setToolTip(
            "The plot's warping error: over the whole frame, or only where the matte says the "
            "frame was generated (inpainting)"
        )
        self.plot_region.currentIndexChanged.connect(self.refresh)
        self.heat_check = QCheckBox("flicker heat map")
        self.heat_check.setToolTip(
            "Per-pixel |frame - previous frame warped by the flow|^2 (the server's metrics); "
            "one colour scale for every run"
        )
        for w in (QLabel("view"), self.mode, QLabel("A"), self.run_a, QLabel("B"), self.run_b):
            row.addWidget(w)
        row.addWidget(self.heat_check)
        row.addWidget(QLabel("plot"))
        row.addWidget(self.plot_region)
        row.addStretch(1)
        self.mode.currentIndexChanged.connect(self.refresh)
        self.run_a.currentIndexChanged.connect(self.refresh)
        self.run_b.currentIndexChanged.connect(self.refresh)
        self.heat_check.toggled.connect(self.set_heat_visible)
        return bar

    def _timeline(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.play_button = self._button("Play", self.toggle_play, row)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.valueChanged.connect(self.show_frame)
        row.addWidget(self.slider, 1)
        self.frame_label = QLabel("0")
        row.addWidget(self.frame_label)
        return row
