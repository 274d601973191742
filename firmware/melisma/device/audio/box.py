"""The box's audio as the BLE service drives it: one activity at a time on a worker thread.

:class:`BoxAudio` runs calibrate / record / monitor / play (protocol 1.1 audio commands) on a
thread of its own (PortAudio calls block), keeps an :class:`melisma.protocol.AudioStatus` with
level meters, xruns, the calibrated round trip and the Bluetooth-output warning, and hands
every change to its listeners on the asyncio loop (``call_soon_threadsafe``). The monitor
follows the box's controls live (:meth:`BoxAudio.on_controls`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ... import protocol as p
from ...errors import AudioDeviceError, MelismaError
from ...semantic import SLIDERS
from ..storage import FOLDERS
from .devices import AudioSettings, pick_device, portaudio

logger = logging.getLogger("melisma.device.audio")


class AudioBusyError(AudioDeviceError):
    """Another audio activity runs; stop it first."""

    code = p.ErrorCode.BUSY


def _db(level: float) -> int:
    if level <= 0:
        return p.NO_LEVEL_DB
    return max(p.NO_LEVEL_DB, min(0, math.floor(20 * math.log10(level))))


class BoxAudio:
    """Audio activities for the BLE service.

    Parameters
    ----------
    data_dir : path
        Where calibrations are stored.
    storage : melisma.device.storage.Storage
        The library (backings to play, takes to write).
    settings : AudioSettings
        Devices, rate and block size.
    controls : callable
        Returns the box's current :class:`melisma.protocol.Controls` (style and sliders for the monitor).
    """

    def __init__(self, data_dir: str | Path, storage, *, settings: AudioSettings | None = None,
                 controls: Callable[[], p.Controls] | None = None):
        self.data_dir = Path(data_dir)
        self.storage = storage
        self.settings = settings or AudioSettings()
        self.controls = controls or p.Controls
        self.listeners: list[Callable[[p.AudioStatus], None]] = []
        self._status = p.AudioStatus(round_trip_ms=None)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._proc: Any = None
        self._stream: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = 0.0
        self._mode = p.AudioMode.IDLE
        #: The live correction's key for BLE monitoring ("auto": a plan made with the backing, else the
        #: backing's estimated key, else semitones); the last monitor's figures.
        self.live_key: str = "auto"
        self.last_monitor: Any = None
        self.last_calibration: Any = None

    # -- status ---------------------------------------------------------------------------------
    def status(self) -> p.AudioStatus:
        """The current audio status (level meters are live while an activity runs)."""
        return self._status

    def _set(self, **changes) -> None:
        fields = {f: getattr(self._status, f) for f in ("mode", "flags", "input_level_db", "output_level_db",
                                                         "xruns", "round_trip_ms", "elapsed_ms", "error", "detail")}
        fields.update(changes)
        status = p.AudioStatus(**fields)
        if status == self._status:
            return
        self._status = status
        loop = self._loop
        for cb in list(self.listeners):
            if loop is not None and loop.is_running():
                loop.call_soon_threadsafe(cb, status)
            else:
                cb(status)

    def _meter(self) -> None:
        proc, stream = self._proc, self._stream
        if proc is None:
            return
        peak_in = float(getattr(proc, "peak_in", 0.0))
        peak_out = float(getattr(proc, "peak_out", 0.0))
        proc.peak_in = proc.peak_out = 0.0  # the processors hold their peak until read
        flags = self._status.flags & ~p.AudioFlags.CLIPPING
        if peak_in >= 0.999:
            flags |= p.AudioFlags.CLIPPING
        self._set(input_level_db=_db(peak_in), output_level_db=_db(peak_out),
                  xruns=int(stream.xruns) if stream is not None else 0, flags=flags,
                  elapsed_ms=int(1000 * (time.monotonic() - self._started)))

    # -- commands -------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def command(self, msg: p.Message) -> int:
        """Start (or stop) an activity for a 1.1 audio command; returns 0 (no job id). Call on the loop."""
        if isinstance(msg, p.AudioStopCommand):
            self.stop()
            return 0
        if isinstance(msg, p.AudioMonitorCommand) and not msg.on:
            self.stop()
            return 0
        if self.busy:
            raise AudioBusyError(f"audio is busy ({self._mode.name.lower()}); send AudioStop first")
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        target: Callable[..., None]
        args: tuple[Any, ...]
        if isinstance(msg, p.AudioCalibrateCommand):
            target, mode, args = self._calibrate, p.AudioMode.CALIBRATING, (msg.timeout_s,)
        elif isinstance(msg, p.AudioRecordCommand):
            backing = self.storage.existing(p.FileKind.BACKING, msg.backing)
            out = self.storage.path(p.FileKind.TAKE, msg.take)
            if out.exists():
                raise AudioDeviceError(f"take {msg.take!r} already exists; delete it or choose another name")
            target, mode, args = self._record, p.AudioMode.RECORDING, (backing, out, msg.max_seconds or None)
        elif isinstance(msg, p.AudioMonitorCommand):
            backing = self.storage.existing(p.FileKind.BACKING, msg.backing) if msg.backing else None
            target, mode, args = self._monitor, p.AudioMode.MONITORING, (backing, msg.correction)
        elif isinstance(msg, p.AudioPlayCommand):
            path = self.storage.existing(msg.kind, msg.name)
            target, mode, args = self._play, p.AudioMode.PLAYING, (path,)
        else:  # pragma: no cover - the caller only passes AUDIO_COMMANDS
            raise AudioDeviceError(f"not an audio command: {type(msg).__name__}")
        self._stop.clear()
        self._mode = mode
        self._started = time.monotonic()
        self._set(mode=mode, error=p.ErrorCode.OK, detail="", xruns=0, elapsed_ms=0)
        self._thread = threading.Thread(target=self._run, args=(target, args), name=f"audio-{mode.name.lower()}",
                                        daemon=True)
        self._thread.start()
        return 0

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the running activity (a recording keeps what it has) and wait for it."""
        self._stop.set()
        proc = self._proc
        if proc is not None:
            proc.stop_requested = True
        t = self._thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            t.join(timeout_s)

    def on_controls(self, controls: p.Controls) -> None:
        """The app moved a slider or changed the style: the running monitor follows."""
        proc = self._proc
        if self._mode is p.AudioMode.MONITORING and proc is not None and hasattr(proc, "set_settings"):
            sliders = {k: v for k, v in controls.engine_sliders().items() if k in SLIDERS}
            proc.set_settings(controls.style.engine_name, sliders)

    # -- the worker -----------------------------------------------------------------------------
    def _run(self, target, args) -> None:
        try:
            target(*args)
            self._set(mode=p.AudioMode.IDLE)
        except MelismaError as exc:
            logger.warning("audio %s failed: %s", self._mode.name.lower(), exc)
            self._set(mode=p.AudioMode.IDLE, error=getattr(exc, "code", p.ErrorCode.ENGINE_FAILED), detail=str(exc))
        except Exception as exc:  # a bug: report it, never kill the service
            logger.exception("audio %s crashed", self._mode.name.lower())
            self._set(mode=p.AudioMode.IDLE, error=p.ErrorCode.INTERNAL, detail=f"{type(exc).__name__}: {exc}")
        finally:
            self._proc = self._stream = None
            self._mode = p.AudioMode.IDLE

    def _started_cb(self, stream, proc=None) -> None:
        self._stream, self._proc = stream, proc if proc is not None else stream.processor
        flags = self._status.flags & ~p.AudioFlags.BLUETOOTH_OUTPUT
        if stream.output_device.bluetooth:
            flags |= p.AudioFlags.BLUETOOTH_OUTPUT
        self._set(flags=flags, detail="bluetooth output: late" if stream.output_device.bluetooth else "")

    def _poll(self, stream=None) -> bool:
        """Called by the waits: refresh the meters; True to stop."""
        now = time.monotonic()
        if now - getattr(self, "_last_meter", 0.0) >= p.AUDIO_STATUS_INTERVAL_S:
            self._last_meter = now
            self._meter()
        return self._stop.is_set()

    def _calibrate(self, timeout_s: float) -> None:
        from .calibrate import CalibrationStore, calibrate

        s = self.settings
        with portaudio() as pa:
            cal = calibrate(pa, input=s.input, output=s.output, sample_rate=s.sample_rate,
                            frames_per_buffer=s.frames_per_buffer, timeout_s=timeout_s, on_started=self._started_cb,
                            stop=self._poll)
        self.last_calibration = cal
        if cal.stopped and cal.round_trip_frames is None:
            self._set(detail="calibration stopped")  # the user's stop: not an error, nothing stored
            return
        if cal.round_trip_frames is None:
            raise AudioDeviceError("calibration heard nothing: connect the output to the input")
        CalibrationStore(self.data_dir).save(cal)
        flags = self._status.flags | p.AudioFlags.CALIBRATED
        flags &= ~p.AudioFlags.CALIBRATION_RELIABLE
        if cal.reliable:
            flags |= p.AudioFlags.CALIBRATION_RELIABLE
        self._set(round_trip_ms=round(cal.round_trip_ms or 0.0, 2), flags=flags,
                  detail="" if cal.reliable else (cal.warnings[0] if cal.warnings else "unreliable"))

    def _record(self, backing: Path, out: Path, seconds: float | None) -> None:
        from .record import record_take

        s = self.settings
        with portaudio() as pa:
            res = record_take(pa, backing=backing, out=out, data_dir=self.data_dir, seconds=seconds, input=s.input,
                              output=s.output, sample_rate=s.sample_rate, frames_per_buffer=s.frames_per_buffer,
                              on_started=self._record_started)
        self._set(xruns=res.stream.xruns, round_trip_ms=round(res.compensation_ms, 2),
                  detail=res.warnings[0] if res.warnings else "")

    def _record_started(self, stream, proc) -> None:
        self._started_cb(stream, proc)
        threading.Thread(target=self._meter_loop, daemon=True).start()

    def _meter_loop(self) -> None:
        while self._proc is not None and not self._stop.wait(p.AUDIO_STATUS_INTERVAL_S):
            self._meter()

    def _monitor(self, backing: Path | None, correction: float) -> None:
        from .monitor import run_monitor

        s = self.settings
        controls = self.controls()
        sliders = {k: v for k, v in controls.engine_sliders().items() if k in SLIDERS}
        plans = self.storage.root / FOLDERS[p.FileKind.PLAN] if hasattr(self.storage, "root") else None
        with portaudio() as pa:
            res = run_monitor(pa, seconds=24 * 3600, data_dir=self.data_dir, input=s.input, output=s.output,
                              sample_rate=s.sample_rate, frames_per_buffer=s.frames_per_buffer,
                              style=controls.style.engine_name, sliders=sliders, backing=backing,
                              correction=correction, key=None if correction == 0 else self.live_key,
                              plans_dir=plans, on_started=self._started_cb, stop=self._poll)
        self.last_monitor = res
        self._set(xruns=res.stream.xruns)

    def _play(self, path: Path) -> None:
        from .record import play_file

        s = self.settings
        with portaudio() as pa:
            play_file(pa, path, output=s.output, sample_rate=s.sample_rate, frames_per_buffer=4 * s.frames_per_buffer,
                      on_started=self._record_started)

    def close(self) -> None:
        """Stop any activity (service shutdown)."""
        self.stop()

    def check_devices(self) -> dict[str, Any]:
        """The chosen devices (for logs and `status`); raises AudioDeviceError if none."""
        with portaudio() as pa:
            out = pick_device(pa, self.settings.output, "output")
            inp = pick_device(pa, self.settings.input, "input")
        return {"input": inp.label, "output": out.label, "bluetooth_output": out.bluetooth}
