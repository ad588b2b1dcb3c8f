"""The host-side packages import no torch and no warpcore (they run inside Nuke / Resolve)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import HOST_PATHS, ROOT


def test_host_packages_import_no_torch_and_no_warpcore():
    code = (
        "import sys\n"
        "import warpdiff_host, warpdiff_host.runner, warpdiff_host.exr\n"
        "import warpdiff_nuke, warpdiff_nuke.commands, warpdiff_nuke.graph\n"
        "import warpdiff_resolve, warpdiff_resolve.form, warpdiff_resolve.movie\n"
        "warpdiff_host.runner.client_module()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'warpcore'))\n"
        "assert not bad, bad\n"
        "assert 'server.client' in sys.modules\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, HOST_PATHS), str(ROOT)]))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
