"""Live monitoring (耳返): the mic through the vocal chain, mixed with the backing, to the headphones.

The callback copies the mic block into a preallocated buffer, runs the engine's own vocal chain
(:func:`melisma.render.chain.build_vocal_chain`: de-esser, EQ and compressor, reverb and echo) on
it with ``reset=False`` (the stages keep their state between blocks), and writes vocal + backing
into the preallocated output block. All of it happens in the same callback that delivers the
input, so the processing adds no buffering: the mic-to-ear latency is PortAudio's and the
device's input + output buffering, which is exactly the round trip the loopback calibration
measures for the same devices, rate and block, plus the processing's own lookahead (0: every
chain stage is causal), plus, with live correction (:mod:`.live_correct`, run before the chain),
its pitch shifter's delay (a few ms; nothing is read ahead).

By default the chain runs on its real-time path (:class:`.rt_chain.RtChain`: the same stages on
preallocated buffers with scipy's in-place filter kernel, same output); ``fast=False`` runs the
engine's own streaming call, the reference. ``instrument=True`` times every part of each block
into a preallocated array (``stage_costs_us``); :class:`PassthroughProcessor` is the peer that
measures what the stream costs with no processing at all.

Moving a slider builds a new chain outside the callback (:meth:`Monitor.set_settings`); the
callback picks it up at its next block by swapping one reference (no lock: one attribute store
is atomic in CPython).

A live take has no analysis yet, so the chain is built for :data:`LIVE_VOICE`, a typical voice
profile (sibilance around 7 kHz, loud phrases at -12 dBFS at the detector), in place of
:func:`melisma.analysis.voice.analyze_voice` of a recorded take.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...audio_io import load_audio
from ...errors import AudioDeviceError
from ...render.chain import build_vocal_chain
from ...semantic import resolve_settings
from .calibrate import CalibrationStore
from .live_correct import DEFAULT_FMAX_HZ, DEFAULT_FMIN_HZ, LiveCorrector, LiveTarget
from .live_target import resolve_target
from .rt_chain import RtChain
from .stream import AudioStream, Processor, StreamFigures

#: The voice profile the live chain is set for (a take's analysis replaces it offline).
LIVE_VOICE: dict[str, Any] = {
    "sibilance": {"found": True, "band_level_sibilant_db": -30.0, "band_level_vowel_p95_db": -45.0,
                  "lo_hz": 5000.0, "hi_hz": 9000.0, "centre_hz": 7000.0, "excess_db": 15.0},
    "loud_phrase_detector_db": -12.0,
}


def live_chain(style: str = "neutral", sliders: dict[str, float] | None = None, *, sample_rate: int):
    """The vocal chain for monitoring, for ``style`` and ``sliders`` (-1..+1 each)."""
    chain, _ = build_vocal_chain(resolve_settings(style, sliders or {}), LIVE_VOICE, sr=sample_rate)
    return chain


class MonitorProcessor(Processor):
    """Mic (input channel 0) → [live corrector] → vocal chain, + backing, into every output channel.

    ``corrector`` is a :class:`.live_correct.LiveCorrector` (or ``None``); it reads the backing's
    playhead from :meth:`playhead_s`.
    """

    #: Rows kept by :attr:`stage_ns` (a ring) when ``instrument`` is on.
    STAGE_RING = 1 << 14

    def __init__(self, chain, *, backing: np.ndarray | None = None, vocal_gain: float = 1.0,
                 backing_gain: float = 0.7, corrector=None, loop_backing: bool = True, tap_frames: int = 0,
                 fast: bool = True, instrument: bool = False):
        self.chain = chain
        self._pending = None
        #: ``fast``: the chain runs through :class:`.rt_chain.RtChain` (preallocated buffers, in-place
        #: kernels); off: through the engine's own streaming call (the reference, same output).
        self.fast = bool(fast)
        self._rt: RtChain | None = None
        self._rt_pending: RtChain | None = None
        #: ``instrument``: time every part of each block (ns, into the preallocated :attr:`stage_ns`).
        self.instrument = bool(instrument)
        self.stage_names: list[str] = []
        self.stage_ns = np.zeros((0, 0), np.int64)
        self.stage_rows = 0
        self.corrector = corrector
        self.backing = None if backing is None else np.asarray(backing, np.float32)
        if self.backing is not None and self.backing.ndim == 1:
            self.backing = self.backing[None, :]
        self.vocal_gain = float(vocal_gain)
        self.backing_gain = float(backing_gain)
        self.loop_backing = loop_backing
        #: ``tap_frames > 0`` keeps the first frames of output channel 0 in :attr:`tap` (tests, benchmark)
        #: and of the mic after the live corrector (before the chain) in :attr:`tap_vocal`.
        self.tap = np.zeros(int(tap_frames), np.float32)
        self.tap_vocal = np.zeros(int(tap_frames) if corrector is not None else 0, np.float32)
        self.done = False
        self.peak_in = 0.0
        self.peak_out = 0.0
        self.frame = 0
        self.playhead_delay_frames = 0
        self.sr = 48000

    def set_chain(self, chain) -> None:
        """Swap in a new chain at the next block (call from any thread but the callback's).

        The chain is reset and run once on a silent block here, outside the callback, so the
        callback only swaps the reference.
        """
        chain(np.zeros(self._mic.shape[0], np.float32), self.sr, reset=True)
        if self.fast:
            self._rt_pending = RtChain(chain, self.sr, self._mic.shape[0])
        self._pending = chain

    def set_settings(self, style: str = "neutral", sliders: dict[str, float] | None = None) -> None:
        """Rebuild the chain for a new style / sliders (the app moved a slider) and swap it in."""
        self.set_chain(live_chain(style, sliders, sample_rate=self.sr))

    def prepare(self, *, sample_rate, frames_per_buffer, in_channels, out_channels):
        if in_channels == 0:
            raise AudioDeviceError("monitoring needs an input device")
        self.sr = sample_rate
        self._mic = np.zeros(frames_per_buffer, np.float32)
        self._ch = out_channels
        self._back = None
        if self.backing is not None:
            src = self.backing
            if src.shape[0] != out_channels:
                src = np.repeat(src.mean(axis=0, keepdims=True), out_channels, axis=0)
            self._back = np.ascontiguousarray((src * np.float32(self.backing_gain)).T)
        self._gain = np.float32(self.vocal_gain)
        if self.corrector is not None:
            self.corrector.prepare(sample_rate=sample_rate, frames_per_buffer=frames_per_buffer)
        self.chain(np.zeros(frames_per_buffer, np.float32), sample_rate, reset=True)  # warm up, set state
        self._rt = RtChain(self.chain, sample_rate, frames_per_buffer) if self.fast else None
        if self.instrument:
            steps = [type(st).__name__ for st in getattr(self.chain, "stages", [self.chain])]
            self.stage_names = ["input", *(["corrector"] if self.corrector is not None else []), *steps, "mix"]
            self.stage_ns = np.zeros((self.STAGE_RING, len(self.stage_names)), np.int64)
            self.stage_rows = 0

    def stage_costs_us(self) -> dict[str, dict[str, float]]:
        """Per part of the block (``instrument=True``): p50/p99/max of its time, in µs."""
        n = min(self.stage_rows, self.STAGE_RING)
        if n == 0:
            return {}
        t = self.stage_ns[:n].astype(np.float64) / 1e3
        return {name: {"p50": round(float(np.percentile(t[:, k], 50)), 1),
                       "p99": round(float(np.percentile(t[:, k], 99)), 1), "max": round(float(t[:, k].max()), 1)}
                for k, name in enumerate(self.stage_names)}

    def _run_chain_timed(self, mic: np.ndarray, row: np.ndarray, k: int, clock) -> np.ndarray:
        a = mic
        if self._rt is not None:
            for step in self._rt.steps:
                t = clock()
                a = step(a)
                row[k] = clock() - t
                k += 1
        else:
            for stage in self.chain.stages:
                t = clock()
                a = stage(a, self.sr, reset=False)
                row[k] = clock() - t
                k += 1
        return a

    def playhead_s(self) -> float:
        """Where in the backing the singer is now (s): the block's frame less the round trip, looped."""
        f = self.frame - self.playhead_delay_frames
        back = self._back
        if back is not None and self.loop_backing and f >= 0:
            f %= back.shape[0]
        return f / self.sr

    def process(self, x, out, frame):
        n = out.shape[0]
        self.frame = frame
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._rt, self._rt_pending = self._rt_pending, None
            self.chain = pending
        timed = self.instrument and len(self.stage_names) and n == self._mic.shape[0]
        if timed:
            clock = time.perf_counter_ns
            row = self.stage_ns[self.stage_rows & (self.STAGE_RING - 1)]
            t = clock()
        mic = self._mic if n == self._mic.shape[0] else np.zeros(n, np.float32)
        np.copyto(mic, x[:, 0])
        self.peak_in = max(self.peak_in, float(np.max(mic)), -float(np.min(mic)))  # held until the meter reads
        if timed:
            row[0] = clock() - t
            t = clock()
        if self.corrector is not None:
            mic = self.corrector.process(mic)
            if frame < self.tap_vocal.shape[0]:
                end = min(frame + n, self.tap_vocal.shape[0])
                self.tap_vocal[frame:end] = mic[:end - frame]
            if timed:
                row[1] = clock() - t
        if timed:
            y = self._run_chain_timed(mic, row, 2 if self.corrector is not None else 1, clock)
            t = clock()
        elif self._rt is not None and n == self._rt.frames:
            y = self._rt(mic)  # (2, n)
        else:
            y = self.chain(mic, self.sr, reset=False)  # (2, n)
        if self._ch == 1:
            np.add(y[0], y[1], out=out[:, 0])
            out[:, 0] *= self._gain * np.float32(0.5)
        else:
            np.multiply(y[0], self._gain, out=out[:, 0])
            np.multiply(y[1], self._gain, out=out[:, 1])
            if self._ch > 2:
                out[:, 2:] = 0.0
        back = self._back
        if back is not None:
            nb = back.shape[0]
            pos = frame % nb if self.loop_backing else frame
            if pos + n <= nb:
                out += back[pos:pos + n]
            elif pos < nb:
                out[:nb - pos] += back[pos:]
                if self.loop_backing:
                    out[nb - pos:] += back[:n - (nb - pos)]
        self.peak_out = max(self.peak_out, float(np.max(out)), -float(np.min(out)))
        if frame < self.tap.shape[0]:
            end = min(frame + n, self.tap.shape[0])
            self.tap[frame:end] = out[:end - frame, 0]
        if timed:
            row[-1] = clock() - t
            self.stage_rows += 1


class PassthroughProcessor(Processor):
    """The peer of the monitor: input channel 0 copied to every output channel, nothing else.

    Run on the same server and block size as the monitor, its xruns are the ones the server
    and the Python callback path (PyAudio, the GIL) cause on their own: what the monitor's
    processing adds is the difference.
    """

    def prepare(self, *, sample_rate, frames_per_buffer, in_channels, out_channels):
        if in_channels == 0:
            raise AudioDeviceError("the passthrough needs an input device")

    def process(self, x, out, frame):
        out[:] = x[:, :1]


@dataclass
class MonitorResult:
    """What ``audio monitor --json`` prints."""

    added_latency_ms: float
    latency_source: str
    buffering_ms: float
    processing_lookahead_ms: float
    stream: StreamFigures
    correction: float
    key: str | None
    warnings: list[str]
    pitch_shifter_ms: float = 0.0
    live_correction: dict[str, Any] | None = None
    stage_costs_us: dict[str, dict[str, float]] | None = None

    def to_json(self) -> dict[str, Any]:
        """What ``audio monitor --json`` prints."""
        s = self.stream
        return {"added_latency_ms": round(self.added_latency_ms, 3), "latency_source": self.latency_source,
                "latency_parts_ms": {"portaudio_and_device_buffering": round(self.buffering_ms, 3),
                                     "processing_lookahead": round(self.processing_lookahead_ms, 3),
                                     "pitch_shifter": round(self.pitch_shifter_ms, 3)},
                "live_correction": self.live_correction,
                "callback_p50_ms": round(s.callback_p50_ms, 4), "callback_p99_ms": round(s.callback_p99_ms, 4),
                "callback_max_ms": round(s.callback_max_ms, 4), "block_period_ms": round(s.block_period_ms, 4),
                "core_share": round(s.core_share, 4), "xruns": s.xruns, "callbacks": s.callbacks,
                "sample_rate": s.sample_rate, "frames_per_buffer": s.frames_per_buffer, "seconds": round(s.wall_s, 2),
                "correction": self.correction, "key": self.key, "warnings": list(self.warnings),
                "callback_cpu_p99_ms": round(s.callback_cpu_p99_ms, 4), "late_callbacks": s.late_callbacks,
                "start_delay_p99_ms": round(s.start_delay_p99_ms, 4), "gc_collections": s.gc_collections,
                "minor_page_faults": s.minor_page_faults,
                **({"stage_costs_us": self.stage_costs_us} if self.stage_costs_us else {})}


def run_monitor(pa: Any, *, seconds: float = 10.0, data_dir: str | Path, input: str | int | None = None,
                output: str | int | None = None, sample_rate: int = 48000, frames_per_buffer: int = 128,
                style: str = "neutral", sliders: dict[str, float] | None = None, backing: str | Path | None = None,
                correction: float = 0.0, key: str | None = None, on_started=None, stop=None,
                tap_frames: int = 0, vocal_gain: float = 1.0, backing_gain: float = 0.7,
                melody: str | Path | None = None, plans_dir: str | Path | None = None,
                singer_range_hz: tuple[float, float] = (DEFAULT_FMIN_HZ, DEFAULT_FMAX_HZ),
                target: LiveTarget | None = None, fast: bool = True, instrument: bool = False) -> MonitorResult:
    """Run the live monitor for ``seconds`` (or until ``stop()`` is true); return its figures.

    Parameters
    ----------
    correction : float
        0..1: how far live note centres move toward the key (0: off).
    key : str, optional
        ``"D major"``, ``"A yu"``, ..., ``"chromatic"`` or ``"auto"``/``None``: the live corrector's
        target scale; ``auto`` takes the key of a plan made with the backing, else estimates it
        from the backing, else corrects to the nearest semitone (:func:`.live_target.resolve_target`).
    melody : path, optional
        A reference melody (MIDI) the corrector follows along the backing's playhead.
    plans_dir : path, optional
        Where the box keeps its plans (the key/melody of a plan made with this backing).
    singer_range_hz : (float, float)
        The live pitch tracker's range.
    target : LiveTarget, optional
        A ready target (overrides ``key``/``melody``).
    on_started : callable, optional
        Called with the running stream and processor.
    fast : bool
        Run the chain on its real-time path (:class:`.rt_chain.RtChain`); off: the engine's own
        streaming call (the reference; same output, more time per block).
    instrument : bool
        Time each part of every block; the result's ``stage_costs_us`` has them.
    """
    if not 0.0 <= correction <= 1.0:
        raise AudioDeviceError(f"--correction {correction} is out of range; use 0..1 (0: off)")
    if seconds <= 0:
        raise AudioDeviceError(f"--seconds {seconds} must be positive")
    corrector: LiveCorrector | None = None
    lookahead_ms = 0.0  # nothing in the monitor reads ahead (the corrector neither)
    back = None
    if backing is not None:
        back, _ = load_audio(backing, sr=sample_rate)
    target_source = None
    if correction > 0:
        if target is None:
            target, target_source = resolve_target(key=key, melody=melody, backing_audio=back, sample_rate=sample_rate,
                                                   backing_path=backing, plans_dir=plans_dir)
        else:
            target_source = "given"
        corrector = LiveCorrector(correction, target, fmin_hz=singer_range_hz[0], fmax_hz=singer_range_hz[1])
    proc = MonitorProcessor(live_chain(style, sliders, sample_rate=sample_rate), backing=back, corrector=corrector,
                            tap_frames=tap_frames, vocal_gain=vocal_gain, backing_gain=backing_gain, fast=fast,
                            instrument=instrument)
    stream = AudioStream(pa, proc, input=input, output=output, sample_rate=sample_rate,
                         frames_per_buffer=frames_per_buffer)
    assert stream.input_device is not None
    cal = CalibrationStore(data_dir).get(stream.input_device, stream.output_device, sample_rate, frames_per_buffer)
    if corrector is not None:
        # What the singer sang against backing frame b reaches the input a round trip later.
        proc.playhead_delay_frames = int(round(cal.round_trip_frames)) if cal is not None and cal.round_trip_frames else 0
        corrector.playhead = proc.playhead_s
    warnings: list[str] = []
    if stream.output_device.bluetooth:
        warnings.append(f"the output {stream.output_device.label} is a Bluetooth sink "
                        f"({stream.output_device.bluetooth_reason}; 150-300 ms late): monitoring through it is "
                        f"unusable; use wired headphones")
    stream.start()
    try:
        if on_started is not None:
            on_started(stream, proc)
        stream.wait(seconds, until=stop)
    finally:
        figures = stream.stop()
    if cal is not None and cal.round_trip_ms is not None:
        buffering, source = cal.round_trip_ms, "calibration"
    else:
        buffering, source = figures.input_latency_ms + figures.output_latency_ms, "portaudio_reported"
        warnings.append("no calibration for these devices and settings: the latency is PortAudio's own report; "
                        "run `melisma-device audio calibrate` for a measured figure")
    if figures.xruns:
        warnings.append(f"{figures.xruns} xrun(s): try a larger --block")
    shifter_ms = 0.0
    live: dict[str, Any] | None = None
    if corrector is not None:
        corrector.close()
        live = corrector.figures()
        live["target_source"] = target_source
        shifter_ms = live["shifter_mean_delay_ms"]
    return MonitorResult(added_latency_ms=buffering + lookahead_ms + shifter_ms, latency_source=source,
                         buffering_ms=buffering, processing_lookahead_ms=lookahead_ms, stream=figures,
                         correction=correction, key=None if corrector is None else corrector.target.name,
                         warnings=warnings, pitch_shifter_ms=shifter_ms, live_correction=live,
                         stage_costs_us=proc.stage_costs_us() if instrument else None)
