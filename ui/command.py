"""``warpdiff panel [clip] [--mask m]``: the preview panel as a standalone window.

warpdiff panel shot.mov --mask shot_matte/ --server tcp://127.0.0.1:5557 [--start-server]
"""

from __future__ import annotations

import argparse
import sys

from warpcore.errors import InvalidInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clip", nargs="?", help="video or frame folder to open")
    parser.add_argument("--mask", default=None, help="matte video/folder/image, or 'alpha'")
    parser.add_argument("--server", default="tcp://127.0.0.1:5557", help="server address")
    parser.add_argument(
        "--start-server", action="store_true", help="start `warpdiff serve` if none answers"
    )


def run(args: argparse.Namespace) -> int:
    try:
        from PySide6.QtWidgets import QApplication
    except ImportError:
        raise InvalidInput(
            "panel: PySide6 is not installed; pip install 'warpdiff[ui]' (PySide6-Essentials)"
        ) from None
    from ui.panel import Panel

    app = QApplication.instance() or QApplication(sys.argv[:1])
    panel = Panel(args.server)
    panel.resize(1280, 800)
    panel.show()
    if args.start_server:
        panel.connection.start_server()
    if args.clip:

        def open_when_ready(state: str, _text: str) -> None:
            if state in ("ready", "busy") and panel.clip is None:
                panel.connection.state_changed.disconnect(open_when_ready)
                panel.open_clip(args.clip, args.mask)

        panel.connection.state_changed.connect(open_when_ready)
    return int(app.exec())
