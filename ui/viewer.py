"""The frame viewer: zoom (wheel), pan (drag), a draggable before/after wipe, a heat overlay.

It only renders what it is given: ``before`` (left of the divider), ``after`` (right of it),
and optionally flicker heat maps drawn over each side (the picture is dimmed under them so
the colours read). Images are uint8 RGB numpy arrays;
``before`` is stretched to ``after``'s size (an upscale's input is smaller than its result).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPen, QWheelEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

GRAB_PX = 8
HEAT_STOPS = np.array(  # value -> RGB: dark purple, red, orange, pale yellow (like "inferno")
    [[0.0, 20, 10, 60], [0.35, 150, 30, 100], [0.65, 240, 100, 30], [1.0, 255, 250, 160]],
    np.float32,
)


def to_qimage(rgb: np.ndarray) -> QImage:
    """uint8 (H, W, 3) or (H, W, 4) -> a QImage that owns a copy of the pixels."""
    h, w, c = rgb.shape
    fmt = QImage.Format_RGB888 if c == 3 else QImage.Format_RGBA8888
    data = np.ascontiguousarray(rgb)
    return QImage(data.data, w, h, w * c, fmt).copy()


def heat_rgba(error: np.ndarray, scale: float) -> np.ndarray:
    """A per-pixel error (H, W) -> uint8 RGBA: colour by ``error / scale``, clear where ~0."""
    v = np.clip(np.asarray(error, np.float32) / max(scale, 1e-12), 0.0, 1.0)
    rgb = np.stack([np.interp(v, HEAT_STOPS[:, 0], HEAT_STOPS[:, c]) for c in (1, 2, 3)], -1)
    alpha = np.sqrt(v) * 230.0
    return np.concatenate([rgb, alpha[..., None]], -1).round().astype(np.uint8)


class FrameViewer(QWidget):
    """Before/after viewer. ``wipe`` in [0, 1]: where the divider sits across the image."""

    wipe_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(240, 160)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMouseTracking(True)
        self.before: QImage | None = None
        self.after: QImage | None = None
        self.heat: QImage | None = None  # over ``after``
        self.heat_before: QImage | None = None  # over ``before`` (A of an A/B comparison)
        self.heat_visible = False
        self.wipe = 0.5
        self.zoom = 1.0
        self.pan = QPointF(0.0, 0.0)
        self.labels = ("input", "result")
        self._drag: str | None = None
        self._last = QPointF()

    # -- content ----------------------------------------------------------------------------
    def set_images(
        self,
        before: np.ndarray | None,
        after: np.ndarray | None,
        heat: np.ndarray | None = None,
        heat_before: np.ndarray | None = None,
    ) -> None:
        self.before = to_qimage(before) if before is not None else None
        self.after = to_qimage(after) if after is not None else None
        self.heat = to_qimage(heat) if heat is not None else None
        self.heat_before = to_qimage(heat_before) if heat_before is not None else None
        self.update()

    def set_labels(self, before: str, after: str) -> None:
        self.labels = (before, after)
        self.update()

    def set_wipe(self, value: float) -> None:
        value = float(min(1.0, max(0.0, value)))
        if value != self.wipe:
            self.wipe = value
            self.wipe_changed.emit(value)
            self.update()

    def set_heat_visible(self, on: bool) -> None:
        self.heat_visible = bool(on)
        self.update()

    def reset_view(self) -> None:
        self.zoom, self.pan = 1.0, QPointF(0.0, 0.0)
        self.update()

    # -- geometry ---------------------------------------------------------------------------
    def _base(self) -> QImage | None:
        return self.after or self.before

    def image_rect(self) -> QRectF:
        """Where the image lies in widget coordinates (fit, then zoom and pan)."""
        base = self._base()
        if base is None or base.width() == 0:
            return QRectF()
        fit = min(self.width() / base.width(), self.height() / base.height())
        w, h = base.width() * fit * self.zoom, base.height() * fit * self.zoom
        cx, cy = self.width() / 2 + self.pan.x(), self.height() / 2 + self.pan.y()
        return QRectF(cx - w / 2, cy - h / 2, w, h)

    def divider_x(self) -> float:
        r = self.image_rect()
        return r.left() + self.wipe * r.width()

    # -- painting ---------------------------------------------------------------------------
    def paintEvent(self, _event: object) -> None:  # noqa: N802 (Qt's name)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(30, 30, 32))
        rect = self.image_rect()
        if rect.isEmpty():
            p.setPen(QColor(170, 170, 170))
            p.drawText(self.rect(), Qt.AlignCenter, "open a clip, then Run")
            return
        p.setRenderHint(QPainter.SmoothPixmapTransform, self.zoom < 2.0)
        split = self.divider_x()
        left = QRectF(rect.left(), rect.top(), max(0.0, split - rect.left()), rect.height())
        right = QRectF(split, rect.top(), max(0.0, rect.right() - split), rect.height())
        sides = ((self.before, self.heat_before, left), (self.after, self.heat, right))
        for image, heat, clip in sides:
            if image is None:
                continue
            p.save()
            p.setClipRect(clip)
            p.drawImage(rect, image)
            if self.heat_visible and heat is not None:
                p.fillRect(rect, QColor(0, 0, 0, 150))
                p.drawImage(rect, heat)
            p.restore()
        if self.before is not None and self.after is not None:
            p.setPen(QPen(QColor(255, 255, 255, 220), 2))
            p.drawLine(QPointF(split, rect.top()), QPointF(split, rect.bottom()))
            p.setPen(QColor(255, 255, 255))
            p.drawText(QPointF(max(rect.left(), 0) + 6, max(rect.top(), 0) + 16), self.labels[0])
            label_w = p.fontMetrics().horizontalAdvance(self.labels[1])
            p.drawText(
                QPointF(min(rect.right(), self.width()) - label_w - 6, max(rect.top(), 0) + 16),
                self.labels[1],
            )

    # -- interaction ------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position()
        near = abs(pos.x() - self.divider_x()) <= GRAB_PX
        self._drag = "wipe" if near and self.before is not None else "pan"
        self._last = pos
        if self._drag == "wipe":
            self._wipe_to(pos.x())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position()
        if self._drag == "wipe":
            self._wipe_to(pos.x())
        elif self._drag == "pan":
            self.pan += pos - self._last
            self._last = pos
            self.update()
        else:
            near = abs(pos.x() - self.divider_x()) <= GRAB_PX
            self.setCursor(Qt.SplitHCursor if near else Qt.OpenHandCursor)

    def mouseReleaseEvent(self, _event: QMouseEvent) -> None:  # noqa: N802
        self._drag = None

    def mouseDoubleClickEvent(self, _event: QMouseEvent) -> None:  # noqa: N802
        self.reset_view()

    def _wipe_to(self, x: float) -> None:
        r = self.image_rect()
        if r.width() > 0:
            self.set_wipe((x - r.left()) / r.width())

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        factor = 1.25 ** (event.angleDelta().y() / 120.0)
        self.zoom_at(event.position(), factor)

    def zoom_at(self, pos: QPointF, factor: float) -> None:
        """Zoom by ``factor`` keeping the image point under ``pos`` where it is."""
        new_zoom = min(64.0, max(0.1, self.zoom * factor))
        factor = new_zoom / self.zoom
        center = QPointF(self.width() / 2, self.height() / 2) + self.pan
        self.pan += (center - pos) * (factor - 1.0)
        self.zoom = new_zoom
        self.update()
