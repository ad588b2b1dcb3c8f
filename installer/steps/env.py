"""The server environment: a virtual environment with the package and the right torch.

CPU or CUDA torch (``--torch``; ``auto`` asks ``nvidia-smi``), pinned to the version in
``pyproject.toml`` and installed *before* the package, so pip never swaps in another build. An
existing environment is reused; it is upgraded when the source or the torch choice changed
(a stamp file inside it records both).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from installer.context import Context, InstallError
from installer.paths import MACOS

TORCH_INDEX = {
    "cpu": "https://download.pytorch.org/whl/cpu",
    "cuda": "https://download.pytorch.org/whl/cu128",
}
STAMP = "warpdiff-install.json"
# what is installed, from package metadata (fast: nothing heavy is imported)
PROBE = """
import json, sys
from importlib import metadata as m
def v(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
nvidia = sorted(d.metadata["Name"] for d in m.distributions()
                if (d.metadata["Name"] or "").lower().startswith("nvidia-"))
print(json.dumps({"python": sys.version.split()[0], "torch": v("torch"),
                  "warpcore": v("warped-diffusion"), "nvidia": nvidia}))
"""


def detect_gpu() -> str | None:
    """The first GPU ``nvidia-smi -L`` lists, or None (no driver, no GPU)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
    return lines[0] if out.returncode == 0 and lines else None


def torch_flavour(ctx: Context) -> str:
    """``cpu`` or ``cuda`` (``default`` on macOS, where PyPI's wheel has MPS)."""
    choice = ctx.options.torch
    if ctx.platform.system == MACOS:
        if choice == "cuda":
            raise InstallError("--torch cuda: there is no CUDA on macOS; use --torch auto or cpu")
        return "default"
    if choice == "auto":
        return "cuda" if detect_gpu() else "cpu"
    return choice


def torch_pin(source: Path) -> str:
    """``torch==X`` as pinned in the package's pyproject.toml."""
    text = (source / "pyproject.toml").read_text()
    match = re.search(r'"(torch==[^"]+)"', text)
    if not match:
        raise InstallError(f"{source / 'pyproject.toml'}: no pinned torch (torch==X) found")
    return match.group(1)


def wanted_stamp(ctx: Context, flavour: str) -> dict[str, str]:
    source = ctx.options.source
    digest = hashlib.sha256((source / "pyproject.toml").read_bytes()).hexdigest()
    return {"source": str(source), "pyproject_sha256": digest, "torch": flavour}


def read_stamp(env: Path) -> dict[str, str] | None:
    try:
        return json.loads((env / STAMP).read_text())
    except (OSError, ValueError):
        return None


def torch_args(ctx: Context, flavour: str) -> list[str]:
    index = ctx.options.torch_index
    if index == "pip" or flavour == "default":
        return []  # pip's own configuration (a local wheel, a mirror, PyPI on macOS)
    return ["--index-url", index or TORCH_INDEX[flavour]]


def record(ctx: Context, flavour: str) -> None:
    """The environment and the device the service runs on, for ``doctor`` and the service."""
    device = {"cuda": "cuda", "default": "mps"}.get(flavour, "cpu")
    ctx.manifest.config.update(env=str(ctx.env_dir()), torch=flavour, device=device)


def plan(ctx: Context) -> str:
    if ctx.options.env:
        return f"use the existing environment {ctx.options.env} (not created, never removed)"
    env = ctx.env_dir()
    what = "reuse and upgrade" if ctx.platform.env_python(env).exists() else "create"
    flavour = torch_flavour(ctx)
    return f"{what} the server environment {env} ({torch_pin(ctx.options.source)}, {flavour})"


def probe(ctx: Context, env: Path) -> dict[str, Any]:
    """Versions in the environment; ``cuda``: whether its torch is a CUDA build."""
    python = ctx.platform.env_python(env)
    out = ctx.run([python, "-c", PROBE], f"checking the environment {env}", timeout=300)
    found = json.loads(out.strip().splitlines()[-1])
    if not found["torch"] or not found["warpcore"]:
        missing = " and ".join(n for n in ("torch", "warpcore") if not found[n])
        raise InstallError(f"{env} has no {missing}; install again without --env to make one")
    torch = found["torch"]
    found["cuda"] = "+cu" in torch or (bool(found["nvidia"]) and "+cpu" not in torch)
    return found


def apply(ctx: Context) -> str:
    env = ctx.env_dir()
    python = ctx.platform.env_python(env)
    if ctx.options.env:
        if not python.exists():
            raise InstallError(f"--env {env}: no {python}; give a virtual environment folder")
        found = probe(ctx, env)
        record(ctx, "cuda" if found["cuda"] and detect_gpu() else "cpu")
        return describe(env, found)
    flavour = torch_flavour(ctx)
    stamp = wanted_stamp(ctx, flavour)
    record(ctx, flavour)
    if python.exists() and read_stamp(env) == stamp:
        return f"{env} is up to date (torch {flavour})"
    if ctx.dry_run:
        ctx.writer._note(f"{'upgrade' if python.exists() else 'create'} the environment {env}")
        return "dry run"
    if not python.exists():
        ctx.writer.ensure_dir(env.parent)
        ctx.run([ctx.options.python, "-m", "venv", env], "creating the virtual environment")
        ctx.writer.record_tree(env)
        ctx.writer.changed.append(f"create {env}")
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    ctx.run([*pip, torch_pin(ctx.options.source), *torch_args(ctx, flavour)], "installing torch")
    ctx.run([*pip, "-e", ctx.options.source], "installing the warpdiff package")
    found = probe(ctx, env)
    if flavour == "cpu" and found["cuda"]:
        raise InstallError(
            f"a CUDA torch ({found['torch']}) is in {env} but --torch cpu was asked; remove the "
            "environment folder and install again with --torch cpu"
        )
    (env / STAMP).write_text(json.dumps(stamp, sort_keys=True))
    ctx.writer.changed.append(f"install the package into {env}")
    return describe(env, found)


def describe(env: Path, found: dict[str, Any]) -> str:
    build = "a CUDA build" if found["cuda"] else "a CPU build"
    return f"{env}: torch {found['torch']} ({build}), warpdiff {found['warpcore']}"
