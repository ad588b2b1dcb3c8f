"""The installer in a temporary HOME with fake host folders: install, install again (no change),
doctor against a real server, uninstall (byte-identical tree), dry run, a broken install, the
service files' validity, and (slow) a real environment made from this checkout."""

from __future__ import annotations

import hashlib
import json
import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from installer.blocks import BEGIN, make_block, with_block, without_block
from installer.context import Context, Options
from installer.manifest import Manifest, Writer
from installer.paths import MACOS, WINDOWS, Platform
from installer.steps import service
from server.testing import ServerProcess

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "installer" / "install.py"
USER_INIT = b'import nuke\r\nnuke.pluginAddPath("/studio/gizmos")  # mine, CRLF, no final newline'
ENV = Path(sys.prefix)  # this test run's environment stands in for the server's (see slow test)


def tree(root: Path) -> dict[str, str]:
    """Every folder and file under ``root``: path -> 'dir' or sha256 + mode."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[rel] = f"{digest}:{oct(path.stat().st_mode & 0o777)}"
    return out


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME with a user's Nuke init.py, a Resolve scripts tree and an OFX folder with another
    vendor's plugin."""
    home = tmp_path / "home"
    (home / ".nuke").mkdir(parents=True)
    (home / ".nuke" / "init.py").write_bytes(USER_INIT)
    scripts = home / ".local/share/DaVinciResolve/Fusion/Scripts"
    (scripts / "Utility").mkdir(parents=True)
    (scripts / "Utility" / "Other Tool.py").write_text("print('theirs')\n")
    (scripts / "Comp").mkdir()
    other = home / "ofx" / "Other.ofx.bundle" / "Contents" / "Linux-x86-64"
    other.mkdir(parents=True)
    (other / "Other.ofx").write_bytes(b"\x7fELF other")
    return home


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A stand-in for the built OpenFX bundle (the standard layout)."""
    root = tmp_path / "build" / "WarpedDiffusion.ofx.bundle"
    binary = root / "Contents" / "Linux-x86-64" / "WarpedDiffusion.ofx"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\x7fELF fake plugin")
    binary.chmod(0o755)
    (root / "Contents" / "Info.plist").write_bytes(plistlib.dumps({"CFBundleName": "WD"}))
    return root


def run(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "WARPDIFF_"))}
    env.update(HOME=str(home), OFX_PLUGIN_PATH=str(home / "ofx"), PYTHONPATH=str(REPO))
    # tools pip may start keep their own state where it was (only the installer sees this HOME)
    real = Path.home()
    env.setdefault("PIP_CACHE_DIR", str(home.parent / "pip-cache"))
    env.setdefault("RUSTUP_HOME", str(real / ".rustup"))
    env.setdefault("CARGO_HOME", str(real / ".cargo"))
    return subprocess.run(
        [sys.executable, str(INSTALL), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def install(home: Path, bundle: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["install", "--yes", "--env", str(ENV), "--ofx-bundle", str(bundle)]
    return run(home, *args, "--ofx-dir", str(home / "ofx"), "--service", "write", *extra)


def doctor(home: Path, *args: str) -> tuple[int, dict[str, dict]]:
    done = run(home, "doctor", "--json", "--timeout", "10", *args)
    body = json.loads(done.stdout)
    assert body["ok"] == (done.returncode == 0), done.stdout
    return done.returncode, {c["name"]: c for c in body["checks"]}


def test_install_twice_doctor_break_repair_uninstall(home: Path, bundle: Path) -> None:
    before = tree(home)
    first = install(home, bundle)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.index("plan") < first.stdout.index("[env]")  # the plan comes first
    init = (home / ".nuke" / "init.py").read_bytes()
    assert init.startswith(USER_INIT) and init.count(BEGIN.encode()) == 1
    assert str(REPO / "host_plugins" / "nuke").encode() in init
    launcher = home / ".local/share/DaVinciResolve/Fusion/Scripts/Utility/Warped Diffusion.py"
    assert str(REPO).encode() in launcher.read_bytes()
    dest = home / "ofx" / "WarpedDiffusion.ofx.bundle" / "Contents" / "Linux-x86-64"
    assert (dest / "WarpedDiffusion.ofx").read_bytes() == b"\x7fELF fake plugin"
    assert os.access(dest / "WarpedDiffusion.ofx", os.X_OK)
    unit = (home / ".config/systemd/user/warpdiff.service").read_text()
    assert f"ExecStart={ENV}/bin/warpdiff serve" in unit and "Restart=on-failure" in unit

    installed = tree(home)
    second = install(home, bundle)
    assert second.returncode == 0, second.stdout
    assert "nothing changed" in second.stdout
    assert tree(home) == installed  # the second install wrote nothing

    with ServerProcess(home / "server-cache") as server:
        address = server.address
        code, checks = doctor(home, "--server", address)
    shutil.rmtree(home / "server-cache")
    assert code == 0, checks
    for name in ("python", "source", "environment", "torch", "model", "server", "ofx", "nuke"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["resolve"]["status"] == "ok" and "protocol 1" in checks["server"]["detail"]
    assert checks["service"]["status"] == "ok" and "cache" in checks

    # broken: the bundle deleted, the server stopped -> reported with the fix, exit 1
    shutil.rmtree(home / "ofx" / "WarpedDiffusion.ofx.bundle")
    (home / ".nuke" / "init.py").write_bytes(USER_INIT)  # and someone took our block out
    code, checks = doctor(home, "--server", address, "--timeout", "1")
    assert code == 1
    assert checks["ofx"]["status"] == "broken" and "install.py install" in checks["ofx"]["fix"]
    assert checks["server"]["status"] == "broken" and "systemctl" in checks["server"]["fix"]
    assert checks["nuke"]["status"] == "broken" and "install.py install" in checks["nuke"]["fix"]
    assert checks["resolve"]["status"] == checks["model"]["status"] == "ok"
    text = run(home, "doctor", "--server", address, "--timeout", "1")
    assert text.returncode == 1 and "fix: " in text.stdout
    assert "not ok: server, ofx, nuke" in text.stdout
    assert install(home, bundle).returncode == 0  # installing again repairs it
    assert tree(home) == installed

    gone = run(home, "uninstall", "--yes")
    assert gone.returncode == 0, gone.stdout
    assert tree(home) == before  # byte for byte, every folder the install made removed


def test_dry_run_writes_nothing(home: Path, bundle: Path) -> None:
    before = tree(home)
    done = install(home, bundle, "--dry-run")
    assert done.returncode == 0, done.stdout
    assert "would write" in done.stdout and "would update" in done.stdout
    assert "nothing written" in done.stdout
    assert tree(home) == before
    assert run(home, "install").returncode == 1  # no terminal, no --yes: refuses, writes nothing
    assert tree(home) == before


def test_uninstall_keeps_user_edits_made_after_install_and_purges(home: Path, bundle: Path) -> None:
    assert install(home, bundle).returncode == 0
    init = home / ".nuke" / "init.py"
    init.write_bytes(init.read_bytes() + b"print('added later')\n")
    cache = home / ".cache" / "warpdiff" / "shots"
    cache.mkdir(parents=True)
    (cache / "frame.exr").write_bytes(b"x")
    done = run(home, "uninstall", "--yes", "--purge")
    assert done.returncode == 0, done.stdout
    assert init.read_bytes() == USER_INIT + b"\nprint('added later')\n"
    assert not cache.exists()
    assert run(home, "uninstall", "--yes").returncode == 1  # nothing left to undo


def test_systemd_unit_is_valid(home: Path, bundle: Path, tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    assert install(home, bundle).returncode == 0
    unit = home / ".config/systemd/user/warpdiff.service"
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
    verify = [tool, "--user", "verify", str(unit)]
    done = subprocess.run(verify, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    bad = unit.read_text().replace(f"ExecStart={ENV}", "ExecStart=/nonexistent")
    unit.write_text(bad)  # the check is real: a unit whose command is missing fails it
    assert subprocess.run(verify, capture_output=True, env=env).returncode != 0


def context(platform: Platform, tmp_path: Path, mode: str = "write") -> Context:
    writer = Writer(Manifest(platform.manifest_path()), dry_run=False, say=lambda _: None)
    return Context(platform, Options(source=REPO, service=mode), writer, say=lambda _: None)


def test_launchd_plist_is_valid(tmp_path: Path) -> None:
    mac = Platform(system=MACOS, home=tmp_path, env={})
    ctx = context(mac, tmp_path)
    service.apply(ctx)
    path = tmp_path / "Library/LaunchAgents/com.warpeddiffusion.server.plist"
    plist = plistlib.loads(path.read_bytes())
    assert plist["Label"] == "com.warpeddiffusion.server" and plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # restarted when it fails
    args = plist["ProgramArguments"]
    data = tmp_path / "Library/Application Support/warpdiff"
    assert args[:2] == [str(data / "env/bin/warpdiff"), "serve"]
    assert args[args.index("--cache") + 1] == str(tmp_path / "Library/Caches/warpdiff/shots")
    assert Path(plist["StandardOutPath"]).parent.is_dir()
    assert "launchctl bootstrap" in " ".join(ctx.notes)


def test_windows_service_says_not_supported_with_the_command(tmp_path: Path) -> None:
    win = Platform(system=WINDOWS, home=tmp_path, env={"LOCALAPPDATA": str(tmp_path / "Local")})
    ctx = context(win, tmp_path, mode="enable")
    assert "not supported yet" in service.plan(ctx)
    assert "not supported yet" in service.apply(ctx)
    note = ctx.notes[0]
    assert "warpdiff.exe" in note and " serve " in note and "schtasks" in note
    assert not any(tmp_path.rglob("*"))  # nothing written


def test_model_is_checked_never_downloaded(home: Path, bundle: Path, tmp_path: Path) -> None:
    before = tree(home)
    for spec, words in (
        (str(tmp_path / "nope"), "no such folder"),
        ("stabilityai/not-cached", "nothing is downloaded"),
    ):
        done = run(home, "install", "--yes", "--only", "model", "--model", spec)
        assert done.returncode == 1 and words in done.stdout, done.stdout
    weights = tmp_path / "sdxl"
    for name in ("unet", "vae", "text_encoder_2", "tokenizer_2", "scheduler"):
        (weights / name).mkdir(parents=True)
    done = run(home, "install", "--yes", "--only", "model", "--model", str(weights))
    assert done.returncode == 0, done.stdout
    manifest = json.loads((home / ".local/share/warpdiff/manifest.json").read_text())
    assert manifest["config"]["model"] == str(weights)
    assert run(home, "uninstall", "--yes").returncode == 0
    assert tree(home) == before


def test_ofx_without_a_build_says_not_built(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "checkout"  # a checkout without host_plugins/ofx
    shutil.copytree(
        REPO / "host_plugins", source / "host_plugins", ignore=shutil.ignore_patterns("ofx")
    )
    shutil.copy(REPO / "pyproject.toml", source)
    done = run(home, "install", "--yes", "--only", "ofx", "--source", str(source))
    assert done.returncode == 0, done.stdout
    assert "missing: not built" in done.stdout
    code, checks = doctor(home)
    assert checks["ofx"]["status"] == "missing" and not checks["ofx"]["required"]
    assert checks["source"]["status"] == "ok"
    shutil.rmtree(source)  # the download folder moved away: the plugins point at nothing
    code, checks = doctor(home)
    assert code == 1 and checks["source"]["status"] == "broken", checks["source"]
    assert "install again from the new folder" in checks["source"]["fix"]


def test_bad_options_are_refused_clearly(home: Path, bundle: Path, tmp_path: Path) -> None:
    done = run(home, "install", "--only", "env,plugins")
    assert done.returncode == 2 and "accepted: env, model, ofx" in done.stderr
    done = run(home, "install", "--yes", "--only", "ofx", "--ofx-bundle", str(tmp_path))
    assert done.returncode == 1 and "Contents/<arch>/WarpedDiffusion.ofx" in done.stdout
    done = run(home, "install", "--yes", "--source", str(tmp_path))
    assert done.returncode == 2 and "not a warpdiff checkout" in done.stdout


def test_block_edits_keep_every_user_line() -> None:
    block = make_block("nuke.pluginAddPath('/a')")
    user = "import nuke\n# mine"
    once = with_block(user, block)
    assert once == user + "\n" + block and with_block(once, block) == once
    moved = with_block(once + "x = 1\n", make_block("nuke.pluginAddPath('/b')"))
    assert moved == user + "\n" + make_block("nuke.pluginAddPath('/b')") + "x = 1\n"
    assert without_block(moved) == user + "\nx = 1\n"
    with pytest.raises(ValueError, match="never ends"):
        with_block(BEGIN + "\nhalf", block)


def test_warpdiff_subcommands_delegate_to_the_installer(home: Path) -> None:
    env = dict(os.environ, HOME=str(home), PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "warpcore.cli"]
    for name, words in (
        ("install", "--ofx-bundle"),
        ("uninstall", "--purge"),
        ("doctor", "--json"),
    ):
        done = subprocess.run([*cmd, name, "--help"], capture_output=True, text=True, env=env)
        assert done.returncode == 0 and words in done.stdout, done.stderr
    before = tree(home)
    done = subprocess.run(
        [*cmd, "install", "--dry-run", "--only", "nuke,resolve"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0 and "would update" in done.stdout, done.stdout
    assert tree(home) == before


@pytest.mark.slow
@pytest.mark.timeout(900)  # a full dependency install: ~2 min of CPU, 8 min on a loaded machine
def test_environment_step_makes_a_working_environment(tmp_path: Path) -> None:
    """A real virtual environment from this checkout, with the machine's CPU torch (pip's own
    sources: here a local wheel), and `warpdiff --help` from it; a second run reuses it."""
    home = tmp_path / "home"
    home.mkdir()
    args = ["install", "--yes", "--only", "env", "--torch", "cpu", "--torch-index", "pip"]
    done = run(home, *args, timeout=840)
    assert done.returncode == 0, done.stdout + done.stderr
    env = home / ".local/share/warpdiff/env"
    assert "+cpu" in done.stdout and "a CPU build" in done.stdout
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    helped = subprocess.run(
        [env / "bin/warpdiff", "--help"], capture_output=True, text=True, env=clean
    )
    assert helped.returncode == 0 and "inpaint" in helped.stdout, helped.stderr
    again = run(home, *args)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout
    assert run(home, "uninstall", "--yes", timeout=600).returncode == 0
    assert not list(home.iterdir())


def test_service_enable_starts_and_uninstall_stops_it(
    home: Path, bundle: Path, tmp_path: Path
) -> None:
    """`--service enable` with a stand-in `systemctl` on PATH that logs its arguments (the real
    one would start a service on this machine)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "systemctl.log"
    script = fake / "systemctl"
    script.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\n[ "$2" = is-active ] && echo active\nexit 0\n'
    )
    script.chmod(0o755)
    path = f"{fake}{os.pathsep}{os.environ['PATH']}"
    args = ["install", "--yes", "--env", str(ENV), "--only", "model,service", "--service", "enable"]
    before = tree(home)
    os.environ["PATH"], saved = path, os.environ["PATH"]
    try:
        assert run(home, *args).returncode == 0
        first = log.read_text().splitlines()
        assert first == ["--user daemon-reload", "--user enable --now warpdiff.service"]
        installed = tree(home)
        assert run(home, *args).returncode == 0
        assert log.read_text().splitlines()[2:] == first  # unit unchanged: no restart
        assert tree(home) == installed
        assert run(home, *args, "--bind", "tcp://127.0.0.1:5599").returncode == 0
        assert log.read_text().splitlines()[-1] == "--user restart warpdiff.service"
        assert "5599" in (home / ".config/systemd/user/warpdiff.service").read_text()
        code, checks = doctor(home, "--timeout", "1")
        assert checks["service"]["status"] == "ok" and "active" in checks["service"]["detail"]
        assert run(home, "uninstall", "--yes").returncode == 0
        assert log.read_text().splitlines()[-1] == "--user disable --now warpdiff.service"
    finally:
        os.environ["PATH"] = saved
    assert tree(home) == before


def test_torch_build_follows_the_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: CUDA when `nvidia-smi -L` lists a GPU (a stand-in here), else CPU; each build from
    its own index, pinned as in pyproject.toml; 'pip' leaves the sources to pip."""
    from installer.context import InstallError
    from installer.steps import env as env_step

    linux = Platform(system="linux", home=tmp_path, env={})
    ctx = context(linux, tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    assert env_step.torch_flavour(ctx) == "cpu"
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'\n")
    smi.chmod(0o755)
    assert env_step.torch_flavour(ctx) == "cuda"
    assert env_step.torch_args(ctx, "cuda") == ["--index-url", env_step.TORCH_INDEX["cuda"]]
    assert env_step.torch_args(ctx, "cpu") == [
        "--index-url",
        "https://download.pytorch.org/whl/cpu",
    ]
    assert env_step.torch_pin(REPO) == "torch==2.13.0"
    for options, expected in (({"torch": "cpu"}, "cpu"), ({"torch_index": "pip"}, "cuda")):
        ctx.options = Options(source=REPO, **options)
        assert env_step.torch_flavour(ctx) == expected
    assert env_step.torch_args(ctx, "cuda") == []  # --torch-index pip
    mac = context(Platform(system=MACOS, home=tmp_path, env={}), tmp_path)
    assert env_step.torch_flavour(mac) == "default" and env_step.torch_args(mac, "default") == []
    mac.options = Options(source=REPO, torch="cuda")
    with pytest.raises(InstallError, match="no CUDA on macOS"):
        env_step.torch_flavour(mac)


def test_ofx_outside_the_hosts_search_path_gets_guidance(tmp_path: Path, bundle: Path) -> None:
    from installer import doctor as doc
    from installer.steps import ofx

    folder = tmp_path / "plugins"
    alone = Platform(system="linux", home=tmp_path, env={})
    ctx = context(alone, tmp_path)
    ctx.options = Options(source=REPO, ofx_dir=folder, ofx_bundle=bundle)
    assert "not a standard folder" in ofx.apply(ctx)
    assert f'OFX_PLUGIN_PATH="{folder}' in ctx.notes[0]
    config = {"ofx_bundle": str(folder / "WarpedDiffusion.ofx.bundle")}
    check = doc.check_ofx(alone, config)
    assert check.status == "broken" and "OFX_PLUGIN_PATH" in check.fix
    found = Platform(system="linux", home=tmp_path, env={"OFX_PLUGIN_PATH": str(folder)})
    assert ofx.guidance(context(found, tmp_path), folder) is None
    assert doc.check_ofx(found, config).status == "ok"


@pytest.mark.skipif(not shutil.which("cmake") or not shutil.which("c++"), reason="needs cmake, c++")
def test_ofx_step_builds_the_plugin_with_cmake(home: Path) -> None:
    """Without --ofx-bundle: `host_plugins/ofx` built with CMake into build/ofx (as `make ofx`;
    incremental when that ran already), the bundle copied where hosts look, removed again."""
    before = tree(home)
    done = run(
        home, "install", "--yes", "--only", "ofx", "--ofx-dir", str(home / "ofx"), timeout=600
    )
    assert done.returncode == 0, done.stdout
    assert "cmake --build" in done.stdout
    rel = Path("WarpedDiffusion.ofx.bundle/Contents/Linux-x86-64/WarpedDiffusion.ofx")
    built = (REPO / "build" / "ofx" / rel).read_bytes()
    assert (home / "ofx" / rel).read_bytes() == built and built[:4] == b"\x7fELF"
    assert run(home, "uninstall", "--yes").returncode == 0
    assert tree(home) == before
