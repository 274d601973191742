"""The systemd units pass `systemd-analyze verify` on a root where a bundle was installed."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = ("melisma-device.service", "melisma-health.service", "melisma-update.service", "melisma-update.path")


def _verify(root: Path, units: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", *map(str, units)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def analyze_root(installed_v1):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (tools/run installs the systemd package)")
    probe = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"systemd-analyze cannot run in this container: {probe.stderr.strip()}")
    # systemd-analyze --root reads the units the installed ones refer to (sysinit.target, ...) from the root
    system_units = next(p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir())
    shutil.copytree(system_units, installed_v1 / "usr" / "lib" / "systemd" / "system", symlinks=True)
    return installed_v1


def test_units_pass_systemd_analyze_verify(analyze_root):
    units = [analyze_root / "etc" / "systemd" / "system" / u for u in UNITS]
    assert all(u.is_file() for u in units)
    proc = _verify(analyze_root, units)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "melisma" not in proc.stderr, proc.stderr  # no warning about our units either


def test_verify_would_catch_a_broken_unit(analyze_root):
    unit = analyze_root / "etc" / "systemd" / "system" / "melisma-device.service"
    text = unit.read_text()
    unit.write_text(text.replace("ExecStart=/opt/melisma/current/bin/melisma-device",
                                 "ExecStart=/opt/melisma/current/bin/no-such-program"))
    proc = _verify(analyze_root, [unit])
    assert proc.returncode != 0 and "no-such-program" in proc.stderr


def test_service_sandboxing_and_capabilities():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(Path(__file__).resolve().parents[3] / "firmware" / "systemd" / "melisma-device.service")
    svc = unit["Service"]
    assert svc["User"] == "melisma" and svc["Restart"] == "on-failure"
    assert set(svc["AmbientCapabilities"].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert svc["CapabilityBoundingSet"] == svc["AmbientCapabilities"]
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict"
    assert svc["ReadWritePaths"] == "/var/lib/melisma" and svc["StandardOutput"] == "journal"
    assert "AF_BLUETOOTH" in svc["RestrictAddressFamilies"] and "AF_INET" not in svc["RestrictAddressFamilies"]
    health = configparser.ConfigParser(strict=False, interpolation=None)
    health.read(Path(__file__).resolve().parents[3] / "firmware" / "systemd" / "melisma-health.service")
    assert health["Unit"]["Before"] == "boot-complete.target"
    assert health["Install"]["RequiredBy"] == "boot-complete.target"
