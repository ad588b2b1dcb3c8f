"""Install Warped Diffusion for this user: the server environment, the host plugins (OpenFX,
Nuke, Resolve), a login service and the model choice; or remove it; or check it.

    python3 installer/install.py [install] [--yes] [--dry-run] [--torch cpu|cuda] ...
    python3 installer/install.py uninstall [--yes] [--purge]
    python3 installer/install.py doctor [--json]

Standard library only. Every step is idempotent: a second install changes nothing. Everything
written is listed in a manifest in the per-user data folder; ``uninstall`` undoes exactly that.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `import installer` work
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from installer import doctor as doctor_mod  # noqa: E402
from installer.context import STEP_NAMES, Context, InstallError, Options  # noqa: E402
from installer.manifest import Manifest, Writer  # noqa: E402
from installer.paths import DEFAULT_BIND, Platform  # noqa: E402
from installer.steps import env, model, nuke, ofx, resolve, service  # noqa: E402
from installer.uninstall import uninstall  # noqa: E402

STEPS = {
    "env": env,
    "model": model,
    "ofx": ofx,
    "nuke": nuke,
    "resolve": resolve,
    "service": service,
}
SOURCE = Path(__file__).resolve().parent.parent


def _steps(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    bad = [n for n in names if n not in STEP_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown step(s) {', '.join(bad) or '(none)'}; accepted: {', '.join(STEP_NAMES)}"
        )
    return names


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--yes", "-y", action="store_true", help="do it without asking")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would change; write nothing"
    )


def add_install_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument(
        "--torch",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="torch build (auto: CUDA when nvidia-smi lists a GPU)",
    )
    parser.add_argument(
        "--torch-index",
        default=None,
        metavar="URL|pip",
        help="where torch comes from (default: the PyTorch index of the build; "
        "'pip': pip's own configuration, e.g. a local wheel or a mirror)",
    )
    parser.add_argument(
        "--env",
        type=Path,
        default=None,
        metavar="DIR",
        help="use this existing environment (e.g. .venv) instead of making one",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter the environment is made from (3.10+)",
    )
    parser.add_argument(
        "--ofx-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="OpenFX plugin folder (default: the OS's, else a per-user one)",
    )
    parser.add_argument(
        "--ofx-bundle",
        type=Path,
        default=None,
        metavar="PATH",
        help="an already built WarpedDiffusion.ofx.bundle to install",
    )
    parser.add_argument(
        "--model",
        default="builtin",
        metavar="PATH_OR_HUB_ID",
        help="the server's weights: builtin, a diffusers folder, or a hub id "
        "already in the local Hugging Face cache (nothing is downloaded)",
    )
    parser.add_argument("--bind", default=DEFAULT_BIND, help="the service's server address")
    parser.add_argument("--cache", type=Path, default=None, help="the server's shot cache")
    parser.add_argument(
        "--service",
        choices=("enable", "write", "none"),
        default="enable",
        help="enable: write and start the login service; write: only write it",
    )
    parser.add_argument(
        "--only",
        type=_steps,
        default=STEP_NAMES,
        metavar="STEP,...",
        help=f"run only these steps ({', '.join(STEP_NAMES)})",
    )
    parser.add_argument(
        "--skip", type=_steps, default=(), metavar="STEP,...", help="run every step but these"
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=SOURCE,
        help="the warpdiff checkout to install from (default: this one)",
    )


def add_uninstall_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--purge", action="store_true", help="also remove the shot cache")


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--server", default=None, help="server address (default: the installed one)"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the server")


def confirm(args: argparse.Namespace) -> bool:
    if args.yes or args.dry_run:
        return True
    if not sys.stdin.isatty():
        print("not a terminal: add --yes to go ahead (or --dry-run to see the changes)")
        return False
    return input("Go ahead? [y/N] ").strip().lower() in ("y", "yes")


def run_install(args: argparse.Namespace, platform: Platform | None = None) -> int:
    platform = platform or Platform()
    source = args.source.resolve()
    if not (source / "pyproject.toml").is_file() or not (source / "host_plugins").is_dir():
        print(f"--source {source}: not a warpdiff checkout (no pyproject.toml, host_plugins/)")
        return 2
    names = [n for n in args.only if n not in args.skip]
    try:
        manifest = Manifest.load(platform.manifest_path())
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    options = Options(
        source=source,
        torch=args.torch,
        torch_index=args.torch_index,
        env=args.env,
        python=args.python,
        ofx_dir=args.ofx_dir,
        ofx_bundle=args.ofx_bundle,
        model=args.model,
        bind=args.bind,
        cache=args.cache,
        service=args.service,
        steps=tuple(names),
    )
    writer = Writer(manifest, args.dry_run, lambda line: print(f"    {line}"))
    ctx = Context(platform, options, writer)
    print(f"Warped Diffusion installer ({'dry run' if args.dry_run else 'plan'}), from {source}:")
    try:
        for name in names:
            print(f"  - {STEPS[name].plan(ctx)}")
    except InstallError as exc:
        print(f"error: {exc}")
        return 2
    print(f"  manifest: {platform.manifest_path()}")
    if not confirm(args):
        return 1
    writer.ensure_dir(platform.data_dir())
    code = 0
    for name in names:
        try:
            print(f"[{name}] {STEPS[name].apply(ctx)}")
        except InstallError as exc:
            print(f"[{name}] error: {exc}")
            code = 1
            break
    manifest.config.update(source=str(source), bind=options.bind, cache=str(ctx.cache_dir()))
    writer.save()
    for note in dict.fromkeys(ctx.notes):
        print(f"note: {note}")
    if args.dry_run:
        print(f"dry run: {len(writer.changed)} change(s) listed, nothing written")
    elif not writer.changed:
        print("nothing changed: already installed")
    if code == 0 and not args.dry_run:
        print("check it with: warpdiff doctor   (or python3 installer/install.py doctor)")
    return code


def run_uninstall(args: argparse.Namespace, platform: Platform | None = None) -> int:
    platform = platform or Platform()
    try:
        manifest = Manifest.load(platform.manifest_path())
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    print(
        f"Uninstall: undo what {platform.manifest_path()} lists"
        + (f", and remove the cache {manifest.config.get('cache')}" if args.purge else "")
    )
    if manifest.exists and not confirm(args):
        return 1
    purge = None
    if args.purge:
        purge = Path(manifest.config.get("cache") or platform.cache_dir())
    return uninstall(manifest, print, args.dry_run, purge)


def run_doctor(args: argparse.Namespace, platform: Platform | None = None) -> int:
    checks = doctor_mod.diagnose(platform or Platform(), args.server, args.timeout)
    print(doctor_mod.report(checks, args.json))
    return 1 if doctor_mod.failed(checks) else 0


COMMANDS = {
    "install": (add_install_arguments, run_install, "install or upgrade (the default)"),
    "uninstall": (add_uninstall_arguments, run_uninstall, "remove what the install wrote"),
    "doctor": (add_doctor_arguments, run_doctor, "check every part and say how to fix it"),
}


def main(argv: Sequence[str] | None = None) -> int:
    if sys.version_info < (3, 10):  # noqa: UP036 (it runs on whatever python3 the user has)
        print(f"the installer needs Python 3.10 or newer; this is {sys.version.split()[0]}")
        return 2
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "install")
    parser = argparse.ArgumentParser(
        prog="install.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, _run, help_text) in COMMANDS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except KeyboardInterrupt:
        print("stopped; run the same command again to finish (every step is idempotent)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
