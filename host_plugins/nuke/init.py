# Nuke runs this file at start-up, in the GUI and in terminal sessions (`nuke -t`): no UI here.
# It makes `import warpdiff_nuke` work (this folder) and the shared host code importable.
import os

import nuke

_here = os.path.dirname(os.path.abspath(__file__))
nuke.pluginAddPath(_here)  # Nuke has it already when this folder is on NUKE_PATH
nuke.pluginAddPath(os.path.join(os.path.dirname(_here), "common"))
_root = os.environ.get("WARPDIFF_ROOT") or os.path.dirname(os.path.dirname(_here))
if os.path.isfile(os.path.join(_root, "server", "client.py")):
    nuke.pluginAddPath(_root)
