"""Re-run chosen tests against surviving mutmut mutants, one forked pytest per mutant.

After ``mutmut run`` and new pins, this says which survivors the pins now kill without a
full re-run (mutmut only runs the tests its first pass saw calling each function, so new
tests are not tried on old survivors). It copies ``mutants/warpcore`` (mutmut's trampolined
sources) and the current ``tests/`` and ``server/`` into ``--workdir``, then for each name
sets ``MUTANT_UNDER_TEST`` and runs pytest there.

    python tools/mutant_recheck.py survivors.txt -- tests/test_method_pins.py -k "warp or flow"
    python tools/mutant_recheck.py --mutants build/mutants/noise out/mutants/noise.survivors.txt \
        -- tests/test_method_pins.py          # after ``make mutants`` (tools/mutants.py)

``survivors.txt``: one mutant name per line (``mutmut results`` lists them). The first line
of output checks the unmutated code (it must say ``passes``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", type=Path, help="file with one mutant name per line")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mutant_recheck"))
    parser.add_argument(
        "--mutants",
        type=Path,
        default=Path.cwd(),
        help="the folder mutmut ran in (holds mutants/warpcore); default here. "
        "tools/mutants.py runs in build/mutants/<module>",
    )
    parser.add_argument("pytest_args", nargs="+", help="after --: tests and pytest options")
    args = parser.parse_args()
    names = ["baseline.unmutated"] + [
        line.strip() for line in args.names.read_text().splitlines() if line.strip()
    ]
    root = Path.cwd()
    trampolined = args.mutants.resolve() / "mutants" / "warpcore"
    if not trampolined.is_dir():
        print(f"no {trampolined}: run `make mutants` (or mutmut run) first")
        return 1
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    shutil.copytree(trampolined, args.workdir / "warpcore")
    for name in ("tests", "server"):
        shutil.copytree(root / name, args.workdir / name)
    shutil.copy(root / "pyproject.toml", args.workdir)
    os.chdir(args.workdir)
    sys.path.insert(0, str(args.workdir))
    import pytest
    import torch

    torch.set_num_threads(1)  # forked children: torch's thread pool is not fork-safe
    with contextlib.redirect_stdout(io.StringIO()):  # import everything once, before forking
        pytest.main(["--collect-only", "-qq", "-p", "no:cacheprovider", *args.pytest_args])
    start, survived = time.time(), 0
    for name in names:
        pid = os.fork()
        if pid == 0:
            os.environ["MUTANT_UNDER_TEST"] = name
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os._exit(int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *args.pytest_args])))
        _, status = os.waitpid(pid, 0)
        failed = os.waitstatus_to_exitcode(status) != 0
        if name.startswith("baseline."):
            print(f"{name}: {'FAILS: fix the tests first' if failed else 'passes'}", flush=True)
            if failed:
                return 1
            continue
        survived += not failed
        print(f"{name}: {'killed' if failed else 'SURVIVED'}", flush=True)
    print(f"{len(names) - 1} mutants, {survived} survived, {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
