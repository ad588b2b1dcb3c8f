"""Host round trips: one real ``warpdiff serve --model builtin`` on loopback for this folder,
fake host modules (``fakes/``) on the path, small EXR clips and their ``warpdiff inpaint`` result.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from server.testing import ServerProcess, tiny_shot

ROOT = Path(__file__).resolve().parents[2]
HOST_PATHS = [
    ROOT / "tests" / "hosts" / "fakes",
    ROOT / "host_plugins" / "common",
    ROOT / "host_plugins" / "nuke",
    ROOT / "host_plugins" / "resolve",
]
for _p in HOST_PATHS:
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

SIZE, N_FRAMES = 48, 4
PARAMS = {"steps": 4, "seed": 3}  # small and fast; the same for the host and the CLI


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for every host test (the builtin model loads once); files under tmp."""
    root = tmp_path_factory.mktemp("server")
    cache = root / "cache"
    args = ["--model", "builtin"]
    if RESTRICTS_PATHS:  # a server that restricts readable paths: ours
        args += ["--allow-paths", str(tmp_path_factory.getbasetemp())]
    proc = ServerProcess(cache, *args)
    with proc:
        yield proc


def _serve_help() -> str:
    cmd = [sys.executable, "-m", "warpcore.cli", "serve", "--help"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60).stdout


RESTRICTS_PATHS = "--allow-paths" in _serve_help()


@pytest.fixture
def outside_dir() -> Iterator[Path]:
    """A folder outside the server's allowed paths (its paths submits are refused there)."""
    import shutil
    import tempfile

    if not RESTRICTS_PATHS:
        pytest.skip("this server reads any path (no --allow-paths)")
    folder = Path(tempfile.mkdtemp(prefix="warpdiff-outside-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Clip:
    """An EXR clip on disk: ``pattern`` % n for n in first..first+len-1; mattes beside it."""

    folder: Path
    pattern: str
    matte_pattern: str
    first: int
    frames: list[np.ndarray]
    mattes: list[np.ndarray]

    @property
    def last(self) -> int:
        return self.first + len(self.frames) - 1


def make_clip(
    folder: Path,
    first: int,
    n: int = N_FRAMES,
    alpha: bool = False,
    seed: int = 0,
    matte_in_alpha_only: bool = False,
) -> Clip:
    """RGB (or RGBA with the matte in alpha) float EXR frames numbered from ``first``; matte
    files are gray (R = G = B = A = matte) or, with ``matte_in_alpha_only``, black RGB with the
    matte in A (what `warpdiff inpaint` reads as an alpha-only matte)."""
    from warpdiff_host.exr import write_exr

    frames, mattes = tiny_shot(n, SIZE, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    pattern = str(folder / "plate.%04d.exr")
    matte_pattern = str(folder / "matte" / "matte.%04d.exr")
    for i, (f, m) in enumerate(zip(frames, mattes, strict=True)):
        write_exr(pattern % (first + i), np.dstack([f, m]) if alpha else f)
        rgb = np.zeros_like(f) if matte_in_alpha_only else np.repeat(m, 3, axis=2)
        write_exr(matte_pattern % (first + i), np.dstack([rgb, m]))
    return Clip(folder, pattern, matte_pattern, first, frames, mattes)


def warpdiff_inpaint(source: Path, mask: str | None, out: Path, params: dict) -> list[np.ndarray]:
    """What ``warpdiff inpaint SOURCE --mask MASK -o OUT --format exr-float`` writes (no
    ``mask``: what ``warpdiff upscale SOURCE ...`` writes)."""
    from warpcore.cli import main
    from warpcore.colour import MODEL_SPACE
    from warpcore.video import open_frames

    task = ["inpaint", str(source), "--mask", mask] if mask else ["upscale", str(source)]
    # The hosts send the values as they are (Nuke's working space, raw EXR): the CLI is told
    # the frames are in the model's own space, so it converts nothing either.
    args = [*task, "-o", str(out), "--format", "exr-float", "--colorspace", MODEL_SPACE]
    for k, v in params.items():
        args += [f"--{k}", str(v)]
    assert main([*args, "--quiet"]) == 0
    return [np.asarray(f)[..., :3] for f in open_frames(out)]  # it keeps the input's alpha


def folder_of(clip: Clip, frames: range, dest: Path, matte: bool = False) -> Path:
    """A folder holding exactly these frames of the clip (the CLI reads whole folders)."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    pattern = clip.matte_pattern if matte else clip.pattern
    for i, n in enumerate(frames):
        shutil.copyfile(pattern % n, dest / f"f_{i:04d}.exr")
    return dest


# The server and this test process may run torch with different thread counts, so float32
# reductions can differ in the last bit (measured 6e-8); anything real (a half-float write,
# 5e-4; another frame or parameter, > 1e-2) is far above this.
SAME_FRAME_ATOL = 2e-6
