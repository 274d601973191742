"""The box as a separate process, read by a GATT client no one here wrote: Bumble's gatt-dump.

Two virtual controllers on one link (``bumble.apps.controllers``), the box on one, ``gatt_dump``
on the other; TCP on 127.0.0.1 only. Also checks ``melisma-device pair`` reaches the service.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from melisma import protocol as p
from melisma.device.service import main as device_main

BOX_ADDRESS = "F0:AA:BB:CC:DD:01"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def test_bumble_gatt_dump_lists_device_information_and_melisma(tmp_path, capsys):
    port1, port2 = _free_port(), _free_port()
    procs = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "bumble.apps.controllers",
                                       f"tcp-server:127.0.0.1:{port1}", f"tcp-server:127.0.0.1:{port2}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_for_port(port1)
        box_log = open(tmp_path / "box.log", "w")  # noqa: SIM115 -- the box process writes to it until the test ends
        box = subprocess.Popen([sys.executable, "-m", "melisma.device.service", "run",
                                "--transport", f"tcp-client:127.0.0.1:{port1}", "--address", BOX_ADDRESS,
                                "--data-dir", str(tmp_path / "box")],
                               stdout=subprocess.PIPE, stderr=box_log, text=True)
        procs.append(box)
        line = box.stdout.readline()
        assert "ready" in line and p.advertised_name(BOX_ADDRESS) in line, line
        # melisma-device pair talks to the running service over its control socket
        assert device_main(["pair", "--data-dir", str(tmp_path / "box"), "--seconds", "5"]) == 0
        assert "pairing window open" in capsys.readouterr().out
        dump = subprocess.run([sys.executable, "-m", "bumble.apps.gatt_dump", f"tcp-client:127.0.0.1:{port2}",
                               BOX_ADDRESS], capture_output=True, text=True, timeout=60)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    out = dump.stdout.upper()
    assert "180A" in out and "DEVICE INFORMATION" in out, dump.stdout[-2000:] + dump.stderr[-2000:]
    assert p.MELISMA_SERVICE_UUID.upper() in out
    assert p.software_revision().encode().hex().upper() in out  # the DIS value was readable
    assert "INSUFFICIENT_ENCRYPTION" in out  # and the Melisma values were not, without a bond
