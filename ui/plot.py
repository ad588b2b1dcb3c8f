"""The per-frame warping-error plot (QPainter only): one line per run, the current frame marked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QWidget

COLORS = (QColor(80, 170, 255), QColor(255, 140, 60), QColor(120, 220, 120), QColor(230, 90, 200))
MARGIN = (56, 12, 12, 26)  # left, top, right, bottom


class ErrorPlot(QWidget):
    """``set_series({name: [value or None per frame]})``; ``set_current(frame)``."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(130)
        self.series: dict[str, list[float | None]] = {}
        self.current = 0
        self.title = "warping error per frame (MSE vs previous frame warped by the flow)"

    def set_series(self, series: dict[str, Sequence[float | None]]) -> None:
        self.series = {k: list(v) for k, v in series.items()}
        self.update()

    def set_current(self, frame: int) -> None:
        self.current = int(frame)
        self.update()

    def save_png(self, path: str | Path) -> bool:
        return self.grab().save(str(path), "PNG")

    def _ranges(self) -> tuple[int, float]:
        n = max((len(v) for v in self.series.values()), default=0)
        values = [x for v in self.series.values() for x in v if x is not None and math.isfinite(x)]
        top = max(values, default=0.0)
        return max(n, 2), (top * 1.1 if top > 0 else 1e-3)

    def plot_rect(self) -> QRectF:
        left, top, right, bottom = MARGIN
        w, h = self.width() - left - right, self.height() - top - bottom - 14
        return QRectF(left, top + 14, w, h)

    def x_of(self, frame: float) -> float:
        n, _ = self._ranges()
        r = self.plot_rect()
        return r.left() + r.width() * frame / (n - 1)

    def paintEvent(self, _event: object) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        p.fillRect(self.rect(), QColor(24, 24, 26))
        r = self.plot_rect()
        n, top = self._ranges()
        p.setPen(QColor(200, 200, 200))
        p.drawText(QPointF(MARGIN[0], MARGIN[1] + 8), self.title)
        p.setPen(QColor(90, 90, 90))
        p.drawRect(r)
        for i in range(5):  # y ticks
            y = r.bottom() - r.height() * i / 4
            p.drawLine(QPointF(r.left() - 3, y), QPointF(r.left(), y))
            p.drawText(QRectF(0, y - 8, MARGIN[0] - 6, 16), Qt.AlignRight, f"{top * i / 4:.2g}")
        step = max(1, n // 10)
        for f in range(0, n, step):  # x ticks: frame numbers
            x = self.x_of(f)
            p.drawText(QRectF(x - 20, r.bottom() + 2, 40, 16), Qt.AlignHCenter, str(f))
        for i, (name, values) in enumerate(self.series.items()):
            color = COLORS[i % len(COLORS)]
            path, started = QPainterPath(), False
            for f, v in enumerate(values):
                if v is None or not math.isfinite(v):
                    started = False
                    continue
                pt = QPointF(self.x_of(f), r.bottom() - r.height() * min(v / top, 1.0))
                path.lineTo(pt) if started else path.moveTo(pt)
                started = True
                p.setPen(Qt.NoPen)
                p.setBrush(color)
                p.drawEllipse(pt, 2.5, 2.5)
            p.setBrush(Qt.NoBrush)
            p.setPen(QPen(color, 2))
            p.drawPath(path)
            # Right-aligned inside the plot, whatever the label's length.
            p.drawText(
                QRectF(r.left(), r.top() + 2 + 14 * i, r.width() - 6, 16), Qt.AlignRight, name
            )
        p.setPen(QPen(QColor(255, 255, 255, 200), 1, Qt.DashLine))
        x = self.x_of(self.current)
        p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))
