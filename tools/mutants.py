"""Mutation-test the method's modules one by one, each with only its own fast tests.

``make mutants`` runs this. For each module it makes a scratch copy of the tracked files under
``--workdir`` (default ``build/mutants/<module>``), narrows ``[tool.mutmut]`` there to that
module and the tests in :data:`FAST_TESTS`, runs ``mutmut run`` at nice 19 with one torch
thread, and writes ``out/mutants/<module>.md`` (score and every survivor's diff, from
``tools/mutation_report.py``) and ``out/mutants/<module>.survivors.txt`` (the names, for
``tools/mutant_recheck.py`` after new pins). ``out/mutants.md`` gathers the scores.

    python tools/mutants.py                       # all six modules (hours on 2 cores)
    python tools/mutants.py noise flow            # some modules
    python tools/mutants.py flow -- "warpcore.flow.x_estimate_flow*"   # some functions

mutmut only runs, per mutant, the selected tests that its first pass saw calling the mutated
function; a narrow selection per module keeps each survivor's run to seconds. The mutmut
timeout is raised (``timeout_constant``) so that a loaded machine does not pass slow runs off
as kills.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The fast test files that reach each module (a few seconds to ~20 s each set on 2 cores).
FAST_TESTS: dict[str, list[str]] = {
    "noise": ["tests/test_noise.py", "tests/test_method_pins.py", "tests/test_devices.py"],
    "warps": [
        "tests/test_warps.py",
        "tests/test_method_pins.py",
        "tests/test_chunks.py::test_fast_forward_is_bit_identical_to_next",
        "tests/test_devices.py",
    ],
    "guidance": [
        "tests/test_sampler.py",
        "tests/test_guidance_rules.py",
        "tests/test_method_pins.py",
        "tests/test_devices.py",
    ],
    "sampler": ["tests/test_sampler.py", "tests/test_method_pins.py", "tests/test_devices.py"],
    "metrics": ["tests/test_metrics.py", "tests/test_method_pins.py"],
    "camera": ["tests/test_camera.py"],
    "flow": [
        "tests/test_flow.py",
        "tests/test_metrics.py",
        "tests/test_method_pins.py",
        "tests/test_devices.py",
    ],
}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def _scratch(module: str, workdir: Path) -> None:
    """A copy of the tracked files with ``[tool.mutmut]`` narrowed to ``module``."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    shutil.rmtree(workdir, ignore_errors=True)
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            dst = workdir / os.fsdecode(name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    config = workdir / "pyproject.toml"
    text = config.read_text()
    for key, value in (
        ("only_mutate", [f"warpcore/{module}.py"]),
        ("pytest_add_cli_args_test_selection", FAST_TESTS[module]),
    ):
        text, count = re.subn(rf"(?ms)^{key} = \[.*?\]", f"{key} = {_toml_list(value)}", text)
        if count != 1:
            raise SystemExit(f"pyproject.toml: no single `{key} = [...]` in [tool.mutmut]")
    text = text.replace("[tool.mutmut]\n", "[tool.mutmut]\ntimeout_constant = 60.0\n", 1)
    config.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(FAST_TESTS), help="default: all six")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "mutants")
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    parser.add_argument("--children", type=int, default=1, help="mutmut --max-children")
    parser.add_argument("patterns", nargs="*", default=[], help="after --: mutant name globs")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    patterns = argv[split + 1 :]
    unknown = sorted(set(args.modules) - set(FAST_TESTS))
    if unknown:
        parser.error(f"unknown module(s) {unknown}; accepted: {', '.join(FAST_TESTS)}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.update(QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1")
    mutmut = [sys.executable, "-m", "mutmut"]
    (args.out / "mutants").mkdir(parents=True, exist_ok=True)
    summary = ["# Mutation scores (tools/mutants.py)", ""]
    for module in args.modules:
        work = args.workdir / module
        _scratch(module, work)
        globs = patterns or [f"warpcore.{module}.*"]
        start = time.monotonic()
        cmd = ["nice", "-n", "19", *mutmut, "run", "--max-children", str(args.children), *globs]
        print(f"{module}: {' '.join(cmd[3:])} in {work}", flush=True)
        subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, check=False)
        minutes = (time.monotonic() - start) / 60.0
        report = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "mutation_report.py")],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        (args.out / "mutants" / f"{module}.md").write_text(report)
        names = re.findall(r"^### (warpcore\.\S+__mutmut_\d+)$", report, flags=re.M)
        (args.out / "mutants" / f"{module}.survivors.txt").write_text(
            "".join(f"{n}\n" for n in names)
        )
        score = next((line for line in report.splitlines() if f"warpcore.{module}" in line), "")
        summary.append(f"- {module} ({minutes:.0f} min): {score.strip() or 'no results'}")
        print(summary[-1], flush=True)
    (args.out / "mutants.md").write_text("\n".join(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
