"""Latency calibration by loopback: play a test signal out, hear it back, measure the round trip.

The box plays a short logarithmic chirp (300 Hz - 12 kHz, 1024 frames, -6 dBFS, tapered) at
the start of every period of :data:`PERIOD_S`, on every output channel, and records its input.
Input and output run in one full-duplex PortAudio callback, so input frame ``i`` and output
frame ``i`` are handed to the callback together: the lag of the recorded chirp behind the sent
one, found with a matched filter (cross-correlation, parabolic interpolation of the peak), is the
whole round trip as a recording sees it: PortAudio's buffering + the driver/JACK graph + the
converters + the cable (or air). That is exactly what a take recorded by the same stream must be
shifted by (:mod:`melisma.device.audio.record`).

It keeps sending until it has heard :data:`NEEDED_BURSTS` consecutive bursts that agree to within
:data:`AGREE_MS`, or the timeout passes, so the loop can be connected after it starts. The
measurement is flagged unreliable (``reliable: false`` and a warning) on no signal, clipping
(input peak >= -0.1 dBFS), or two peaks (a second correlation peak at least half the first,
more than 1 ms away: an echo or two paths). Round trips up to one period (500 ms, enough for
a Bluetooth sink) can be measured.

Results are stored per (host API, input, output, rate, block) in
``<data-dir>/audio/calibration.json`` (written atomically).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal

from ...audio_io import atomic_write_text
from ...errors import AudioDeviceError
from .devices import DeviceInfo
from .stream import AudioStream, Processor

PERIOD_S = 0.5
BURST_FRAMES = 1024
BURST_GAIN = 0.5
NEEDED_BURSTS = 3
AGREE_MS = 0.1
#: A burst is heard when its correlation peak stands this many times over the window's RMS.
MIN_PEAK_TO_RMS = 12.0
#: ... and the loop's gain is at least this (-50 dB).
MIN_LOOP_GAIN = 10 ** (-50 / 20)
CLIP_LEVEL = 10 ** (-0.1 / 20)
SECOND_PEAK_RATIO = 0.5
DEFAULT_TIMEOUT_S = 10.0


def calibration_burst(sample_rate: int) -> np.ndarray:
    """The calibration burst: a tapered log chirp, :data:`BURST_FRAMES` long, peak :data:`BURST_GAIN`."""
    t = np.arange(BURST_FRAMES) / sample_rate
    f1 = min(12000.0, 0.45 * sample_rate)
    y = signal.chirp(t, f0=300.0, t1=t[-1], f1=f1, method="logarithmic")
    y *= signal.windows.tukey(BURST_FRAMES, 0.2)
    return (BURST_GAIN * y / np.max(np.abs(y))).astype(np.float32)


class CalibrationProcessor(Processor):
    """Sends a burst every period on all output channels; records input channel 0."""

    def __init__(self, *, max_seconds: float):
        self.max_seconds = float(max_seconds)
        self.done = False

    def prepare(self, *, sample_rate, frames_per_buffer, in_channels, out_channels):
        self.sr = sample_rate
        self.period = round(PERIOD_S * sample_rate)
        self.burst = calibration_burst(sample_rate)
        # one period of output, tiled by the callback (no allocation there)
        self.pattern = np.zeros(self.period, np.float32)
        self.pattern[:BURST_FRAMES] = self.burst
        n = int(self.max_seconds * sample_rate) + 2 * self.period
        self.capture = np.zeros(n, np.float32)
        self.recorded = 0

    def process(self, x, out, frame):
        n = out.shape[0]
        pos = frame % self.period
        first = min(n, self.period - pos)
        out[:first, :] = self.pattern[pos:pos + first, None]
        if first < n:
            out[first:, :] = self.pattern[:n - first, None]
        end = min(frame + n, self.capture.shape[0])
        if end > frame:
            self.capture[frame:end] = x[:end - frame, 0]
            self.recorded = end
        if end >= self.capture.shape[0]:
            self.done = True


@dataclass
class BurstHit:
    """Where one test burst was heard back in the recording, and how clearly."""

    index: int
    lag_frames: float
    loop_gain: float
    peak_to_rms: float
    second_peak_ratio: float
    clipped: bool


@dataclass
class Calibration:
    """A calibration result (``calibrate --json`` prints :meth:`to_json`)."""

    round_trip_frames: float | None
    sample_rate: int
    frames_per_buffer: int
    reliable: bool
    warnings: list[str] = field(default_factory=list)
    bursts_heard: int = 0
    loop_gain_db: float | None = None
    input: str = ""
    output: str = ""
    host_api: str = ""
    portaudio_input_latency_ms: float = 0.0
    portaudio_output_latency_ms: float = 0.0
    seconds: float = 0.0
    measured_at: str = ""
    #: Ended early by ``stop`` (never stored).
    stopped: bool = False

    @property
    def round_trip_ms(self) -> float | None:
        if self.round_trip_frames is None:
            return None
        return 1000.0 * self.round_trip_frames / self.sample_rate

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict with ``round_trip_ms``, ``sample_rate``, ``frames_per_buffer``, ``reliable``, ..."""
        rt = self.round_trip_ms
        return {"round_trip_ms": None if rt is None else round(rt, 3),
                "round_trip_frames": None if self.round_trip_frames is None else round(self.round_trip_frames, 2),
                "sample_rate": self.sample_rate, "frames_per_buffer": self.frames_per_buffer,
                "reliable": self.reliable, "warnings": list(self.warnings), "bursts_heard": self.bursts_heard,
                "loop_gain_db": None if self.loop_gain_db is None else round(self.loop_gain_db, 1),
                "input": self.input, "output": self.output, "host_api": self.host_api,
                "portaudio_input_latency_ms": round(self.portaudio_input_latency_ms, 3),
                "portaudio_output_latency_ms": round(self.portaudio_output_latency_ms, 3),
                "seconds": round(self.seconds, 2), "measured_at": self.measured_at,
                **({"stopped": True} if self.stopped else {})}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibration:
        return cls(round_trip_frames=d.get("round_trip_frames"), sample_rate=int(d["sample_rate"]),
                   frames_per_buffer=int(d["frames_per_buffer"]), reliable=bool(d.get("reliable")),
                   warnings=list(d.get("warnings", [])), bursts_heard=int(d.get("bursts_heard", 0)),
                   loop_gain_db=d.get("loop_gain_db"), input=d.get("input", ""), output=d.get("output", ""),
                   host_api=d.get("host_api", ""), measured_at=d.get("measured_at", ""))


def find_bursts(capture: np.ndarray, *, sample_rate: int, burst: np.ndarray | None = None) -> list[BurstHit]:
    """Matched-filter every complete period of ``capture``; the heard bursts with their lag in frames."""
    burst = calibration_burst(sample_rate) if burst is None else burst
    period = round(PERIOD_S * sample_rate)
    n_periods = (len(capture) - BURST_FRAMES) // period
    hits: list[BurstHit] = []
    if n_periods < 1:
        return hits
    energy = float(np.dot(burst, burst))
    guard = max(2, round(0.001 * sample_rate))
    corr = signal.fftconvolve(capture[: n_periods * period + BURST_FRAMES], burst[::-1], mode="valid")
    for k in range(n_periods):
        w = corr[k * period:(k + 1) * period]
        j = int(np.argmax(np.abs(w)))
        peak = abs(float(w[j]))
        rest = np.concatenate([w[:max(0, j - guard)], w[j + guard + 1:]])
        rms = float(np.sqrt(np.mean(rest * rest))) if rest.size else 0.0
        ratio = peak / rms if rms > 0 else (np.inf if peak > 0 else 0.0)
        if peak / energy < MIN_LOOP_GAIN or ratio < MIN_PEAK_TO_RMS:
            continue
        frac = 0.0
        if 0 < j < len(w) - 1:
            a, b, c = abs(float(w[j - 1])), peak, abs(float(w[j + 1]))
            den = a - 2 * b + c
            frac = 0.5 * (a - c) / den if den != 0 else 0.0
        second = float(np.max(np.abs(rest))) / peak if rest.size else 0.0
        seg = capture[k * period + j:k * period + j + BURST_FRAMES]
        hits.append(BurstHit(k, j + frac, peak / energy, ratio, second, bool(np.max(np.abs(seg)) >= CLIP_LEVEL)))
    return hits


def judge(hits: list[BurstHit], *, sample_rate: int, frames_per_buffer: int) -> Calibration | None:
    """A result once the last :data:`NEEDED_BURSTS` consecutive heard bursts agree; else ``None``."""
    if len(hits) < NEEDED_BURSTS:
        return None
    last = hits[-NEEDED_BURSTS:]
    if last[-1].index - last[0].index != NEEDED_BURSTS - 1:
        return None
    lags = np.array([h.lag_frames for h in last])
    if np.ptp(lags) > AGREE_MS * sample_rate / 1000.0:
        return None
    return _result(last, sample_rate=sample_rate, frames_per_buffer=frames_per_buffer)


def _result(hits: list[BurstHit], *, sample_rate: int, frames_per_buffer: int) -> Calibration:
    lags = np.array([h.lag_frames for h in hits])
    warnings = []
    if any(h.clipped for h in hits):
        warnings.append("clipping: the test signal comes back at full scale; turn the input gain or output level down")
    if max(h.second_peak_ratio for h in hits) >= SECOND_PEAK_RATIO:
        warnings.append("two peaks: the signal comes back twice (an echo or two paths); use a cable or move the mic")
    if np.ptp(lags) > AGREE_MS * sample_rate / 1000.0:
        warnings.append(f"unsteady: the bursts came back {np.ptp(lags) / sample_rate * 1000:.2f} ms apart")
    gain = float(np.median([h.loop_gain for h in hits]))
    return Calibration(round_trip_frames=float(np.median(lags)), sample_rate=sample_rate,
                       frames_per_buffer=frames_per_buffer, reliable=not warnings, warnings=warnings,
                       bursts_heard=len(hits), loop_gain_db=20 * np.log10(gain))


def calibrate(pa: Any, *, input: str | int | None = None, output: str | int | None = None, sample_rate: int = 48000,
              frames_per_buffer: int = 128, timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = 0.1,
              on_started=None, stop=None) -> Calibration:
    """Run a loopback calibration; see the module docstring.

    Parameters
    ----------
    pa : pyaudio.PyAudio
    input, output : str or int or None
        Device specs.
    sample_rate, frames_per_buffer : int
    timeout_s : float
        Keep sending for at most this long.
    on_started : callable, optional
        Called with the running :class:`AudioStream` (tests use it to wire the loop).
    stop : callable, optional
        Polled while it runs; true ends the calibration early (the BLE audio stop, the panel).
        A stopped calibration has ``stopped`` set and, unless it had already heard enough,
        ``round_trip_frames`` ``None`` (nothing is stored).

    Returns
    -------
    Calibration
        ``round_trip_frames`` is ``None`` and ``reliable`` false when nothing was heard.
    """
    if not 0 < timeout_s <= 600:
        raise AudioDeviceError(f"calibration timeout {timeout_s} s is out of range; use 0..600 (default 10)")
    proc = CalibrationProcessor(max_seconds=timeout_s)
    stream = AudioStream(pa, proc, input=input, output=output, sample_rate=sample_rate,
                         frames_per_buffer=frames_per_buffer)
    found: list[Calibration] = []
    t0 = time.monotonic()

    stopped = [False]

    def heard() -> bool:
        if stop is not None and stop():
            stopped[0] = True
            return True
        hits = find_bursts(proc.capture[:proc.recorded], sample_rate=sample_rate, burst=proc.burst)
        res = judge(hits, sample_rate=sample_rate, frames_per_buffer=frames_per_buffer)
        if res is not None:
            found.append(res)
        return res is not None

    stream.start()
    try:
        if on_started is not None:
            on_started(stream)
        lat_in, lat_out = stream.latencies_ms()
        stream.wait(timeout_s, poll_s=poll_s, until=heard)
    finally:
        stream.stop()
    elapsed = time.monotonic() - t0
    if found:
        res = found[-1]
    elif stopped[0]:
        res = Calibration(None, sample_rate, frames_per_buffer, False,
                          [f"stopped after {elapsed:.1f} s, before the test signal was heard back; nothing stored"])
        res.stopped = True
    else:
        hits = find_bursts(proc.capture[:proc.recorded], sample_rate=sample_rate, burst=proc.burst)
        if hits:
            res = _result(hits[-NEEDED_BURSTS:], sample_rate=sample_rate, frames_per_buffer=frames_per_buffer)
            res.reliable = False
            res.warnings.insert(0, f"only {len(hits)} burst(s) heard, not {NEEDED_BURSTS} in a row that agree")
        else:
            res = Calibration(None, sample_rate, frames_per_buffer, False,
                              [f"no signal: the test signal was not heard back within {timeout_s:g} s; connect the "
                               f"output to the input (a cable, or the mic at the speaker) and raise the levels"])
    assert stream.input_device is not None
    res.input, res.output = stream.input_device.name, stream.output_device.name
    res.host_api = stream.output_device.host_api
    res.portaudio_input_latency_ms, res.portaudio_output_latency_ms = lat_in, lat_out
    res.seconds = elapsed
    res.measured_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return res


def calibration_key(input_device: DeviceInfo | str, output_device: DeviceInfo | str, host_api: str,
                    sample_rate: int, frames_per_buffer: int) -> str:
    """Store key: host API, device names (not indexes: those move when devices come and go), rate, block."""
    i = input_device.name if isinstance(input_device, DeviceInfo) else input_device
    o = output_device.name if isinstance(output_device, DeviceInfo) else output_device
    return f"{host_api}|{i}|{o}|{int(sample_rate)}|{int(frames_per_buffer)}"


class CalibrationStore:
    """Calibrations kept in ``<data_dir>/audio/calibration.json`` (atomic rewrite on save)."""

    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / "audio" / "calibration.json"

    def load_all(self) -> dict[str, dict[str, Any]]:
        """All stored entries by key."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            msg = f"{self.path}: unreadable calibration store ({exc}); delete it and calibrate again"
            raise AudioDeviceError(msg) from None
        return data.get("calibrations", {}) if isinstance(data, dict) else {}

    def save(self, cal: Calibration) -> str:
        """Store a calibration (replacing the entry for the same key); returns the key."""
        if cal.round_trip_frames is None:
            raise AudioDeviceError("nothing to store: the calibration heard no signal")
        key = calibration_key(cal.input, cal.output, cal.host_api, cal.sample_rate, cal.frames_per_buffer)
        entries = self.load_all()
        entries[key] = cal.to_json()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"version": 1, "calibrations": entries}, indent=1, sort_keys=True),
                          overwrite=True)
        return key

    def get(self, input_device: DeviceInfo, output_device: DeviceInfo, sample_rate: int,
            frames_per_buffer: int) -> Calibration | None:
        """The stored calibration for these devices and settings, or ``None``."""
        key = calibration_key(input_device, output_device, output_device.host_api, sample_rate, frames_per_buffer)
        entry = self.load_all().get(key)
        return None if entry is None else Calibration.from_json(entry)
