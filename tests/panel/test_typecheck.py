"""The panel firmware type-checks against the Pico's MicroPython stubs (not CPython's types).

tools/run installs ``micropython-rp2-rpi-pico-stubs`` into ``.venv/panel-typings`` with
``pip install --target``; mypy then uses it as its typeshed (``--custom-typeshed-dir``) and module
path, with the two micropython-lib drivers the stubs lack in firmware/panel/stubs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
PANEL = ROOT / "firmware" / "panel"


def typings_dir() -> Path:
    path = Path(os.environ.get("MELISMA_PANEL_TYPINGS", Path(sys.prefix) / "panel-typings"))
    assert (path / "machine.pyi").is_file() and (path / "stdlib" / "VERSIONS").is_file(), (
        f"the Pico's MicroPython stubs are not in {path}; run tools/run setup "
        "(pip install --target .venv/panel-typings micropython-rp2-rpi-pico-stubs)")
    return path


def mypy(*files: str | Path, cwd: Path = PANEL) -> subprocess.CompletedProcess:
    typings = typings_dir()
    env = dict(os.environ, MYPYPATH=f"{PANEL / 'stubs'}:{typings}")
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(PANEL / "mypy.ini"),
                           "--custom-typeshed-dir", str(typings), "--no-incremental", *map(str, files)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_panel_firmware_passes_mypy_strict_against_the_pico_stubs():
    result = mypy("main.py", "mpanel")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_the_check_really_uses_the_pico_stubs(tmp_path):
    # CPython's time has no ticks_ms and machine does not exist there; with the Pico stubs both are
    # known, and a misspelt Pin method is caught.
    probe = tmp_path / "probe.py"
    probe.write_text("import time\nfrom machine import Pin\n\n"
                     "t: int = time.ticks_diff(time.ticks_ms(), time.ticks_ms())\n"
                     "Pin(2, Pin.IN, Pin.PULL_UP).valeu()\n")
    result = mypy(probe, cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 1, out
    assert '"Pin" has no attribute "valeu"' in out
    assert "ticks" not in out and "machine" not in out.replace('"Pin" has no attribute', "")
