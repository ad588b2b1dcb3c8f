"""Make the README's panel screenshots in a real window (run under Xvfb).

    xvfb-run -a -s "-screen 0 1480x900x24" python docs/panel_screenshots.py

Starts ``warpdiff serve --model builtin`` on a free loopback port, opens the bundled demo clip
(the cut-out cat over the coffee plate) in the panel, grabs the screen mid-run
(``docs/panel_running.png``), then runs GP noise without guidance and shows the flicker view
comparing the two runs, the plot showing the error inside the matte (``docs/panel_flicker.png``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

from server.testing import ServerProcess  # noqa: E402
from ui.panel import Panel  # noqa: E402
from warpcore.suites import DemoConfig, demo_clips  # noqa: E402
from warpcore.writers import FrameWriter  # noqa: E402

RUN = {"task": "inpaint", "steps": 10, "strength": 1.0, "seed": 0, "propagate": 0}


def wait(signal, timeout_s: float = 300) -> list:
    loop, got = QEventLoop(), []
    signal.connect(lambda *a: (got.append(a), loop.quit()))
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    if not got:
        raise TimeoutError(f"no {signal} within {timeout_s} s")
    return got[0]


def settle(ms: int = 400) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def grab(app: QApplication, panel: Panel, path: Path) -> None:
    settle()
    screen = app.primaryScreen()
    g = panel.frameGeometry()
    screen.grabWindow(0, g.x(), g.y(), g.width(), g.height()).save(str(path))
    print("wrote", path)


def main() -> int:
    clip = demo_clips(DemoConfig(size=(144, 192), frames=16))[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with FrameWriter(root / "plate_with_cat", fmt="png16") as w:
            for f in clip.inputs:
                w.write(np.asarray(f, np.float32))
        with FrameWriter(root / "cat_matte", fmt="png8") as w:
            for m in clip.masks:
                w.write(np.repeat(np.asarray(m, np.float32)[..., None], 3, axis=2))
        app = QApplication.instance() or QApplication(sys.argv[:1])
        args = ("--model", "builtin", "--allow-paths", str(root))
        with ServerProcess(root / "cache", *args, threads=None) as server:
            panel = Panel(server.address)
            panel.resize(1440, 860)
            panel.move(20, 20)
            panel.show()
            while panel.connection.state not in ("ready", "busy"):
                wait(panel.connection.state_changed, 30)
            panel.open_clip(str(root / "plate_with_cat"), str(root / "cat_matte"))
            wait(panel.clip_opened, 30)
            panel.params.set_request(RUN)
            panel.viewer.zoom = 1.0
            panel.run()
            while wait(panel.frame_arrived)[1] < 7:
                pass
            grab(app, panel, DOCS / "panel_running.png")
            wait(panel.analysis_ready)
            panel.params.set_request({**RUN, "guidance": 0.0})
            panel.run()
            wait(panel.analysis_ready)
            panel.compare(1, 2)
            panel.set_heat_visible(True)
            panel.plot_region.setCurrentIndex(1)
            panel.slider.setValue(9)
            while panel.connection.state != "ready":  # the next heartbeat says the queue is empty
                wait(panel.connection.state_changed, 10)
            grab(app, panel, DOCS / "panel_flicker.png")
            panel.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
