"""Summarise a ``mutmut run``: the mutation score per module and every survivor's diff.

Run from the repository root after ``mutmut run`` (``make mutants`` does both); prints Markdown.
Score = killed / (killed + survived); timeouts count as killed (the mutant hung the tests),
mutants no test reaches ("no tests") count as survived, skipped ones are left out.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict

MUTMUT = [sys.executable, "-m", "mutmut"]
KILLED = {"killed", "timeout"}
SURVIVED = {"survived", "no tests"}


def _results() -> dict[str, str]:
    out = subprocess.run([*MUTMUT, "results", "--all", "true"], capture_output=True, text=True)
    status = {}
    for line in out.stdout.splitlines():
        name, sep, state = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            status[name] = state.strip()
    return status


def main() -> int:
    status = _results()
    if not status:
        print("no mutmut results here: run `make mutants` first")
        return 1
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for name, state in sorted(status.items()):
        module = ".".join(name.split(".")[:2])
        counts[module][state] += 1
        if state in SURVIVED:
            survivors[module].append(name)
    print("| module | mutants run | killed | survived | score | not run |")
    print("|---|---|---|---|---|---|")
    for module, c in sorted(counts.items()):
        killed = sum(c[s] for s in KILLED)
        survived = sum(c[s] for s in SURVIVED)
        score = 100.0 * killed / max(killed + survived, 1)
        run = sum(c.values()) - c["not checked"]
        print(f"| {module} | {run} | {killed} | {survived} | {score:.1f}% | {c['not checked']} |")
    for module, names in sorted(survivors.items()):
        print(f"\n## Survivors in {module}\n")
        for name in names:
            diff = subprocess.run([*MUTMUT, "show", name], capture_output=True, text=True).stdout
            print(f"### {name}\n```diff\n{diff.strip()}\n```")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
