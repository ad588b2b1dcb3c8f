"""The PySide6 preview panel: tune a shot, watch it stream in, compare runs, see flicker.

Speaks only the server protocol (``server.client``); imports no torch, no cv2, no PyAV, so it
runs inside a host's Python (Nuke 16 ships PySide6). Modules: ``workers`` (off-GUI-thread
calls and event streams), ``connection`` (server state, starting a local server), ``params``
(the parameter form and presets), ``runs`` (a run's frames and metrics), ``viewer`` (the frame
viewer), ``plot`` (the per-frame warping-error plot), ``panel`` (the assembled panel),
``command`` (``warpdiff panel``), ``nuke_dock`` (Nuke's dockable panel).
"""
