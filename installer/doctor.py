"""``doctor``: every part of an install checked and printed as ok / missing / broken, with the fix.

The environment, torch, GPU and server checks run one probe (``probe.py``) with the
environment's own Python, so they test what the service really runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from installer.blocks import BEGIN
from installer.manifest import Manifest, read_bytes
from installer.paths import DEFAULT_BIND, LINUX, OFX_BUNDLE, SERVICE_NAME, Platform
from installer.steps import model as model_step
from installer.steps.ofx import binary_of

OK, MISSING, BROKEN = "ok", "missing", "broken"
INSTALL = "python3 installer/install.py install --yes"
GIB = 2**30
MIN_FREE_GIB = 2.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | missing | broken
    detail: str
    fix: str = ""
    required: bool = True  # a missing or broken required item makes doctor exit 1


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def run_probe(python: Path, address: str, keys: str, timeout: float) -> dict[str, Any]:
    script = Path(__file__).with_name("probe.py")
    env = dict(os.environ, PYTHONNOUSERSITE="1", HF_HUB_OFFLINE="1")
    try:
        done = subprocess.run(
            [str(python), str(script), address, keys, str(timeout)],
            capture_output=True,
            text=True,
            timeout=120 + timeout,
            env=env,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return {"probe_error": f"{type(exc).__name__}: {exc}"}


def check_python() -> Check:
    ok = sys.version_info >= (3, 10)
    version = sys.version.split()[0]
    return Check(
        "python",
        OK if ok else BROKEN,
        f"Python {version} (installer)",
        "" if ok else "install Python 3.10 or newer",
    )


def check_env(
    env: Path, python: Path, probe: dict[str, Any] | None, torch_choice: str
) -> list[Check]:
    if probe is None:
        return [Check("environment", MISSING, f"no environment at {env}", INSTALL)]
    if "probe_error" in probe or "warpcore_error" in probe:
        why = probe.get("probe_error") or probe.get("warpcore_error")
        return [Check("environment", BROKEN, f"{python}: {why}", f"{INSTALL} (reinstalls it)")]
    out = [
        Check("environment", OK, f"{env} (Python {probe['python']}, warpcore {probe['warpcore']})")
    ]
    if "torch_error" in probe:
        out.append(
            Check("torch", BROKEN, probe["torch_error"], f"{INSTALL} --torch {torch_choice}")
        )
        return out
    build = f"CUDA {probe['cuda']}" if probe.get("cuda") else "CPU"
    if torch_choice == "cuda" and not probe.get("cuda"):
        out.append(
            Check(
                "torch",
                BROKEN,
                f"torch {probe['torch']} is a CPU build; CUDA was chosen",
                f"{INSTALL} --torch cuda",
            )
        )
    else:
        out.append(Check("torch", OK, f"torch {probe['torch']} ({build} build)"))
    if probe.get("gpu"):
        detail = f"{probe['gpu']}: {_gib(probe['gpu_free'])} free of {_gib(probe['gpu_total'])}"
        out.append(Check("gpu", OK, detail, required=False))
    else:
        gpu = (
            shutil.which("nvidia-smi")
            and subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).returncode == 0
        )
        fix = f"{INSTALL} --torch cuda" if gpu else "none needed: the server runs on the CPU (slow)"
        detail = "a GPU is present but torch cannot use it" if gpu else "no GPU: CPU mode"
        out.append(Check("gpu", MISSING, detail, fix, required=False))
    return out


def check_model(spec: str, platform: Platform) -> Check:
    folder, problem = model_step.locate(spec, platform)
    if problem:
        return Check("model", MISSING, problem, f"{INSTALL} --model PATH_OR_HUB_ID")
    return Check("model", OK, f"{spec}" + (f" at {folder}" if folder else " (in the package)"))


def check_server(address: str, probe: dict[str, Any] | None, start: str) -> Check:
    if probe is None or "hello" not in probe:
        why = "no environment to ask from" if probe is None else probe.get("server_error", "?")
        return Check("server", BROKEN, f"not reachable at {address}: {why}", f"start it: {start}")
    hello = probe["hello"]
    versions = hello.get("protocols", [hello.get("protocol")])
    if probe.get("client_protocol") not in versions:
        return Check(
            "server",
            BROKEN,
            f"{address} speaks protocol {versions}, the hosts {probe.get('client_protocol')}",
            f"{INSTALL} (updates both), then {start}",
        )
    return Check(
        "server",
        OK,
        f"{address}: warpdiff {hello.get('version')}, protocol "
        f"{hello.get('protocol')}, model {hello.get('models', {}).get('default')}, "
        f"device {hello.get('device', '?')}",
    )


def check_ofx(platform: Platform, config: dict[str, Any]) -> Check:
    search = platform.ofx_search_path()
    installed = config.get("ofx_bundle")
    if installed:
        bundle = Path(installed)
        if not binary_of(bundle, platform).is_file():
            return Check("ofx", BROKEN, f"{binary_of(bundle, platform)} is gone", INSTALL)
        if bundle.parent not in search:
            return Check(
                "ofx",
                BROKEN,
                f"{bundle} is not where hosts look ({', '.join(map(str, search))})",
                f"add {bundle.parent} to OFX_PLUGIN_PATH for the hosts",
            )
        return Check("ofx", OK, str(bundle))
    for folder in search:
        if binary_of(folder / OFX_BUNDLE, platform).is_file():
            return Check("ofx", OK, f"{folder / OFX_BUNDLE} (not installed by this installer)")
    return Check(
        "ofx",
        MISSING,
        f"no {OFX_BUNDLE} in {', '.join(map(str, search))}",
        f"build it (make ofx) and run {INSTALL}",
        required=False,
    )


def check_nuke(platform: Platform, manifest: Manifest) -> Check:
    init = platform.nuke_dir() / "init.py"
    text = (read_bytes(init) or b"").decode("utf-8", "replace")
    nuke_path = platform.env.get("NUKE_PATH", "")
    if BEGIN in text:
        return Check("nuke", OK, f"registered in {init}")
    if "host_plugins" in nuke_path and "nuke" in nuke_path:
        return Check("nuke", OK, f"on NUKE_PATH ({nuke_path})")
    if manifest.owns(init):
        return Check("nuke", BROKEN, f"the warpdiff block is gone from {init}", INSTALL)
    return Check("nuke", MISSING, "not registered", INSTALL, required=False)


def check_source(config: dict[str, Any]) -> Check:
    """The checkout the plugins and the environment point at (they break when it moves)."""
    source = config.get("source")
    if not source:
        return Check("source", MISSING, "not installed", INSTALL, required=False)
    if not (Path(source) / "host_plugins").is_dir():
        return Check(
            "source",
            BROKEN,
            f"{source} is gone (moved or deleted?); the plugins and the environment point at it",
            "run install again from the new folder",
        )
    return Check("source", OK, source)


def check_file(name: str, path: Path, manifest: Manifest) -> Check:
    if path.is_file():
        return Check(name, OK, str(path))
    if manifest.owns(path):
        return Check(name, BROKEN, f"{path} is gone", INSTALL)
    return Check(name, MISSING, f"no {path}", INSTALL, required=False)


def check_service(platform: Platform, manifest: Manifest) -> Check:
    path = platform.service_file()
    if path is None:
        return Check(
            "service",
            MISSING,
            "not supported yet on this OS: start `warpdiff serve` by hand",
            required=False,
        )
    base = check_file("service", path, manifest)
    started = any(e["kind"] == "service" for e in manifest.entries)
    if base.status != OK or not started:
        if base.status == OK:
            return Check("service", OK, f"{path} (written, not started: --service write)")
        return base
    if platform.system == LINUX and shutil.which("systemctl"):
        state = subprocess.run(
            ["systemctl", "--user", "is-active", SERVICE_NAME], capture_output=True, text=True
        ).stdout.strip()
        if state != "active":
            return Check(
                "service",
                BROKEN,
                f"{SERVICE_NAME} is {state or 'unknown'}",
                f"systemctl --user restart {SERVICE_NAME}; journalctl --user -u {SERVICE_NAME}",
            )
        return Check("service", OK, f"{SERVICE_NAME} active")
    return Check("service", OK, f"{path} (loaded)")


def folder_size(path: Path) -> tuple[int, int]:
    total = count = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
                count += 1
            except OSError:
                pass
    return total, count


def check_cache(cache: Path) -> Check:
    probe = cache
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    size, count = folder_size(cache) if cache.is_dir() else (0, 0)
    detail = f"{cache}: {_gib(size)} in {count} files; {_gib(free)} free on its disk"
    if free < MIN_FREE_GIB * GIB:
        return Check("cache", BROKEN, detail, "free disk space, or lower `--cache-max-gb`")
    return Check("cache", OK, detail, required=False)


def start_hint(platform: Platform, manifest: Manifest, address: str) -> str:
    """How to start the server, given what the install set up."""
    unit = platform.service_file()
    if platform.system == LINUX and unit is not None and unit.is_file():
        logs = f"(logs: journalctl --user -u {SERVICE_NAME})"
        if any(e["kind"] == "service" for e in manifest.entries):
            return f"systemctl --user restart {SERVICE_NAME}  {logs}"
        return f"systemctl --user daemon-reload && systemctl --user enable --now {SERVICE_NAME}"
    if unit is not None and unit.is_file():
        return f"launchctl kickstart -k gui/{os.getuid()}/{unit.stem}"
    return f"warpdiff serve --bind {address}"


def server_address(config: dict[str, Any], override: str | None) -> str:
    address = override or os.environ.get("WARPDIFF_SERVER") or config.get("bind") or DEFAULT_BIND
    for wildcard in ("0.0.0.0", "*"):
        address = address.replace(f"//{wildcard}:", "//127.0.0.1:")
    return address


def diagnose(platform: Platform, server: str | None = None, timeout: float = 5.0) -> list[Check]:
    """Every check, in the order they are printed."""
    manifest = Manifest.load(platform.manifest_path())
    config = manifest.config
    env = Path(config.get("env") or platform.env_dir())
    python = platform.env_python(env)
    address = server_address(config, server)
    keys = os.environ.get("WARPDIFF_CURVE_KEYS", "")
    probe = run_probe(python, address, keys, timeout) if python.exists() else None
    checks = [check_python(), check_source(config)]
    checks += check_env(env, python, probe, config.get("torch", "cpu"))
    checks.append(check_model(config.get("model", "builtin"), platform))
    checks.append(check_server(address, probe, start_hint(platform, manifest, address)))
    checks.append(check_ofx(platform, config))
    checks.append(check_nuke(platform, manifest))
    resolve = platform.resolve_utility_dir() / "Warped Diffusion.py"
    checks.append(check_file("resolve", resolve, manifest))
    checks.append(check_service(platform, manifest))
    checks.append(check_cache(Path(config.get("cache") or platform.cache_dir())))
    return checks


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.required and c.status != OK]


def report(checks: list[Check], as_json: bool) -> str:
    if as_json:
        body = {"ok": not failed(checks), "checks": [asdict(c) for c in checks]}
        return json.dumps(body, indent=1)
    lines = []
    for c in checks:
        lines.append(f"{c.status:8s}{c.name:12s}{c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"{'':20s}fix: {c.fix}")
    bad = failed(checks)
    lines.append(
        "all required items ok"
        if not bad
        else f"{len(bad)} required item(s) not ok: {', '.join(c.name for c in bad)}"
    )
    return "\n".join(lines)
