"""The box side of the front panel: ``melisma-device run --panel PATH`` talks to the Pico.

The panel (firmware/panel, MicroPython on a Raspberry Pi Pico) sends knob turns and button
gestures over USB serial; the bridge turns them into the box's actions and sends back what the
panel should show. The line protocol (version 1.0) is in firmware/docs/panel.md; the panel's own
implementation is firmware/panel/mpanel/protocol.py and a test keeps the two in step.

What the panel does with the box:

* the knob moves the slider selected on the panel (``turn warmth +2``: two detents of
  :attr:`PanelSettings.step`); a central that is subscribed sees the controls notification;
* **Mix** runs a one-tap mix of the newest take with the newest backing (hold Mix: cancel the job);
* **Pair** opens the pairing window (hold Pair: close it); the passkey goes to the panel;
* **Mode** switches the style preset (hold: the previous one); a double press on the knob puts the
  selected slider back to the centre;
* job progress, pairing state, errors and the input level (:meth:`PanelBridge.set_level`) go to
  the LEDs and the OLED.

The bridge opens the serial port, says hello, and keeps a heartbeat both ways. When the panel is
unplugged (the port reads EOF/EIO) or the port is missing, it retries every
:attr:`PanelSettings.reconnect_s` without disturbing the rest of the box.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from .. import protocol as p
from ..errors import ConfigError, DeviceError, MelismaError
from .jobs import Job, JobError
from .storage import FOLDERS

logger = logging.getLogger(__name__)

#: Panel line protocol version spoken here (firmware/docs/panel.md).
PANEL_PROTOCOL = "1.0"
PANEL_PROTOCOL_MAJOR = 1
#: Longest line, newline included.
MAX_LINE = 160
#: USB vendor:product of MicroPython on a Raspberry Pi Pico / Pico W / Pico 2.
PICO_USB_IDS = ("2e8a:0005",)
#: While the panel is silent, the box says hello this often.
HELLO_RETRY_S = 3.0
#: Progress-only job updates go to the panel at most this often.
PROGRESS_INTERVAL_S = 0.1
#: Level updates go at most this often.
LEVEL_INTERVAL_S = 0.05

_JOB_STATES = {p.JobState.NONE: "idle", p.JobState.QUEUED: "queued", p.JobState.RUNNING: "running",
               p.JobState.DONE: "done", p.JobState.FAILED: "failed", p.JobState.CANCELLED: "cancelled"}
_TEXT_AFTER = {"err": 0, "ack": 2}


class PanelError(DeviceError):
    """The front panel link failed, a panel line is malformed, or a panel request was refused.

    ``panel_text`` is the short form the panel shows (its OLED has 16 characters a line).
    """

    def __init__(self, message: str, panel_text: str = ""):
        super().__init__(message)
        self.panel_text = panel_text


@dataclasses.dataclass(frozen=True)
class PanelSettings:
    """How the box finds and drives its front panel (the ``[panel]`` part of the box's settings).

    Parameters
    ----------
    path : str or None
        Serial port of the panel's data channel (``/dev/ttyACM1``, a ``/dev/serial/by-id/...`` link,
        or the pseudo-terminal of ``tools/panel-sim``). None with ``auto_detect`` finds it by USB id.
    auto_detect : bool
        Look for a Pico by :attr:`usb_ids` when ``path`` is None.
    usb_ids : tuple of str
        ``vendor:product`` ids (hex) taken as a panel.
    step : float
        How far one detent moves a slider (sliders run -1..+1).
    heartbeat_s, timeout_s, reconnect_s : float
        Heartbeat period; silence after which the panel counts as gone; wait between attempts
        to open a missing port.
    mix_extension : str
        Format of one-tap mixes (``.m4a``: AAC, small for phones; ``.wav`` for lossless).
    calibrate_timeout_s : float
        How long a calibration started from the panel (hold Pair 3 s) keeps sending (default 20 s).
    """

    path: str | None = None
    auto_detect: bool = False
    usb_ids: tuple[str, ...] = PICO_USB_IDS
    step: float = 0.05
    heartbeat_s: float = 1.0
    timeout_s: float = 3.5
    reconnect_s: float = 1.0
    mix_extension: str = ".m4a"
    calibrate_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if self.path is None and not self.auto_detect:
            raise ConfigError("panel: give a serial port (--panel /dev/ttyACM1) or --panel auto to find it by USB id")
        if not 0.01 <= self.step <= 0.5:
            raise ConfigError(f"panel step {self.step!r} is out of range; use 0.01..0.5 (a slider runs -1..+1)")
        for name in ("heartbeat_s", "timeout_s", "reconnect_s"):
            value = getattr(self, name)
            if not 0.05 <= value <= 60:
                raise ConfigError(f"panel {name} {value!r} is out of range; use 0.05..60 seconds")
        if self.timeout_s <= self.heartbeat_s:
            raise ConfigError(f"panel timeout_s {self.timeout_s} must be longer than heartbeat_s {self.heartbeat_s}")
        if self.mix_extension not in p.AUDIO_EXTENSIONS:
            raise ConfigError(f"panel mix_extension {self.mix_extension!r}; use one of {', '.join(p.AUDIO_EXTENSIONS)}")
        for usb_id in self.usb_ids:
            vendor, _, product = usb_id.partition(":")
            if len(vendor) != 4 or len(product) != 4 or not _is_hex(vendor + product):
                raise ConfigError(f"panel USB id {usb_id!r} is not vendor:product in hex, e.g. 2e8a:0005")

    @classmethod
    def from_option(cls, value: str, **kwargs) -> PanelSettings:
        """Settings from ``--panel VALUE``: a port path, or ``auto`` to find a Pico by USB id."""
        if value == "auto":
            return cls(path=None, auto_detect=True, **kwargs)
        return cls(path=value, **kwargs)


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# The line protocol (the same rules as firmware/panel/mpanel/protocol.py)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF); ``crc16(b"123456789") == 0x29B1``."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def clean_token(text: str, limit: int = 24) -> str:
    """One protocol token: printable ASCII without spaces or ``*``."""
    out = "".join(c if 33 <= ord(c) <= 126 and c != "*" else "-" for c in str(text))
    return out[:limit] or "-"


def clean_text(text: str, limit: int = 100) -> str:
    """Free text for the last field of ``err``/``ack``: printable ASCII without ``*``."""
    return "".join(c if 32 <= ord(c) <= 126 and c != "*" else "?" for c in str(text)).strip()[:limit]


def encode_line(seq: int, verb: str, args: list[str] | tuple[str, ...] = ()) -> bytes:
    """``<seq> <verb> <args...> *<CRC>\\n``; raise PanelError if it would be unsafe or too long."""
    body = " ".join([str(seq % 65536), verb, *(str(a) for a in args if str(a))])
    raw = body.encode("ascii", "replace")
    if any(b < 32 or b > 126 or b == 42 for b in raw):
        raise PanelError(f"panel line {body!r} has a byte that is not printable ASCII or is '*'")
    line = raw + f" *{crc16(raw):04X}\n".encode()
    if len(line) > MAX_LINE:
        raise PanelError(f"panel line of {len(line)} bytes is longer than {MAX_LINE}; shorten its text")
    return line


def decode_line(line: bytes) -> tuple[int, str, list[str]]:
    """``(seq, verb, args)`` of a good line; raise :class:`PanelError` naming what is wrong."""
    if len(line) > MAX_LINE:
        raise PanelError(f"panel line of {len(line)} bytes is longer than {MAX_LINE}")
    raw = line.rstrip(b"\r\n")
    star = raw.rfind(b" *")
    if star < 0 or len(raw) - star != 6:
        raise PanelError("panel line has no ' *CRC' at its end")
    body = raw[:star]
    try:
        want = int(raw[star + 2:], 16)
        text = body.decode("ascii")
    except (ValueError, UnicodeError):
        raise PanelError("panel line has a CRC that is not hex, or is not ASCII") from None
    if crc16(body) != want:
        raise PanelError(f"panel line CRC {crc16(body):04X} does not match its {want:04X}")
    head = text.split(" ", 2)
    if len(head) < 2 or not head[0].isdigit() or int(head[0]) > 65535:
        raise PanelError("panel line does not start with a sequence number 0..65535 and a verb")
    verb, rest = head[1], (head[2] if len(head) > 2 else "")
    if verb in _TEXT_AFTER:
        n = _TEXT_AFTER[verb]
        tokens = rest.split(" ", n) if rest else []
        args = [*tokens[:n], tokens[n]] if len(tokens) > n else tokens
    else:
        args = rest.split()
    return int(head[0]), verb, args


# ----------------------------------------------------------------------------------------------
# Finding the panel by USB id


def find_panel_port(usb_ids: tuple[str, ...] = PICO_USB_IDS, *, sysfs: str | os.PathLike = "/sys/class/tty",
                    dev: str | os.PathLike = "/dev") -> str | None:
    """The serial port of a connected panel, or None.

    A Pico running the panel has two USB serial interfaces: the REPL (interface 0) and the data
    channel (interface 2); the one with the highest interface number is taken. ``sysfs`` and
    ``dev`` are the folders to look in (tests give a tree shaped like sysfs).
    """
    wanted = {u.lower() for u in usb_ids}
    best: tuple[int, str] | None = None
    root = Path(sysfs)
    if not root.is_dir():
        return None
    for entry in sorted(root.iterdir()):
        if not (entry.name.startswith("ttyACM") or entry.name.startswith("ttyUSB")):
            continue
        with contextlib.suppress(OSError, ValueError):
            interface = (entry / "device").resolve()
            usb_device = interface.parent
            ident = f"{(usb_device / 'idVendor').read_text().strip()}:{(usb_device / 'idProduct').read_text().strip()}"
            if ident.lower() not in wanted:
                continue
            number = int((interface / "bInterfaceNumber").read_text().strip(), 16)
            if best is None or number > best[0]:
                best = (number, str(Path(dev) / entry.name))
    return best[1] if best else None


# ----------------------------------------------------------------------------------------------
# The bridge


class PanelBridge:
    """Joins a :class:`~melisma.device.ble_server.MelismaBox` to its front panel.

    Create it before the box (so its :meth:`passkey_display` can be given to the box), then
    ``await bridge.start(box)``; ``await bridge.stop()`` at the end.
    """

    def __init__(self, settings: PanelSettings, *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.clock = clock
        self.box: Any = None  # the MelismaBox, from start()
        self.port: str | None = None
        self.connected = False  # the port is open
        self.alive = False  # the panel answered and is heard from
        self.panel_software = ""
        self.panel_caps: list[str] = []
        self.bad_lines = 0
        self.lost_lines = 0
        self.sessions = 0  # times the panel was (re)joined
        self._fd: int | None = None
        self._buffer = b""
        self._seq = 0
        self._expected = -1
        self._last_rx = 0.0
        self._last_tx = 0.0
        self._last_hello = 0.0
        self._gone = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._panel_job: Job | None = None
        self._job_line: list[str] = []
        self._job_sent = 0.0
        self._job_flush: asyncio.TimerHandle | None = None
        self._pair_timer: asyncio.TimerHandle | None = None
        self._level: list[str] = ["off"]
        self._level_sent = 0.0
        self._passkey_next: Callable[[int], None] | None = None
        self._opened_logged = False

    # -- life cycle -----------------------------------------------------------------------

    def passkey_display(self, also: Callable[[int], None] | None = None) -> Callable[[int], None]:
        """A ``show_passkey`` for the box: sends the passkey to the panel (and calls ``also``)."""
        self._passkey_next = also

        def show(passkey: int) -> None:
            self.send("pair", ["passkey", f"{passkey:06d}"])
            if self._passkey_next is not None:
                self._passkey_next(passkey)

        return show

    async def start(self, box) -> None:
        """Attach to ``box`` (its jobs, controls, pairing window) and start talking to the panel."""
        self.box = box
        box.jobs.listeners.append(self._on_status)
        box.pairing_window.listeners.append(self._on_pairing_window)
        listeners = getattr(box, "controls_listeners", None)
        if listeners is not None:
            listeners.append(lambda controls: self.send_controls())
        audio = getattr(box, "audio", None)
        if audio is not None:  # the box's own audio: its input meter drives the panel's level LEDs
            audio.listeners.append(self.on_audio_status)
        box.device.on("connection", self._on_connection)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="melisma-panel")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._close()
        for handle in (self._job_flush, self._pair_timer):
            if handle is not None:
                handle.cancel()

    # -- the port ---------------------------------------------------------------------------

    def _resolve(self) -> str | None:
        if self.settings.path is not None:
            return self.settings.path
        return find_panel_port(self.settings.usb_ids)

    def _open(self, path: str) -> int:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            if os.isatty(fd):
                import termios
                import tty

                tty.setraw(fd)
                termios.tcflush(fd, termios.TCIFLUSH)  # lines from before we opened are stale
        except (OSError, ImportError):
            os.close(fd)
            raise
        return fd

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            path = self._resolve()
            fd = None
            if path is not None:
                try:
                    fd = self._open(path)
                except OSError as exc:
                    if not self._opened_logged:
                        logger.warning("front panel: cannot open %s (%s); retrying every %.0f s", path,
                                       exc.strerror or exc, self.settings.reconnect_s)
                        self._opened_logged = True
            if fd is None:
                await asyncio.sleep(self.settings.reconnect_s)
                continue
            self._opened_logged = False
            self._fd, self.port, self.connected = fd, path, True
            self._buffer = b""
            self._gone = asyncio.Event()
            loop.add_reader(fd, self._readable)
            logger.info("front panel port %s open", path)
            self._say_hello()
            try:
                while not self._gone.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._gone.wait(), self.settings.heartbeat_s / 4)
                    self._tick()
            finally:
                self._close()
            logger.info("front panel on %s gone; waiting for it to come back", path)
            await asyncio.sleep(self.settings.reconnect_s)

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self.connected = False
        self.alive = False

    def _readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # EOF or EIO: unplugged (or the simulator closed its terminal)
            self._gone.set()
            if self._fd is not None:
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().remove_reader(self._fd)
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._on_line(line + b"\n")
        if len(self._buffer) > MAX_LINE:
            self._buffer = b""
            self.bad_lines += 1

    def send(self, verb: str, args: list[str] | tuple[str, ...] = ()) -> bool:
        """Send one line to the panel; False when there is no panel (or its buffer is full)."""
        if self._fd is None:
            return False
        line = encode_line(self._seq, verb, args)
        self._seq = (self._seq + 1) % 65536
        try:
            os.write(self._fd, line)
        except BlockingIOError:
            return False  # the panel is not reading: drop (the heartbeat tells)
        except OSError:
            self._gone.set()
            return False
        self._last_tx = self.clock()
        return True

    def _say_hello(self, verb: str = "hello") -> None:
        self._last_hello = self.clock()
        name = getattr(self.box, "name", "melisma")
        self.send(verb, [PANEL_PROTOCOL, f"melisma/{__version__}", f"name={clean_token(name)}"])

    def _tick(self) -> None:
        now = self.clock()
        if self.alive and now - self._last_rx > self.settings.timeout_s:
            self.alive = False
            logger.warning("front panel silent for %.1f s", now - self._last_rx)
        if not self.alive and now - self._last_hello >= HELLO_RETRY_S:
            self._say_hello()
        elif now - self._last_tx >= self.settings.heartbeat_s:
            self.send("hb", [str(int(now * 1000) % 1_000_000_000)])

    # -- lines from the panel ---------------------------------------------------------------

    def _on_line(self, line: bytes) -> None:
        try:
            seq, verb, args = decode_line(line)
        except PanelError as exc:
            self.bad_lines += 1
            logger.debug("front panel: dropped a line (%s)", exc)
            return
        if verb != "hello" and self._expected >= 0 and seq != self._expected:
            self.lost_lines += (seq - self._expected) % 65536
        self._expected = (seq + 1) % 65536
        self._last_rx = self.clock()
        if verb in ("hello", "welcome"):
            self._meet(verb, args)
            return
        if verb == "hb":
            if not self.alive:
                self._say_hello()  # the panel talks but we have not met (it missed our hello)
            return
        if not self.alive:
            return
        try:
            text = self._event(verb, args)
        except (JobError, PanelError, p.MessageError, ValueError) as exc:
            logger.info("front panel %s %s refused: %s", verb, " ".join(args), exc)
            self.send("ack", [str(seq), "err", clean_text(getattr(exc, "panel_text", None) or str(exc), 60)])
        else:
            self.send("ack", [str(seq), "ok", *([clean_text(text, 16)] if text else [])])

    def _meet(self, verb: str, args: list[str]) -> None:
        if verb == "hello":
            self._say_hello("welcome")
        version = args[0] if args else "?"
        self.panel_software = args[1] if len(args) > 1 else "?"
        self.panel_caps = next((a[5:].split(",") for a in args[2:] if a.startswith("caps=")), [])
        if version.split(".")[0] != str(PANEL_PROTOCOL_MAJOR):
            logger.error("front panel speaks protocol %s, the box %s: reflash it with tools/flash-panel",
                         version, PANEL_PROTOCOL)
            self.send("err", [f"panel protocol {version}, box {PANEL_PROTOCOL}: reflash"])
            self.alive = False
            return
        first = not self.alive
        self.alive = True
        if first:
            self.sessions += 1
            logger.info("front panel %s joined (%s)", self.panel_software, ",".join(self.panel_caps))
        self.send_state()

    def send_state(self) -> None:
        """Everything the panel shows: controls, job, pairing, level."""
        self.send_controls()
        self._job_line = []
        self._on_status(self.box.jobs.status())
        self._on_pairing_window(self.box.pairing_window.is_open)
        self.send("level", self._level)

    def send_controls(self) -> None:
        controls = self.box.controls
        self.send("ctl", [controls.style.engine_name,
                          *(f"{name}={round(value * 100)}" for name, value in controls.sliders.items())])

    def _event(self, verb: str, args: list[str]) -> str:
        if verb == "turn":
            if len(args) != 2:
                raise PanelError("turn needs a slider and a signed number of detents")
            return self._turn(args[0], int(args[1]))
        if verb == "key":
            if len(args) < 2:
                raise PanelError("key needs a button and a gesture")
            return self._key(args[0], args[1], args[2] if len(args) > 2 else "")
        raise PanelError(f"unknown panel event {verb!r}; this box knows turn and key")

    def _turn(self, slider: str, detents: int) -> str:
        controls = self.box.controls
        if slider not in controls.sliders:
            raise PanelError(f"no slider {slider!r}; the sliders are {', '.join(p.SLIDER_NAMES)}", "unknown slider")
        value = min(1.0, max(-1.0, controls.sliders[slider] + detents * self.settings.step))
        sliders = dict(controls.sliders, **{slider: round(value * 100) / 100})
        self.box.set_controls(p.Controls(controls.style, sliders))
        return ""

    def _key(self, button: str, gesture: str, slider: str) -> str:
        box = self.box
        if button == "mix" and gesture == "press":
            return self.one_tap_mix()
        if button == "pair" and gesture == "hold":
            return self.calibrate()
        if button == "mix" and gesture == "long" and self._calibrating():
            return self.stop_calibration()
        if button == "mix" and gesture == "long":
            job = box.jobs.current
            if job is None:
                raise PanelError("no job is running; nothing to cancel", "nothing to cancel")
            box.jobs.cancel(job.id)
            return "cancelled"
        if button == "pair" and gesture == "press":
            box.pairing_window.open(p.PAIRING_WINDOW_S)
            return ""
        if button == "pair" and gesture == "long":
            box.pairing_window.close()
            return "pairing closed"
        if button == "mode" and gesture in ("press", "long"):
            styles = list(p.Style)
            i = styles.index(box.controls.style) + (1 if gesture == "press" else -1)
            style = styles[i % len(styles)]
            box.set_controls(p.Controls(style, box.controls.sliders))
            return "style " + style.engine_name
        if button == "knob" and gesture == "double" and slider in box.controls.sliders:
            box.set_controls(p.Controls(box.controls.style, dict(box.controls.sliders, **{slider: 0.0})))
            return "centred"
        return ""  # other gestures (knob press/long select a slider on the panel itself)

    # -- latency calibration (hold Pair 3 s; hold it again, or hold Mix, to stop) -------------

    def _calibrating(self) -> bool:
        audio = getattr(self.box, "audio", None)
        return audio is not None and audio.busy and audio.status().mode is p.AudioMode.CALIBRATING

    def calibrate(self) -> str:
        """Start the box's loopback latency calibration (the BLE AudioCalibrate), or stop a running one."""
        audio = getattr(self.box, "audio", None)
        if audio is None:
            raise PanelError("this box has no audio of its own configured", "no audio")
        if self._calibrating():
            return self.stop_calibration()
        try:
            audio.command(p.AudioCalibrateCommand(0, timeout_s=self.settings.calibrate_timeout_s))
        except MelismaError as exc:
            raise PanelError(f"calibration not started: {exc}", "audio busy" if audio.busy else "no audio") from None
        logger.info("front panel: latency calibration started (loop the output to the input)")
        return "calibrating"

    def stop_calibration(self) -> str:
        """Stop a running calibration (nothing is stored)."""
        audio = self.box.audio
        audio.stop()
        logger.info("front panel: latency calibration stopped")
        return "calib stopped"

    # -- one-tap mix ------------------------------------------------------------------------

    def _newest(self, kind: p.FileKind) -> str | None:
        folder = self.box.storage.root / FOLDERS[kind]
        best: tuple[int, str] | None = None
        for path in folder.iterdir():
            if not path.is_file() or path.name.startswith("."):
                continue
            try:
                p.check_name(path.name, kind)
                key = (path.stat().st_mtime_ns, path.name)
            except (OSError, p.MessageError):
                continue
            if best is None or key > best:
                best = key
        return best[1] if best else None

    def _mix_name(self, take: str) -> str:
        stem = take.rsplit(".", 1)[0][: p.MAX_NAME_LENGTH - 16]
        ext = self.settings.mix_extension
        for n in range(1, 10000):
            name = f"{stem}-mix{ext}" if n == 1 else f"{stem}-mix{n}{ext}"
            if not self.box.storage.path(p.FileKind.MIX, name).exists():
                return name
        raise PanelError(f"too many mixes of {take}; delete some")

    def one_tap_mix(self) -> str:
        """Queue a mix of the newest take over the newest backing with the current controls."""
        job = self._panel_job
        if job is not None and not job.state.finished:
            raise PanelError(f"mix job {job.id} is still {job.state.name.lower()} ({job.progress:.0%}); "
                             "hold Mix to cancel it", f"busy {job.progress:.0%}")
        take, backing = self._newest(p.FileKind.TAKE), self._newest(p.FileKind.BACKING)
        if take is None or backing is None:
            what = "take" if take is None else "backing"
            raise PanelError(f"no {what} on the box; upload one from the app first", f"no {what}")
        out = self._mix_name(take)
        self._panel_job = self.box.jobs.submit(p.JobKind.MIX, take=take, backing=backing, out=out)
        logger.info("front panel: mixing %s over %s into %s (job %d)", take, backing, out, self._panel_job.id)
        return "mix " + take.rsplit(".", 1)[0][:12]

    # -- what the box tells the panel -------------------------------------------------------

    def _on_status(self, status: p.Status) -> None:
        state = _JOB_STATES[status.job_state]
        args = [state]
        if status.job_state is not p.JobState.NONE:
            args += [status.job_kind.name.lower(), str(round(status.progress * 1000)), clean_token(status.stage or "-")]
        if args == self._job_line:
            return
        now = self.clock()
        state_changed = not self._job_line or self._job_line[0] != state
        if state_changed or now - self._job_sent >= PROGRESS_INTERVAL_S:
            self._send_job(args)
            if status.job_state is p.JobState.FAILED and self.box is not None and self.box.jobs.last is not None:
                self.send("err", [clean_text(self.box.jobs.last.detail or "the mix failed", 60)])
        elif self._job_flush is None:
            self._job_flush = asyncio.get_running_loop().call_later(
                PROGRESS_INTERVAL_S, lambda: self._on_status(self.box.jobs.status()))

    def _send_job(self, args: list[str]) -> None:
        if self._job_flush is not None:
            self._job_flush.cancel()
            self._job_flush = None
        if self.send("job", args):
            self._job_line = args
            self._job_sent = self.clock()

    def _on_pairing_window(self, is_open: bool) -> None:
        window = self.box.pairing_window
        if self._pair_timer is not None:
            self._pair_timer.cancel()
            self._pair_timer = None
        if is_open and window.is_open:
            remaining = window.remaining_s
            self.send("pair", ["open", str(max(1, round(remaining)))])
            self._pair_timer = asyncio.get_running_loop().call_later(
                remaining + 0.05, lambda: self._on_pairing_window(window.is_open))
        else:
            self.send("pair", ["closed"])

    def _on_connection(self, connection) -> None:
        connection.on("pairing", lambda *_: asyncio.get_running_loop().call_soon(self._paired, connection))
        connection.on("pairing_failure", lambda *_: self.send("pair", ["failed"]))

    def _paired(self, connection) -> None:
        bonded = str(connection.peer_address) in self.box.bonds.addresses
        self.send("pair", ["bonded" if bonded else "closed"])

    def on_audio_status(self, status: Any) -> None:
        """Follow the box's audio status: the input level while recording or monitoring, else none."""
        from ..protocol import NO_LEVEL_DB, AudioMode

        if status.mode in (AudioMode.RECORDING, AudioMode.MONITORING) and status.input_level_db > NO_LEVEL_DB:
            self.set_level(float(status.input_level_db), "rec" if status.mode == AudioMode.RECORDING else "mon")
        else:
            self.set_level(None)

    def set_level(self, dbfs: float | None, source: str = "mon") -> None:
        """Show the input level (dBFS) on the panel while monitoring or recording; None hides it."""
        args = ["off"] if dbfs is None else [str(round(max(-99.0, min(0.0, dbfs)) * 10)), clean_token(source, 8)]
        now = self.clock()
        if args == self._level or (dbfs is not None and self._level != ["off"]
                                   and now - self._level_sent < LEVEL_INTERVAL_S):
            return
        self._level = args
        self._level_sent = now
        self.send("level", args)


__all__ = [
    "PANEL_PROTOCOL",
    "PICO_USB_IDS",
    "PanelBridge",
    "PanelError",
    "PanelSettings",
    "crc16",
    "decode_line",
    "encode_line",
    "find_panel_port",
]
