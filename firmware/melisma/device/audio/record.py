"""Record a take on the box while the backing plays, lined up by the stored calibration.

The backing goes out and the mic comes in through one full-duplex callback, so input frame
``i`` arrived together with output frame ``i``. What the singer sang against backing frame
``b`` reaches the input ``L`` frames later, where ``L`` is the calibrated round trip for these
devices, rate and block size (the same stream path the calibration measured: the singer hears the
backing after the output half of the trip and the mic adds the input half). So the take is the
input from frame ``round(L)`` on: it starts with backing frame 0, with no bleed needed to align
it. Recording runs ``L`` frames (plus a block) past the backing's end so the last note is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...audio_io import check_writable, load_audio, write_audio
from ...errors import AudioDeviceError
from .calibrate import CalibrationStore
from .stream import AudioStream, Processor, StreamFigures

#: How long past a take's own length the recording waits for audio before it gives up (s).
STALL_MARGIN_S = 15.0


class PlayRecordProcessor(Processor):
    """Plays ``audio`` (``(channels, n)``) and records input channel 0 for ``record_frames`` frames."""

    def __init__(self, audio: np.ndarray, *, record_frames: int | None = None):
        self.audio = np.asarray(audio, np.float32)
        if self.audio.ndim == 1:
            self.audio = self.audio[None, :]
        self.n = self.audio.shape[1]
        self.record_frames = self.n if record_frames is None else int(record_frames)
        self.done = False
        self.stop_requested = False
        self.peak_in = 0.0
        self.peak_out = 0.0

    def prepare(self, *, sample_rate, frames_per_buffer, in_channels, out_channels):
        # (n, out_channels) C-contiguous so each block is one slice copy
        src = self.audio
        if src.shape[0] != out_channels:
            src = np.repeat(src.mean(axis=0, keepdims=True), out_channels, axis=0)
        self._play = np.ascontiguousarray(src.T)
        self.capture = np.zeros(self.record_frames if in_channels else 0, np.float32)
        self.recorded = 0

    def process(self, x, out, frame):
        n = out.shape[0]
        m = max(0, min(n, self.n - frame))
        if m:
            out[:m] = self._play[frame:frame + m]
            self.peak_out = max(self.peak_out, float(np.max(out[:m])), -float(np.min(out[:m])))
        if m < n:
            out[m:] = 0.0
        if x is not None:
            end = min(frame + n, self.capture.shape[0])
            if end > frame:
                seg = x[:end - frame, 0]
                self.capture[frame:end] = seg
                self.peak_in = max(self.peak_in, float(np.max(seg)), -float(np.min(seg)))  # held until read
                self.recorded = end
            if end >= self.capture.shape[0]:
                self.done = True
        elif frame + n >= self.n:
            self.done = True
        if self.stop_requested:
            self.done = True


@dataclass
class TakeResult:
    """What ``audio record`` did."""

    out: str
    seconds: float
    sample_rate: int
    frames_per_buffer: int
    compensation_frames: int
    compensation_ms: float
    calibration_reliable: bool
    input_peak_db: float
    stream: StreamFigures
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"out": self.out, "seconds": round(self.seconds, 3), "sample_rate": self.sample_rate,
                "frames_per_buffer": self.frames_per_buffer, "compensation_frames": self.compensation_frames,
                "compensation_ms": round(self.compensation_ms, 3), "calibration_reliable": self.calibration_reliable,
                "input_peak_db": round(self.input_peak_db, 1), "xruns": self.stream.xruns,
                "warnings": list(self.warnings), "stream": self.stream.to_json()}


def record_take(pa: Any, *, backing: str | Path, out: str | Path, data_dir: str | Path, seconds: float | None = None,
                input: str | int | None = None, output: str | int | None = None, sample_rate: int = 48000,
                frames_per_buffer: int = 128, overwrite: bool = False, on_started=None,
                round_trip_frames: float | None = None) -> TakeResult:
    """Play ``backing``, record the input, write the compensated mono take to ``out``.

    Parameters
    ----------
    pa : pyaudio.PyAudio
    backing, out : path
        The backing (any format :func:`melisma.audio_io.load_audio` reads); the take (by extension,
        atomic, never overwriting unless ``overwrite``).
    data_dir : path
        Where the calibration store is.
    seconds : float, optional
        Record only the first ``seconds`` of the backing.
    round_trip_frames : float, optional
        Use this round trip instead of the stored calibration.
    on_started : callable, optional
        Called with the running stream and processor (the BLE service keeps them to stop early).

    Raises
    ------
    AudioDeviceError
        No stored calibration for these devices and settings (the message says how to make one).
    """
    out = check_writable(out, overwrite=overwrite)
    y, _ = load_audio(backing, sr=sample_rate)
    y = y if y.ndim == 2 else y[None, :]
    if seconds is not None:
        if seconds <= 0:
            raise AudioDeviceError(f"--seconds {seconds} must be positive")
        y = y[:, :round(seconds * sample_rate)]
    proc = PlayRecordProcessor(y, record_frames=0)
    stream = AudioStream(pa, proc, input=input, output=output, sample_rate=sample_rate,
                         frames_per_buffer=frames_per_buffer)
    warnings: list[str] = []
    reliable = True
    if round_trip_frames is None:
        assert stream.input_device is not None
        cal = CalibrationStore(data_dir).get(stream.input_device, stream.output_device, sample_rate, frames_per_buffer)
        if cal is None or cal.round_trip_frames is None:
            raise AudioDeviceError(
                f"no latency calibration for input {stream.input_device.label}, output {stream.output_device.label} "
                f"at {sample_rate} Hz / {frames_per_buffer} frames; run `melisma-device audio calibrate "
                f"--input {stream.input_device.index} --output {stream.output_device.index} --rate {sample_rate} "
                f"--block {frames_per_buffer}` with the output looped to the input first")
        round_trip_frames = cal.round_trip_frames
        reliable = cal.reliable
        if not cal.reliable:
            warnings.append("the stored calibration was flagged unreliable: " + "; ".join(cal.warnings))
    if stream.output_device.bluetooth:
        warnings.append(f"the output {stream.output_device.label} is a Bluetooth sink: the take is compensated by its "
                        f"measured latency, but the singer hears the backing late; prefer wired headphones")
    lag = round(round_trip_frames)
    proc.record_frames = y.shape[1] + lag + frames_per_buffer
    stream.start()
    try:
        if on_started is not None:
            on_started(stream, proc)
        # A stream the audio server has dropped (JACK zombifies a client that misses its deadlines)
        # stays "active" but is never called again: give up well after the take's own length.
        expected_s = proc.record_frames / sample_rate
        stream.wait(expected_s + STALL_MARGIN_S)
        stalled = stream.active and stream.error is None
    finally:
        figures = stream.stop()
    if stalled:
        raise AudioDeviceError(f"the audio device stopped delivering audio: {proc.recorded} of {proc.record_frames} "
                               f"frames after {expected_s + STALL_MARGIN_S:.0f} s; nothing was saved. Check the device "
                               f"(or the JACK server) and record again")
    take = proc.capture[lag:min(proc.recorded, lag + y.shape[1])]
    if take.size == 0:
        raise AudioDeviceError("nothing was recorded (stopped before the round trip had passed)")
    if figures.xruns:
        warnings.append(f"{figures.xruns} xrun(s) while recording: the take may have clicks")
    peak = float(np.max(np.abs(take)))
    if peak < 10 ** (-60 / 20):
        warnings.append("the input was silent (below -60 dBFS): is the mic connected and its gain up?")
    write_audio(out, take, sr=sample_rate, overwrite=overwrite)
    return TakeResult(out=str(out), seconds=take.size / sample_rate, sample_rate=sample_rate,
                      frames_per_buffer=frames_per_buffer, compensation_frames=lag,
                      compensation_ms=1000.0 * lag / sample_rate, calibration_reliable=reliable,
                      input_peak_db=20 * math.log10(max(peak, 1e-10)), stream=figures, warnings=warnings)


def play_file(pa: Any, path: str | Path, *, output: str | int | None = None, sample_rate: int = 48000,
              frames_per_buffer: int = 512, seconds: float | None = None, on_started=None) -> StreamFigures:
    """Play a mix or preview through the box's output (output-only stream)."""
    y, _ = load_audio(path, sr=sample_rate)
    y = y if y.ndim == 2 else y[None, :]
    if seconds is not None:
        y = y[:, :round(seconds * sample_rate)]
    proc = PlayRecordProcessor(y)
    stream = AudioStream(pa, proc, input=False, output=output, sample_rate=sample_rate,
                         frames_per_buffer=frames_per_buffer)
    stream.start()
    try:
        if on_started is not None:
            on_started(stream, proc)
        stream.wait(y.shape[1] / sample_rate + 5.0)
    finally:
        figures = stream.stop()
    return figures
