"""The OpenFX bundle: built from ``host_plugins/ofx/`` with CMake (or given by ``--ofx-bundle``),
copied into the OS's OFX plugin folder, a per-user folder, or ``--ofx-dir``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from installer.context import Context, InstallError
from installer.paths import OFX_ARCH, OFX_BUNDLE, Platform

NOT_BUILT = "missing: not built (this download has no host_plugins/ofx/ to build it from)"


def binary_of(bundle: Path, platform: Platform) -> Path:
    """The plugin library inside a bundle (``Contents/<arch>/WarpedDiffusion.ofx``)."""
    arch = OFX_ARCH.get(platform.system, OFX_ARCH["linux"])
    return bundle / "Contents" / arch / "WarpedDiffusion.ofx"


def target_dir(ctx: Context) -> Path:
    """``--ofx-dir``, else the standard folder when writable, else the per-user folder."""
    if ctx.options.ofx_dir:
        return ctx.options.ofx_dir
    system = ctx.platform.ofx_system_dir()
    probe = system
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return system if os.access(probe, os.W_OK) else ctx.platform.ofx_user_dir()


def guidance(ctx: Context, folder: Path) -> str | None:
    """What to set so hosts look in ``folder``; None when they already do."""
    if folder in ctx.platform.ofx_search_path():
        return None
    sep = os.pathsep
    return (
        f"OpenFX hosts look in {ctx.platform.ofx_system_dir()} and in OFX_PLUGIN_PATH only: add "
        f'{folder} to OFX_PLUGIN_PATH for the hosts (e.g. export OFX_PLUGIN_PATH="{folder}'
        f'{sep}$OFX_PLUGIN_PATH" in ~/.profile; macOS: launchctl setenv OFX_PLUGIN_PATH {folder}; '
        f'Windows: setx OFX_PLUGIN_PATH "{folder}"), then restart the host'
    )


def built_bundle(ctx: Context) -> Path | None:
    """The bundle to install; None when there is nothing to build it from."""
    if ctx.options.ofx_bundle:
        bundle = ctx.options.ofx_bundle
        if not binary_of(bundle, ctx.platform).is_file():
            raise InstallError(
                f"--ofx-bundle {bundle}: no {binary_of(bundle, ctx.platform)}; give a "
                f"{OFX_BUNDLE} folder with Contents/<arch>/WarpedDiffusion.ofx"
            )
        return bundle
    src = ctx.options.source / "host_plugins" / "ofx"
    if not (src / "CMakeLists.txt").is_file():
        return None
    build = ctx.options.source / "build" / "ofx"
    bundle = build / OFX_BUNDLE
    if ctx.dry_run:
        ctx.writer._note(f"build {bundle} with cmake from {src}")
        return bundle
    if shutil.which("cmake") is None:
        raise InstallError(
            "building the OpenFX plugin needs cmake and a C++ compiler; install them"
        )
    ctx.run(["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release"], "cmake configure")
    ctx.run(["cmake", "--build", build, "--config", "Release", "--parallel"], "building the plugin")
    found = bundle if bundle.is_dir() else next(build.rglob(OFX_BUNDLE), None)
    if found is None or not binary_of(found, ctx.platform).is_file():
        raise InstallError(f"the OpenFX build finished but made no {OFX_BUNDLE} under {build}")
    return found


def plan(ctx: Context) -> str:
    src = ctx.options.ofx_bundle or ctx.options.source / "host_plugins" / "ofx"
    if not ctx.options.ofx_bundle and not (src / "CMakeLists.txt").is_file():
        return f"OpenFX plugin: {NOT_BUILT}"
    return f"OpenFX plugin {OFX_BUNDLE} from {src} into {target_dir(ctx)}"


def apply(ctx: Context) -> str:
    bundle = built_bundle(ctx)
    if bundle is None:
        return NOT_BUILT
    folder = target_dir(ctx)
    dest = folder / OFX_BUNDLE
    if ctx.dry_run and not bundle.is_dir():
        ctx.writer._note(f"copy the bundle into {dest}")
    else:
        for path in sorted(bundle.rglob("*")):
            if path.is_dir() or path.is_symlink():
                continue
            mode = path.stat().st_mode & 0o777
            ctx.writer.write_file(dest / path.relative_to(bundle), path.read_bytes(), mode)
    ctx.manifest.config["ofx_bundle"] = str(dest)
    note = guidance(ctx, folder)
    if note:
        ctx.notes.append(note)
    return f"{dest}" + (" (not a standard folder: see OFX_PLUGIN_PATH below)" if note else "")
