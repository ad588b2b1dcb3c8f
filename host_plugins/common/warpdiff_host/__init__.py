"""Host-side logic shared by the Nuke and DaVinci Resolve clients (no torch, no warpcore).

- ``exr``: float EXR frames and ``name.%04d.exr`` sequences (OpenEXR + numpy).
- ``progress``: what a host shows while a shot runs (frame k of n, ETA).
- ``shot``: a shot to send (frames or paths), its parameters and the label/name hosts show.
- ``runner``: send a shot through ``server/client.py``, follow its events, honour cancel, and
  write the result as an EXR sequence that appears only once every frame is there.
- ``paths``: where ``server`` lives, the server address and the output folders.
"""

from __future__ import annotations

from warpdiff_host.errors import HostError, ServerUnavailable, ShotCancelled, ShotFailed
from warpdiff_host.progress import Progress
from warpdiff_host.runner import ShotResult, run_shot
from warpdiff_host.shot import ShotJob

__all__ = [
    "HostError",
    "Progress",
    "ServerUnavailable",
    "ShotCancelled",
    "ShotFailed",
    "ShotJob",
    "ShotResult",
    "run_shot",
]
