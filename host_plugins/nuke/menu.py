# Nuke runs this file in GUI sessions only: the "Warped Diffusion" menu and node toolbar.
import nuke
import warpdiff_nuke.commands as _commands

_ITEMS = (
    ("Remove object", _commands.remove_object_selected),
    ("Upscale", _commands.upscale_selected),
    ("Open panel", _commands.open_panel),
    ("Server status", _commands.server_status),
)

for _bar in (nuke.menu("Nuke"), nuke.toolbar("Nodes")):
    _menu = _bar.addMenu("Warped Diffusion")
    for _label, _command in _ITEMS:
        _menu.addCommand(_label, _command)
