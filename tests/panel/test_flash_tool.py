"""tools/flash-panel: what it stages and the mpremote commands it would run (no Pico here), and
that the mpy-cross build it copies runs the core cases on the MicroPython unix port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
FLASH = ROOT / "tools" / "flash-panel"


def flash(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FLASH), *args], capture_output=True, text=True, timeout=120)


def test_dry_run_stages_every_panel_file_and_lists_the_mpremote_steps(tmp_path):
    result = flash("--dry-run", "--port", "/dev/ttyACM0", "--build", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    sources = sorted(p.name for p in (ROOT / "firmware" / "panel" / "mpanel").glob("*.py"))
    staged = sorted(p.name for p in (tmp_path / "b" / "mpanel").iterdir())
    assert staged == sources and (tmp_path / "b" / "main.py").is_file()
    steps = [line[2:] for line in result.stdout.splitlines() if line.startswith("$ ")]
    assert steps == [
        "mpremote connect /dev/ttyACM0 mip install ssd1306",
        "mpremote connect /dev/ttyACM0 mip install usb-device-cdc",
        "mpremote connect /dev/ttyACM0 fs rm -r :mpanel",
        "mpremote connect /dev/ttyACM0 fs cp -r mpanel : + fs cp main.py :main.py + reset",
    ]
    assert "sim" not in result.stdout  # the simulator's stand-ins never go to a Pico


def test_mpy_build_runs_on_micropython(tmp_path, micropython):
    build = tmp_path / "b"
    result = flash("--dry-run", "--mpy", "--no-deps", "--build", str(build))
    assert result.returncode == 0, result.stderr
    compiled = sorted(p.name for p in (build / "mpanel").iterdir())
    assert compiled and all(name.endswith(".mpy") for name in compiled)
    assert "mip install" not in result.stdout
    run = subprocess.run([micropython, str(HERE / "run_cases.py")], capture_output=True, text=True, timeout=120,
                         env={"MICROPYPATH": f".frozen:{build}:{HERE}", "PATH": "/usr/bin:/bin"})
    assert run.stdout.strip().endswith("DONE 0 failed"), run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stdout.count("PASS ") >= 25
