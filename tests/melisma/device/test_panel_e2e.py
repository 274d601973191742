"""End to end: the real panel firmware (tools/panel-sim on the MicroPython unix port, over a
pseudo-terminal) joined to the real box (MelismaBox + PanelBridge) with a Bumble central on a
virtual link. The engine is a small real one that copies the take in steps (the mixing engine
itself is tested elsewhere); everything between the panel's pins and the central's GATT is real.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bumble.controller import Controller
from bumble.core import UUID
from bumble.device import Device, DeviceConfiguration, Peer
from bumble.keys import MemoryKeyStore
from bumble.link import LocalLink
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.transport.common import AsyncPipeSink
from melisma import protocol as p
from melisma.device.ble_server import MelismaBox, local_link_hci
from melisma.device.panel_bridge import PanelBridge, PanelSettings

ROOT = Path(__file__).resolve().parents[3]
PANEL_SIM = ROOT / "tools" / "panel-sim"
BOX = "F0:00:00:00:00:AA"
CENTRAL = "C0:00:00:00:00:77"


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class StepEngine:
    """Copies the take to the output in steps, reporting progress; remembers what it mixed."""

    def __init__(self, steps: int = 6, step_s: float = 0.25):
        self.steps, self.step_s = steps, step_s
        self.mixed: list[tuple[str, str, str]] = []

    def mix(self, take, backing, out, *, style, sliders, progress):
        for i in range(self.steps):
            progress("render", i / self.steps)
            time.sleep(self.step_s)
        out.write_bytes(take.read_bytes() + backing.read_bytes())
        self.mixed.append((take.name, backing.name, style))
        progress("done", 1.0)
        return {}


class Sim:
    """tools/panel-sim as a child process: commands in, display lines collected."""

    def __init__(self, proc, path: str):
        self.proc = proc
        self.path = path
        self.lines: list[str] = []
        self.changed = asyncio.Event()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, *args: str) -> Sim:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(PANEL_SIM), *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=dict(os.environ, MELISMA_MICROPYTHON=str(Path(sys.executable).parent / "micropython")))
        first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().split()
        assert first[0] == "PTY", first
        return cls(proc, first[1])

    async def _read(self) -> None:
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                break
            self.lines.append(raw.decode().rstrip("\n"))
            self.changed.set()

    async def send(self, command: str) -> None:
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()

    def mark(self) -> int:
        return len(self.lines)

    async def expect(self, pattern: str, since: int = 0, timeout: float = 15) -> re.Match:
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        i = since
        while True:
            while i < len(self.lines):
                m = rx.search(self.lines[i])
                if m:
                    return m
                i += 1
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r}; last lines:\n" + "\n".join(self.lines[-15:]))
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    async def do(self, command: str, timeout: float = 30) -> int:
        """Send a command and wait for its OK; returns the index where its effects start."""
        mark = self.mark()
        await self.send(command)
        await self.expect("^OK " + re.escape(command) + "$", mark, timeout)
        return mark

    async def close(self) -> list[str]:
        if self.proc.returncode is None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self.send("quit")
            await asyncio.wait_for(self.proc.wait(), 10)
        await self.reader
        return self.lines


class KeypadDelegate(PairingDelegate):
    """The phone user: types the passkey read off the panel's OLED."""

    def __init__(self, read_passkey):
        super().__init__(io_capability=PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY)
        self.read_passkey = read_passkey
        self.typed: list[int] = []

    async def get_number(self):
        number = await self.read_passkey()
        self.typed.append(number)
        return number


async def central_on(link, read_passkey):
    controller = Controller("central", link=link, public_address=CENTRAL)
    config = DeviceConfiguration()
    config.load_from_dict({"address": CENTRAL})
    central = Device.from_config_with_hci(config, controller, AsyncPipeSink(controller))
    central.keystore = MemoryKeyStore()
    delegate = KeypadDelegate(read_passkey)
    central.pairing_config_factory = lambda c: PairingConfig(
        sc=True, mitm=True, bonding=True, delegate=delegate, identity_address_type=PairingConfig.AddressType.RANDOM)
    await central.power_on()
    return central, delegate


def green_count(line: str) -> int:
    return line.split()[2:].count("00FF00")


def test_panel_pairs_turns_mixes_and_survives_unplug(tmp_path):
    engine = StepEngine()

    async def main():
        link_path = str(tmp_path / "panel-tty")
        sim = await Sim.start("--link", link_path)
        assert sim.path == link_path
        bridge = PanelBridge(PanelSettings(path=link_path, reconnect_s=0.2))
        shown: list[int] = []
        link = LocalLink()
        src, sink = local_link_hci(link, BOX)
        box = MelismaBox(src, sink, data_dir=tmp_path / "box", address=BOX, engine=engine,
                         show_passkey=bridge.passkey_display(shown.append))
        await box.start()
        await bridge.start(box)
        out = {}
        try:
            await sim.expect(r"^LINK up Melisma-00AA melisma/")
            await sim.expect(r"^OLED Melisma\s+neutral\|.*> Warmth\s+\+0\.00")

            # --- a central that is refused before the button, and pairs after it
            async def read_passkey():
                m = await sim.expect(r"^OLED .*\|\s+(\d{3}) (\d{3})\|", since=pair_mark)
                return int(m.group(1) + m.group(2))

            central, delegate = await central_on(link, read_passkey)
            connection = await central.connect(BOX)
            refused = None
            try:
                await connection.pair()
            except Exception as exc:  # Bumble raises its pairing failure
                refused = exc
            box_side = next(iter(box.device.connections.values()))  # the box's end of the link
            out["refused"] = refused is not None and not box.is_bonded(box_side)
            pair_mark = sim.mark()
            await sim.do("press pair")
            await sim.expect(r"^LEDS pairing ", pair_mark)
            await sim.expect(r"^OLED .*Pair open\s+[12]:\d\d", pair_mark)
            out["window_open"] = box.pairing_window.is_open
            await connection.pair()
            out["typed"], out["shown"] = list(delegate.typed), list(shown)
            await sim.expect(r"^LEDS bonded ", pair_mark)  # the box told the panel once the bond was stored
            out["bonded"] = box.is_bonded(box_side)

            # --- the knob moves the selected slider; the bonded central is told
            peer = Peer(connection)
            await peer.discover_all()
            controls_char = peer.get_characteristics_by_uuid(UUID(p.CONTROLS_CHAR_UUID))[0]
            notified: list[p.Controls] = []
            await peer.subscribe(controls_char, lambda data: notified.append(p.decode(data)))
            mark = await sim.do("turn +3")
            await sim.expect(r"^OLED .*> Warmth\s+\+0\.15", mark)
            for _ in range(50):
                if notified and notified[-1].sliders["warmth"] == 0.15:
                    break
                await asyncio.sleep(0.05)
            out["notified"] = [c.sliders["warmth"] for c in notified]
            out["box_warmth"] = box.controls.sliders["warmth"]
            mark = await sim.do("press knob")
            await sim.expect(r"^OLED .*> Reverb\s+\+0\.00", mark)
            mark = await sim.do("turn -2")
            await sim.expect(r"^OLED .*> Reverb\s+-0\.10", mark)
            out["box_reverb"] = box.controls.sliders["reverb"]
            mark = await sim.do("double knob")  # a double press puts the selected slider back to the centre
            await sim.expect(r"^OLED .*> Reverb\s+\+0\.00", mark)
            out["reverb_after_double"] = box.controls.sliders["reverb"]

            # --- Mix: a one-tap mix of the newest take over the newest backing, progress on the LEDs
            storage = box.storage
            for kind, name, age in ((p.FileKind.TAKE, "take-old.wav", 100), (p.FileKind.TAKE, "take-new.wav", 10),
                                    (p.FileKind.BACKING, "backing-a.wav", 50)):
                path = storage.path(kind, name)
                path.write_bytes(name.encode())
                os.utime(path, (time.time() - age, time.time() - age))
            mark = await sim.do("press mix")
            await sim.expect(r"^LEDS done ", mark, timeout=30)
            progress = [green_count(line) for line in sim.lines[mark:] if line.startswith("LEDS progress ")]
            out["progress"] = progress
            out["mixes"] = [e.name for e in storage.list(p.FileKind.MIX)]

            # --- a long press on Pair closes the window; the input level shows while recording
            mark = await sim.do("hold pair 1")
            await sim.expect(r"^OLED .*pairing closed", mark)
            out["window_after_hold"] = box.pairing_window.is_open
            mark = sim.mark()
            bridge.set_level(-6.0, "rec")
            level = await sim.expect(r"^LEDS level ", mark)
            out["level_lit"] = 12 - level.string.split()[2:].count("000000")
            await sim.expect(r"^OLED .*\|In rec\s+-6 dB\|", mark)
            mark = sim.mark()
            bridge.set_level(None)
            await sim.expect(r"^LEDS slider ", mark)

            # --- unplug the panel (its terminal closes) and plug it back in
            mark = await sim.do("unplug")
            for _ in range(100):
                if not bridge.connected:
                    break
                await asyncio.sleep(0.05)
            out["after_unplug"] = (bridge.connected, bridge.alive)
            mark = await sim.do("plug")
            await sim.expect(r"^LINK up Melisma-00AA", mark, timeout=20)
            await sim.expect(r"^OLED .*> Warmth\s+\+0\.15", mark)  # the box sent its state again
            mark = await sim.do("turn -1")
            await sim.expect(r"^OLED .*> Warmth\s+\+0\.10", mark)
            out["sessions"] = bridge.sessions
            out["after_replug_warmth"] = box.controls.sliders["warmth"]
            await connection.disconnect()
        finally:
            await sim.close()
            await bridge.stop()
            await box.stop()
        return out

    out = run(main())
    assert out["refused"] and out["window_open"] and out["bonded"]
    assert len(out["shown"]) == 1 and out["typed"] == out["shown"]  # the passkey the panel showed is the box's
    assert out["box_warmth"] == 0.15 and 0.15 in out["notified"]
    assert out["box_reverb"] == -0.1
    assert out["reverb_after_double"] == 0.0
    assert engine.mixed == [("take-new.wav", "backing-a.wav", "neutral")]
    assert out["mixes"] == ["take-new-mix.m4a"]
    # the LEDs followed the job: several progress frames, never going back, from empty to nearly full
    assert len(out["progress"]) >= 3 and out["progress"] == sorted(out["progress"])
    assert out["progress"][0] <= 2 and out["progress"][-1] >= 8
    assert out["window_after_hold"] is False
    assert out["level_lit"] == 10  # -6 dBFS on a -60..0 meter of 12 LEDs
    assert out["after_unplug"] == (False, False)
    assert out["sessions"] == 2 and out["after_replug_warmth"] == 0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_melisma_device_run_with_panel_option_joins_the_simulator(tmp_path):
    """`melisma-device run --panel <pty>` as a process, on a virtual controller over TCP."""
    port, spare = _free_port(), _free_port()
    controllers = subprocess.Popen([sys.executable, "-m", "bumble.apps.controllers", f"tcp-server:127.0.0.1:{port}",
                                    f"tcp-server:127.0.0.1:{spare}"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def main():
        sim = await Sim.start()
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.1)
        box = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "melisma.device.service", "run", "--transport", f"tcp-client:127.0.0.1:{port}",
            "--address", "F0:AA:BB:CC:DD:02", "--data-dir", str(tmp_path / "box"), "--panel", sim.path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        try:
            ready = (await asyncio.wait_for(box.stdout.readline(), 30)).decode()
            await sim.expect(r"^LINK up Melisma-DD02 melisma/", timeout=20)
            mark = await sim.do("press pair")
            await sim.expect(r"^OLED .*Pair open\s+[12]:\d\d", mark)
            mark = await sim.do("press mode")
            await sim.expect(r"^OLED Melisma\s+cpop\|", mark)
        finally:
            if box.returncode is None:
                box.terminate()
            await box.wait()
            await sim.close()
        return ready

    try:
        ready = run(main(), 90)
    finally:
        controllers.terminate()
        controllers.wait(10)
    assert "ready" in ready


def test_hold_pair_calibrates_and_hold_mix_stops_it(tmp_path):
    """The real panel firmware (MicroPython) held on Pair for 3 s starts the box's loopback
    calibration on real PortAudio streams (JACK dummy server); with the loop wired it is measured
    and stored; a second one, with no loop, is stopped by holding Mix."""
    import shutil
    import threading

    from melisma.device.audio.calibrate import CalibrationStore

    from tools.jack_dummy import JackDummy

    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (Debian's jackd2; `tools/run test` installs it)")

    async def main(jack):
        link_path = str(tmp_path / "panel-tty")
        sim = await Sim.start("--link", link_path)
        bridge = PanelBridge(PanelSettings(path=link_path, reconnect_s=0.2))
        link = LocalLink()
        src, sink = local_link_hci(link, BOX)
        box = MelismaBox(src, sink, data_dir=tmp_path / "box", address=BOX, engine=StepEngine())
        await box.start()
        await bridge.start(box)
        modes: list[p.AudioMode] = []
        box.audio.listeners.append(lambda st: modes.append(st.mode))
        out = {}
        try:
            await sim.expect(r"^LINK up Melisma-00AA melisma/")

            def wire():
                for _ in range(100):
                    try:
                        jack.loop_portaudio()
                        return
                    except RuntimeError:
                        time.sleep(0.1)

            mark = await sim.do("hold pair 3.3")
            await sim.expect(r"^OLED .*calibrating", mark)
            threading.Thread(target=wire, daemon=True).start()
            for _ in range(300):
                await asyncio.sleep(0.1)
                if not box.audio.busy and p.AudioMode.CALIBRATING in modes:
                    break
            status = box.audio.status()
            out["first"] = (status.error, status.round_trip_ms, bool(status.flags & p.AudioFlags.CALIBRATED))
            out["stored"] = len(CalibrationStore(tmp_path / "box").load_all())

            modes.clear()
            mark = await sim.do("hold pair 3.3")  # no loop this time: it would send for 20 s
            await sim.expect(r"^OLED .*calibrating", mark)
            t0 = time.monotonic()
            mark = await sim.do("hold mix 1")
            await sim.expect(r"^OLED .*calib stopped", mark)
            for _ in range(100):
                await asyncio.sleep(0.05)
                if not box.audio.busy:
                    break
            out["stop_took"] = time.monotonic() - t0
            out["second"] = (box.audio.status().detail, box.audio.last_calibration.stopped)
        finally:
            await sim.close()
            await bridge.stop()
            await box.stop()
        return out

    with JackDummy(rate=48000, period=256) as jack:
        out = run(main(jack), timeout=180)
    err, rt, calibrated = out["first"]
    assert err is p.ErrorCode.OK and calibrated
    assert rt == pytest.approx(1000 * (256 + 128) / 48000, abs=0.5)
    assert out["stored"] == 1
    assert out["second"] == ("calibration stopped", True)
    assert out["stop_took"] < 5.0
