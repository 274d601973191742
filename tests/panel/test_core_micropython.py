"""The same panel core cases on the MicroPython unix port (the interpreter the Pico runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "firmware" / "panel"))
sys.path.insert(0, str(HERE))

import core_cases  # noqa: E402

NAMES = [name for name, _ in core_cases.all_cases()]


def run_cases(micropython: str, core_dir: Path) -> dict[str, str]:
    env = {"MICROPYPATH": f".frozen:{core_dir}:{HERE}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([micropython, str(HERE / "run_cases.py")], capture_output=True, text=True, env=env,
                          timeout=120)
    results = {}
    for line in proc.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASS", "FAIL"):
            name, _, error = rest.partition(":")
            results[name] = "PASS" if word == "PASS" else "FAIL" + error
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    return results


@pytest.fixture(scope="module")
def results(micropython):
    out = run_cases(micropython, ROOT / "firmware" / "panel")
    assert "micropython" in subprocess.run([micropython, "-c", "import sys; print(sys.implementation.name)"],
                                           capture_output=True, text=True).stdout
    return out


@pytest.mark.parametrize("name", NAMES)
def test_core_case_on_micropython(results, name):
    assert results.get(name) == "PASS", results.get(name, "not run")
