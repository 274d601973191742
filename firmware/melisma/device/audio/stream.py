"""One PortAudio callback stream with real-time hygiene and its own figures.

:class:`AudioStream` opens a full-duplex (or output-only) float32 stream and calls a
:class:`Processor` once per block from PortAudio's callback. Hygiene in the callback:

- no file I/O, no locks, no logging: the callback touches only preallocated numpy buffers and
  plain attributes (the processor's ``done`` flag, counters); the main thread polls them;
- the output block is a preallocated, C-contiguous ``(frames, channels)`` array handed back to
  PyAudio as is (no ``bytes`` copy);
- callback durations go into a preallocated ring of ``int64`` nanoseconds; xruns (PortAudio's
  input-overflow / output-underflow flags, which its JACK host sets on every JACK xrun) are counted.

What PyAudio itself does per block is outside our reach: it hands the input as a new ``bytes``
object and the callback makes one numpy view of it (small objects from Python's own allocator,
no system call). The numbers (callback p99 against the block period, xruns) are what decide
whether Python in the callback is good enough; ``tools/bench_audio.py`` prints them.
"""

from __future__ import annotations

import gc
import itertools
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import AudioDeviceError
from .devices import DeviceInfo, check_format, pick_device

#: Callback durations kept (a power of two; at 128 frames / 48 kHz that is 87 s).
TIMING_RING = 1 << 15
#: GIL switch interval while a stream runs (Python's default is 5 ms: a callback could wait that
#: long for another thread to let go of the GIL, longer than a 128-frame block lasts).
RT_SWITCH_INTERVAL_S = 0.0005
#: The trailing window over which a callback's start delay is measured against the earliest start.
START_DELAY_WINDOW_S = 0.25


class Processor:
    """What an :class:`AudioStream` runs per block; subclasses override :meth:`process`.

    ``process(x, out, frame)`` gets the input block ``x`` (``(frames, in_channels)`` float32,
    or ``None`` for an output-only stream), must fill ``out`` (``(frames, out_channels)``
    float32, preallocated) and gets the stream frame number of the block's first frame. Set
    ``self.done = True`` to end the stream after this block.
    """

    done: bool = False

    def prepare(self, *, sample_rate: int, frames_per_buffer: int, in_channels: int, out_channels: int) -> None:
        """Allocate everything the callback will need (called before the stream opens)."""

    def process(self, x: np.ndarray | None, out: np.ndarray, frame: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class StreamFigures:
    """What a finished stream measured."""

    sample_rate: int
    frames_per_buffer: int
    callbacks: int
    frames: int
    xruns: int
    callback_p50_ms: float
    callback_p99_ms: float
    callback_max_ms: float
    block_period_ms: float
    core_share: float  # summed callback time over wall time: the share of one core the callback used
    process_cpu_share: float  # all threads of the process (CPU time over wall time)
    wall_s: float
    input_latency_ms: float  # as PortAudio reports it for the stream
    output_latency_ms: float
    #: The callback's own CPU time (its thread's CPU clock): wall time well above it is time the
    #: callback's thread was preempted or waited, not work it did.
    callback_cpu_p50_ms: float = 0.0
    callback_cpu_p99_ms: float = 0.0
    callback_cpu_max_ms: float = 0.0
    #: Callbacks that took longer than one block period (wall time).
    late_callbacks: int = 0
    #: How late a callback started after its JACK/PortAudio cycle began, above the run's
    #: smallest such delay (scheduler wake-up, the GIL held by another thread): p99 and max.
    start_delay_p99_ms: float = 0.0
    start_delay_max_ms: float = 0.0
    #: Cyclic garbage collections that ran while the stream ran (0 with ``rt_tuning``).
    gc_collections: int = 0
    #: Page faults of the whole process while the stream ran (minor: a page mapped in; major: read from disk).
    minor_page_faults: int = 0
    major_page_faults: int = 0

    def to_json(self) -> dict[str, Any]:
        """Rounded figures as a JSON-ready dict."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


class AudioStream:
    """A PortAudio stream driving a :class:`Processor`.

    Parameters
    ----------
    pa : pyaudio.PyAudio
        From :func:`melisma.device.audio.devices.portaudio`.
    processor : Processor
    input, output : str or int or None
        Device specs (index or name substring; ``None``: default). ``input=False`` makes an
        output-only stream.
    sample_rate, frames_per_buffer : int
    channels : int or None
        Channels of the stream, the same for input and output (PyAudio opens both sides with
        one channel count); ``None``: 2 where both devices have two, else 1. The mic is the
        input's first channel.
    rt_tuning : bool
        While the stream runs: GIL switch interval :data:`RT_SWITCH_INTERVAL_S`, and the cyclic
        garbage collector off (after ``gc.freeze()``), so no collection pause lands in a callback;
        both are restored by :meth:`stop`.
    """

    def __init__(self, pa: Any, processor: Processor, *, input: str | int | bool | None = None,
                 output: str | int | None = None, sample_rate: int = 48000, frames_per_buffer: int = 128,
                 channels: int | None = None, rt_tuning: bool = True):
        self.pa = pa
        self.processor = processor
        self.rt_tuning = rt_tuning
        self._saved_rt: tuple[float, bool] | None = None
        self.sample_rate = int(sample_rate)
        self.block = int(frames_per_buffer)
        self.output_device: DeviceInfo = pick_device(pa, output, "output")
        self.input_device: DeviceInfo | None = None if input is False else pick_device(pa, input, "input")
        most = self.output_device.max_output_channels
        if self.input_device is not None:
            most = min(most, self.input_device.max_input_channels)
        self.out_channels = int(channels or min(2, most))
        self.in_channels = 0 if self.input_device is None else self.out_channels
        check_format(pa, self.output_device, "output", sample_rate=self.sample_rate, channels=self.out_channels)
        if self.input_device is not None:
            check_format(pa, self.input_device, "input", sample_rate=self.sample_rate, channels=self.in_channels)
        # Everything the callback touches, allocated now.
        self._out = np.zeros((self.block, self.out_channels), np.float32)
        self._durations = np.zeros(TIMING_RING, np.int64)
        self._cpu_durations = np.zeros(TIMING_RING, np.int64)
        self._starts = np.zeros(TIMING_RING, np.int64)  # perf_counter_ns at each callback's start
        self._cycle_s = np.zeros(TIMING_RING, np.float64)  # PortAudio's current_time for that callback
        self._xrun_at = np.zeros(TIMING_RING, np.bool_)  # the callback came with an xrun flag
        self._gc_start = 0
        self._faults_start = (0, 0)
        self._n_callbacks = 0
        self.frames = 0
        self.xruns = 0
        self.error: BaseException | None = None
        self._stream: Any = None
        self._t_start = 0.0
        self._cpu_start = 0.0
        self._wall = 0.0
        self._cpu = 0.0
        import pyaudio

        self._continue, self._complete, self._abort = pyaudio.paContinue, pyaudio.paComplete, pyaudio.paAbort
        self._xrun_flags = pyaudio.paInputOverflow | pyaudio.paOutputUnderflow
        self._ns = time.perf_counter_ns
        self._cpu_ns = time.thread_time_ns

    # -- the real-time part -----------------------------------------------------------------
    def _callback(self, in_data, frame_count, time_info, status):
        t0 = self._ns()
        c0 = self._cpu_ns()
        xrun = bool(status & self._xrun_flags)
        if xrun:
            self.xruns += 1
        out = self._out if frame_count == self.block else np.zeros((frame_count, self.out_channels), np.float32)
        x = None
        if self.in_channels:
            x = np.frombuffer(in_data, dtype=np.float32).reshape(frame_count, self.in_channels)
        try:
            self.processor.process(x, out, self.frames)
        except BaseException as exc:  # reported by the main thread; never raised into PortAudio
            self.error = exc
            out.fill(0.0)
            return out, self._abort
        self.frames += frame_count
        i = self._n_callbacks & (TIMING_RING - 1)
        self._durations[i] = self._ns() - t0
        self._cpu_durations[i] = self._cpu_ns() - c0
        self._starts[i] = t0
        self._xrun_at[i] = xrun
        self._cycle_s[i] = time_info["current_time"] if time_info else 0.0
        self._n_callbacks += 1
        return out, (self._complete if self.processor.done else self._continue)

    # -- control (main thread) --------------------------------------------------------------
    def start(self) -> AudioStream:
        """Prepare the processor, open and start the stream."""
        import pyaudio

        self.processor.prepare(sample_rate=self.sample_rate, frames_per_buffer=self.block,
                               in_channels=self.in_channels, out_channels=self.out_channels)
        kw: dict[str, Any] = {"output": True, "output_device_index": self.output_device.index}
        if self.input_device is not None:
            kw.update(input=True, input_device_index=self.input_device.index)
        try:
            self._stream = self.pa.open(rate=self.sample_rate, channels=self.out_channels,
                                        format=pyaudio.paFloat32, frames_per_buffer=self.block,
                                        stream_callback=self._callback, start=False, **kw)
        except (OSError, ValueError) as exc:
            raise AudioDeviceError(f"could not open the audio stream (output {self.output_device.label}"
                                   + (f", input {self.input_device.label}" if self.input_device else "")
                                   + f", {self.sample_rate} Hz, {self.block} frames): {exc}") from None
        if self.rt_tuning:
            self._saved_rt = (sys.getswitchinterval(), gc.isenabled())
            gc.collect()
            gc.freeze()
            gc.disable()
            sys.setswitchinterval(RT_SWITCH_INTERVAL_S)
        self._gc_start = _gc_count()
        self._faults_start = _faults()
        self._t_start, self._cpu_start = time.perf_counter(), time.process_time()
        self._stream.start_stream()
        return self

    def _restore_rt(self) -> None:
        if self._saved_rt is not None:
            interval, enabled = self._saved_rt
            self._saved_rt = None
            sys.setswitchinterval(interval)
            gc.unfreeze()
            if enabled:
                gc.enable()

    @property
    def active(self) -> bool:
        """Whether the stream is still running (its processor has not finished)."""
        return self._stream is not None and bool(self._stream.is_active())

    def wait(self, seconds: float | None = None, *, poll_s: float = 0.02, until=None) -> None:
        """Block until the processor is done, ``seconds`` pass, or ``until()`` is true."""
        t_end = None if seconds is None else time.perf_counter() + seconds
        while self._stream.is_active() and self.error is None:
            if t_end is not None and time.perf_counter() >= t_end:
                break
            if until is not None and until():
                break
            time.sleep(poll_s)

    def stop(self) -> StreamFigures:
        """Stop and close the stream; return its figures. Re-raises a processor error."""
        if self._stream is not None:
            self._wall = time.perf_counter() - self._t_start
            self._cpu = time.process_time() - self._cpu_start
            with _suppress_os():
                self._stream.stop_stream()
            figures = self.figures()
            figures.gc_collections = _gc_count() - self._gc_start
            minor, major = _faults()
            figures.minor_page_faults = minor - self._faults_start[0]
            figures.major_page_faults = major - self._faults_start[1]
            self._stream.close()
            self._stream = None
            self._last = figures
            self._restore_rt()
        if self.error is not None:
            err, self.error = self.error, None
            if isinstance(err, AudioDeviceError):
                raise err
            raise AudioDeviceError(f"the audio callback failed: {type(err).__name__}: {err}") from err
        return self._last

    def latencies_ms(self) -> tuple[float, float]:
        """(input, output) latency as PortAudio reports it for the open stream, in ms."""
        if self._stream is None:
            return 0.0, 0.0
        lat_in = self._stream.get_input_latency() if self.input_device is not None else 0.0
        return 1000.0 * lat_in, 1000.0 * self._stream.get_output_latency()

    def callback_durations_ms(self) -> np.ndarray:
        """Durations of the kept callbacks, in ms."""
        n = min(self._n_callbacks, TIMING_RING)
        return self._durations[:n].astype(np.float64) / 1e6

    def figures(self) -> StreamFigures:
        """Figures so far (the stream may still run)."""
        d = self.callback_durations_ms()
        wall = self._wall or (time.perf_counter() - self._t_start)
        cpu = self._cpu or (time.process_time() - self._cpu_start)
        lat_in, lat_out = self.latencies_ms()
        total_cb_s = float(d.sum()) / 1000.0 * (self._n_callbacks / max(len(d), 1))
        n = len(d)
        cpu_ms = self._cpu_durations[:n].astype(np.float64) / 1e6
        period_ms = 1000.0 * self.block / self.sample_rate
        delay = self.start_delays_ms()
        return StreamFigures(
            sample_rate=self.sample_rate, frames_per_buffer=self.block, callbacks=self._n_callbacks,
            frames=self.frames, xruns=self.xruns,
            callback_p50_ms=float(np.percentile(d, 50)) if len(d) else 0.0,
            callback_p99_ms=float(np.percentile(d, 99)) if len(d) else 0.0,
            callback_max_ms=float(d.max()) if len(d) else 0.0,
            block_period_ms=1000.0 * self.block / self.sample_rate,
            core_share=total_cb_s / wall if wall > 0 else 0.0,
            process_cpu_share=cpu / wall if wall > 0 else 0.0, wall_s=wall,
            input_latency_ms=lat_in, output_latency_ms=lat_out,
            callback_cpu_p50_ms=float(np.percentile(cpu_ms, 50)) if n else 0.0,
            callback_cpu_p99_ms=float(np.percentile(cpu_ms, 99)) if n else 0.0,
            callback_cpu_max_ms=float(cpu_ms.max()) if n else 0.0,
            late_callbacks=int(np.count_nonzero(d > period_ms)),
            start_delay_p99_ms=float(np.percentile(delay, 99)) if len(delay) else 0.0,
            start_delay_max_ms=float(delay.max()) if len(delay) else 0.0)

    def start_delays_ms(self) -> np.ndarray:
        """Per kept callback: how late it started after its cycle began, above the smallest such delay (ms).

        The cycle's start is PortAudio's ``current_time`` for the callback (stream time, taken when
        the host's cycle begins); the callback's start is ``perf_counter`` at its first line. Both
        run at nearly the same rate, so their difference is a slowly drifting offset plus the wait
        between the two: waking the callback's thread and taking the GIL. The offset is the
        smallest difference over the last :data:`START_DELAY_WINDOW_S` (a host clock that runs a
        little slow, as the dummy driver's does under load, drifts by far less than that window
        holds), taken per stretch between xrun-flagged callbacks (an xrun resets the host's clock
        against wall time). Callbacks that share a cycle (a block smaller than the host's period)
        wait for the ones before them too.
        """
        n = min(self._n_callbacks, TIMING_RING)
        if n < 2 or self._n_callbacks > TIMING_RING:
            return np.zeros(0)
        t = (self._starts[:n] - self._starts[0]) / 1e9
        c = self._cycle_s[:n] - self._cycle_s[0]
        if not np.any(c):
            return np.zeros(0)
        lag = t - c
        window = max(1, int(round(START_DELAY_WINDOW_S * self.sample_rate / self.block)))
        cuts = [0, *np.flatnonzero(self._xrun_at[:n]).tolist(), n]
        out = np.zeros(n)
        for a, b in itertools.pairwise(cuts):
            if b > a:
                seg = lag[a:b]
                padded = np.concatenate([np.full(window - 1, np.inf), seg])
                floor = np.lib.stride_tricks.sliding_window_view(padded, window).min(axis=1)
                out[a:b] = seg - floor
        return 1000.0 * out

    def __enter__(self) -> AudioStream:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self._stream is not None:
            self.stop()


def _faults() -> tuple[int, int]:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return 0, 0
    r = resource.getrusage(resource.RUSAGE_SELF)
    return int(r.ru_minflt), int(r.ru_majflt)


def _gc_count() -> int:
    return sum(int(g["collections"]) for g in gc.get_stats())


class _suppress_os:
    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        return typ is not None and issubclass(typ, OSError)
