"""The master bus for phone listening (balance is :mod:`melisma.render.balance`).

The master (:func:`master`) brings the mix to a target integrated loudness (default -14 LUFS, what
the streaming services and phones play at) with true peaks at or below a ceiling (default
-1 dBTP), using :class:`~melisma.render.limiter.TruePeakLimiter`: gain computed from the 4x-oversampled peak envelope,
with look-ahead, a hold, smooth attack (two cascaded moving averages over the look-ahead) and
an exponential release. Gain, limiting and loudness are iterated until the loudness is within
0.1 LU of the target; the true peak of the result is then verified with an independent
measurement (:func:`melisma.analysis.loudness.true_peak_dbtp`). It also checks mono
compatibility (phone speakers sum to mono): the L/R correlation and the loudness lost when summed
to mono are reported, and the stereo image is narrowed (side signal turned down) when the mono sum
would lose more than ``max_mono_drop_lu``.

Everything streams in blocks, so the only large allocation is the output itself.

Examples
--------
>>> import numpy as np
>>> from melisma.render.master import master
>>> sr = 48000
>>> rng = np.random.default_rng(0)
>>> mix = (0.05 * rng.standard_normal((2, 5 * sr))).astype(np.float32)
>>> out, report = master(mix, sr=sr, target_lufs=-14.0)
>>> abs(report["integrated_lufs"] + 14.0) <= 0.5, report["true_peak_dbtp"] <= -1.0
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analysis.loudness import CHUNK_SAMPLES, LoudnessMeter, TruePeakMeter, abs_peak
from ..errors import RenderError
from .limiter import TruePeakLimiter
from .stages import as_2d, check_finite, db_to_gain


def measure_mix(mix: np.ndarray, sr: int) -> LoudnessMeter:
    """One K-weighted pass over a mix: the master's meter of its input (stereo terms for two channels).

    Fed in :data:`~melisma.analysis.loudness.CHUNK_SAMPLES` chunks from the start, as
    :func:`~melisma.render.balance.balance_into` feeds the meter it hands the master, so the two
    measure alike to the last bit.
    """
    x = as_2d(mix)
    meter = LoudnessMeter(sr, channels=x.shape[0], stereo=x.shape[0] == 2)
    for a in range(0, x.shape[1], CHUNK_SAMPLES):
        meter.add(x[:, a : a + CHUNK_SAMPLES])
    return meter


def mono_compatibility(mix: np.ndarray, *, sr: int) -> dict[str, float]:
    """L/R correlation and loudness lost when a stereo mix is summed to mono.

    ``correlation`` is the broadband Pearson correlation of left and right (1: mono, 0:
    unrelated, negative: out of phase); ``mono_loudness_drop_lu`` is the stereo integrated
    loudness minus that of (L+R)/2 on both channels (0 for mono content, ~3 LU for unrelated
    channels, large when the channels cancel).

    Examples
    --------
    >>> import numpy as np
    >>> y = np.random.default_rng(0).standard_normal(48000).astype(np.float32)
    >>> mono_compatibility(np.stack([y, -y]), sr=48000)["correlation"]
    -1.0
    """
    mix = np.asarray(mix, dtype=np.float32)
    if mix.ndim != 2 or mix.shape[0] != 2:
        raise RenderError(f"mono_compatibility needs stereo (2, samples), got shape {mix.shape}")
    m = measure_mix(mix, sr)
    stereo, mono = m.stereo_lufs(), m.mono_lufs()
    return {"correlation": round(m.correlation, 4), "mono_loudness_drop_lu": _drop(stereo, mono)}


def _drop(stereo: float, mono: float) -> float:
    if not math.isfinite(stereo):
        return 0.0
    return float(stereo - mono) if math.isfinite(mono) else math.inf


def master(
    mix: np.ndarray,
    *,
    sr: int,
    target_lufs: float = -14.0,
    ceiling_dbtp: float = -1.0,
    max_mono_drop_lu: float = 3.0,
    max_limiting_lu: float = 6.0,
    lookahead_ms: float = 5.0,
    release_ms: float = 80.0,
    oversample: int = 4,
    tolerance_lu: float = 0.1,
    max_passes: int = 6,
    block_samples: int = 1 << 17,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Master a mix for phone listening: loudness target, true-peak ceiling, mono check.

    Parameters
    ----------
    mix : (2, n) stereo (or (n,) mono) float32.
    sr : sample rate, Hz.
    target_lufs : integrated loudness wanted (BS.1770-4); reached within ``tolerance_lu``.
    ceiling_dbtp : highest true peak allowed (4x oversampled), dBTP.
    max_mono_drop_lu : if the mono sum would be this much quieter than the stereo mix, the side
        signal is turned down until it is not (phones and Bluetooth speakers play mono).
    max_limiting_lu : the most loudness the limiter may squash away; a target that needs more is
        refused (it would pump and distort), naming a target that would work.
    lookahead_ms, release_ms, oversample : the limiter's settings.
    tolerance_lu : how close to the target the loudness iteration stops.
    max_passes : most limiter passes over the mix (each is a full render).
    block_samples : streaming block length (memory/speed trade-off).

    Returns
    -------
    mastered, report
        ``mastered`` has the shape of ``mix``. ``report`` keys: ``integrated_lufs``,
        ``true_peak_dbtp``, ``sample_peak_dbfs``, ``target_lufs``, ``ceiling_dbtp``, ``gain_db``,
        ``limiter_max_gr_db``, ``limiter_loudness_loss_lu``, ``input_lufs``, ``iterations``, and
        ``mono``: ``correlation``, ``mono_loudness_drop_lu`` (of the result), ``input_mono_loudness_drop_lu``,
        ``side_gain`` (1.0 unless narrowed), ``narrowed``.

    Raises
    ------
    RenderError
        Silent or invalid input, or a target the ceiling does not allow without heavy limiting.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> mix = 0.5 * np.sin(2 * np.pi * 220 * np.arange(3 * sr) / sr).astype(np.float32)
    >>> out, report = master(np.stack([mix, mix]), sr=sr, target_lufs=-16.0)
    >>> round(report["integrated_lufs"]), report["mono"]["narrowed"]
    (-16, False)
    """
    mix = np.asarray(mix, dtype=np.float32)
    if mix.ndim not in (1, 2) or (mix.ndim == 2 and mix.shape[0] not in (1, 2)):
        raise RenderError(f"master: mix must be (samples,) or (channels<=2, samples), got shape {mix.shape}")
    # One implementation: the streaming master, writing into a buffer of the mix's shape.
    out = np.empty_like(mix)
    report = master_stream(
        mix,
        sr=sr,
        out=out,
        target_lufs=target_lufs,
        ceiling_dbtp=ceiling_dbtp,
        max_mono_drop_lu=max_mono_drop_lu,
        max_limiting_lu=max_limiting_lu,
        lookahead_ms=lookahead_ms,
        release_ms=release_ms,
        oversample=oversample,
        tolerance_lu=tolerance_lu,
        max_passes=max_passes,
        block_samples=block_samples,
    )
    return out, report


def master_stream(
    mix: np.ndarray,
    *,
    sr: int,
    writer: Any = None,
    out: np.ndarray | None = None,
    target_lufs: float = -14.0,
    ceiling_dbtp: float = -1.0,
    max_mono_drop_lu: float = 3.0,
    max_limiting_lu: float = 6.0,
    lookahead_ms: float = 5.0,
    release_ms: float = 80.0,
    oversample: int = 4,
    tolerance_lu: float = 0.3,
    max_passes: int = 4,
    block_samples: int = CHUNK_SAMPLES,
    meter: LoudnessMeter | None = None,
    peak_meter: TruePeakMeter | None = None,
) -> dict[str, Any]:
    """:func:`master`, streamed block by block into an audio writer or a caller's buffer.

    The mastered mix is never held whole: gain, mono narrowing and the true-peak limiter run
    block by block into ``writer`` (an :class:`melisma.audio_io.AudioWriter`, or anything with
    ``write(block)`` and ``restart()``) or into ``out``, while output loudness, true peak,
    sample peak and the stereo/mono measures are taken on the fly. The first pass usually lands
    within ``tolerance_lu`` (the limiter takes little loudness from a mix with headroom); when
    heavy limiting makes it miss, the pass is redone with a corrected gain (the writer is
    restarted), as :func:`master` iterates.

    Parameters
    ----------
    mix : (2, n) or (1, n) float32, not modified.
    writer : receives (channels, block) float32 blocks; ``restart()`` is called before a redo.
    out : (channels, n) float32 buffer instead of a writer (must not be ``mix`` itself: a redo
        needs the input again).
    tolerance_lu : how far from the target the loudness may land without a redo (0.3 LU is
        inaudible; :func:`master` uses 0.1 with a full in-memory buffer).
    max_passes : most passes (each writes the whole output).
    meter : the mix's :class:`~melisma.analysis.loudness.LoudnessMeter`, if whoever formed the mix
        already measured it (:func:`~melisma.render.balance.balance_into` does, as it sums): the
        master's gain search and mono check then start from it instead of filtering the mix again.
        ``None``: the master measures the mix itself (:func:`measure_mix`).
    peak_meter : the mix's :class:`~melisma.analysis.loudness.TruePeakMeter` (with ``meter``), either
        fed the mix as it was formed or new and empty, for the master to feed the mix only if it
        needs the mix's true peak: a pass whose gain keeps the mix's true peak under the limiter's
        ceiling (and that narrows nothing) then leaves the limiter out, which would pass the audio
        unchanged, and reads the output's loudness, peaks and mono figures from the two meters at
        that gain instead of measuring the output again (the same samples are written). An empty
        meter is fed only when the mix's sample peak at that gain is under the ceiling: a mix the
        limiter must touch never pays for its true peak.
    Others as in :func:`master`.

    Returns
    -------
    dict
        The report of :func:`master`, plus ``passes``.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 48000
    >>> rng = np.random.default_rng(0)
    >>> mix = (0.05 * rng.standard_normal((2, 5 * sr))).astype(np.float32)
    >>> out = np.empty_like(mix)
    >>> report = master_stream(mix, sr=sr, out=out, target_lufs=-14.0)
    >>> abs(report["integrated_lufs"] + 14.0) <= 0.3, report["true_peak_dbtp"] <= -1.0
    (True, True)
    """
    mix = np.asarray(mix, dtype=np.float32)
    x = as_2d(mix)
    if x.ndim != 2 or x.shape[0] not in (1, 2):
        raise RenderError(f"master_stream: mix must be (samples,) or (channels<=2, samples), got shape {mix.shape}")
    if (writer is None) == (out is None):
        raise RenderError("master_stream: give exactly one of writer= (an AudioWriter) or out= (a buffer)")
    if out is not None:
        if out.shape != mix.shape or out.dtype != np.float32:
            raise RenderError(f"master_stream: out must be float32 {mix.shape}, got {out.dtype} {out.shape}")
        if np.shares_memory(out, mix):
            raise RenderError("master_stream: out must not share memory with mix (a second pass re-reads the mix)")
    if not -40.0 <= target_lufs <= 0.0:
        raise RenderError(f"master: target_lufs={target_lufs} is out of range; use -40 to 0 LUFS (-14 for phones and streaming)")
    if not -20.0 <= ceiling_dbtp <= 0.0:
        raise RenderError(f"master: ceiling_dbtp={ceiling_dbtp} is out of range; use -20 to 0 dBTP (-1 for lossy phone codecs)")
    check_finite(x, "master: mix")
    if meter is not None and (meter.channels != x.shape[0] or meter.n_samples != x.shape[1]
                              or meter.stereo != (x.shape[0] == 2)):
        raise RenderError(f"master_stream: the meter measured {meter.n_samples} samples of {meter.channels} channel(s), "
                          f"the mix has shape {x.shape}; pass the meter of this mix or none")
    if peak_meter is not None and (meter is None or peak_meter.channels != x.shape[0]
                                   or peak_meter.n_samples not in (0, x.shape[1])):
        raise RenderError(f"master_stream: the peak meter measured {peak_meter.n_samples} samples of {peak_meter.channels} "
                          f"channel(s), the mix has shape {x.shape}; pass it (fed the mix, or empty) with the mix's "
                          "loudness meter, or neither")
    stereo = _StereoNarrowing.measure(x, sr, max_mono_drop_lu=max_mono_drop_lu, meter=meter)
    limiter = TruePeakLimiter(ceiling_dbtp=ceiling_dbtp, lookahead_ms=lookahead_ms, release_ms=release_ms, oversample=oversample)
    one_pass = _MasterPass(
        x,
        sr=sr,
        limiter=limiter,
        side_gain=stereo.side_gain,
        oversample=oversample,
        block_samples=block_samples,
        writer=writer,
        out=None if out is None else as_2d(out),
        mono_output=mix.ndim == 1,
        source_meters=(meter, peak_meter) if meter is not None and peak_meter is not None else None,
    )
    gain_db, result, passes = loudness_gain_search(
        one_pass,
        source_lufs=stereo.source_lufs,
        target_lufs=target_lufs,
        ceiling_dbtp=ceiling_dbtp,
        tolerance_lu=tolerance_lu,
        max_passes=max_passes,
        max_limiting_lu=max_limiting_lu,
        writer=writer,
    )
    out_lufs, max_gr, peak, sample_peak = result["lufs"], result["max_gr"], result["peak"], result["sample_peak"]
    return {
        "integrated_lufs": out_lufs,
        "true_peak_dbtp": peak,
        "sample_peak_dbfs": 20.0 * math.log10(sample_peak) if sample_peak > 0 else -math.inf,
        "target_lufs": float(target_lufs),
        "ceiling_dbtp": float(ceiling_dbtp),
        "gain_db": gain_db,
        "limiter_max_gr_db": max_gr,
        "limiter_loudness_loss_lu": stereo.source_lufs + gain_db - out_lufs,
        "input_lufs": stereo.input_lufs,
        "iterations": passes,
        "passes": passes,
        "mono": stereo.report(result.get("mono")),
    }


@dataclass
class _StereoNarrowing:
    """The mix's loudness, its mono sum, and how far the side signal is turned down to keep the
    mono sum within ``max_mono_drop_lu`` (phone speakers sum to mono).
    """

    input_lufs: float
    mono_lufs: float
    correlation: float
    input_drop: float
    side_gain: float
    source_lufs: float  # the loudness after narrowing: what the gain search starts from
    channels: int

    @classmethod
    def measure(cls, x: np.ndarray, sr: int, *, max_mono_drop_lu: float, meter: LoudnessMeter | None = None) -> _StereoNarrowing:
        channels = x.shape[0]
        measure = meter if meter is not None else measure_mix(x, sr)
        if channels == 2:
            input_lufs, mono_lufs, correlation = measure.stereo_lufs(), measure.mono_lufs(), measure.correlation
        else:
            input_lufs = measure.integrated_lufs()
            mono_lufs, correlation = input_lufs, 1.0
        if not math.isfinite(input_lufs):
            raise RenderError("master: the mix is silent (integrated loudness -inf LUFS); check the vocal and backing levels")
        input_drop = _drop(input_lufs, mono_lufs)
        side_gain = 1.0
        if channels == 2 and input_drop > max_mono_drop_lu:
            lo, hi = 0.0, 1.0
            for _ in range(30):
                mid = (lo + hi) / 2.0
                if _drop(measure.stereo_lufs(side_gain=mid), mono_lufs) > max_mono_drop_lu:
                    hi = mid
                else:
                    lo = mid
            side_gain = lo
        source_lufs = measure.stereo_lufs(side_gain=side_gain) if channels == 2 else input_lufs
        return cls(
            input_lufs=input_lufs,
            mono_lufs=mono_lufs,
            correlation=correlation,
            input_drop=input_drop,
            side_gain=side_gain,
            source_lufs=source_lufs,
            channels=channels,
        )

    def report(self, output_mono: dict[str, Any] | None) -> dict[str, Any]:
        """The master report's ``mono`` section, from the output's own mono measures."""
        if self.channels != 2:
            return {
                "correlation": 1.0,
                "mono_loudness_drop_lu": 0.0,
                "input_mono_loudness_drop_lu": 0.0,
                "input_correlation": 1.0,
                "side_gain": 1.0,
                "narrowed": False,
            }
        mono_report = dict(output_mono or {})
        mono_report.update(
            input_mono_loudness_drop_lu=self.input_drop,
            input_correlation=round(self.correlation, 4),
            side_gain=round(self.side_gain, 4),
            narrowed=self.side_gain != 1.0,
        )
        return mono_report


class _MasterPass:
    """One pass of the master over the whole mix: gain, mono narrowing and the limiter, block by
    block into the writer or buffer, measuring the output (loudness, peaks, stereo) as it goes.
    """

    def __init__(
        self,
        x: np.ndarray,
        *,
        sr: int,
        limiter: TruePeakLimiter,
        side_gain: float,
        oversample: int,
        block_samples: int,
        writer: Any,
        out: np.ndarray | None,
        mono_output: bool,
        source_meters: tuple[LoudnessMeter, TruePeakMeter] | None = None,
    ):
        self.x, self.sr, self.limiter, self.side_gain = x, sr, limiter, side_gain
        self.oversample, self.block_samples = oversample, block_samples
        self.writer, self.out, self.mono_output = writer, out, mono_output
        self.latency = limiter.latency_samples(sr)
        self.ceiling_lin = np.float32(db_to_gain(limiter.ceiling_dbtp))
        self.source_meters = source_meters
        self._sample_peak: float | None = None  # the mix's, when an empty peak meter is to be fed

    def _untouched(self, gain_db: float, ceiling: float) -> bool:
        """Whether the limiter would pass this gain's output unchanged: its true peak stays under the
        pass's ceiling (with room for float rounding) and nothing is narrowed.
        """
        if self.source_meters is None or self.side_gain != 1.0:
            return False
        peak_meter = self.source_meters[1]
        if peak_meter.n_samples == 0:  # not measured yet: only if the sample peak leaves room
            if self._sample_peak is None:
                self._sample_peak = abs_peak(self.x)
            if self._sample_peak == 0.0 or 20.0 * math.log10(self._sample_peak) + gain_db > ceiling - 1e-3:
                return False  # the true peak is never below the sample peak
            for a in range(0, self.x.shape[1], CHUNK_SAMPLES):  # the chunks balance would have fed
                peak_meter.add(self.x[:, a : a + CHUNK_SAMPLES])
        peak_dbtp = peak_meter.dbtp
        return math.isfinite(peak_dbtp) and peak_dbtp + gain_db <= ceiling - 1e-3

    def _gained(self, gain_db: float, write: bool) -> dict[str, Any]:
        """A pass the limiter would leave alone: the mix times the gain, its figures from the mix's meters."""
        assert self.source_meters is not None  # only called when _untouched()
        meter, peak_meter = self.source_meters
        x, writer, out2 = self.x, self.writer, self.out
        gain = np.float32(db_to_gain(gain_db))
        for a in range(0, x.shape[1], self.block_samples):
            block = x[:, a : a + self.block_samples] * gain
            if writer is None:
                assert out2 is not None
                out2[:, a : a + block.shape[1]] = block
            elif write:
                writer.write(block[0] if self.mono_output else block)
        self.limiter.reset()
        result: dict[str, Any] = {
            "lufs": meter.integrated_lufs(gain_db=gain_db),
            "max_gr": 0.0,
            "peak": peak_meter.dbtp + gain_db,
            "sample_peak": peak_meter.sample_peak * float(gain),
        }
        if x.shape[0] == 2:
            result["mono"] = {
                "correlation": round(float(meter.correlation), 4),
                "mono_loudness_drop_lu": _drop(meter.stereo_lufs(gain_db=gain_db), meter.mono_lufs(gain_db=gain_db)),
            }
        return result

    def __call__(self, gain_db: float, ceiling: float, write: bool = True) -> dict[str, Any]:
        if self._untouched(gain_db, ceiling):
            return self._gained(gain_db, write)
        x, sr, limiter, writer, out2 = self.x, self.sr, self.limiter, self.writer, self.out
        channels, n = x.shape
        latency, ceiling_lin, side_gain = self.latency, self.ceiling_lin, self.side_gain
        limiter.ceiling_dbtp = ceiling
        limiter.reset()
        meter = LoudnessMeter(sr, channels=channels, stereo=channels == 2)
        peak_meter = TruePeakMeter(channels=channels, oversample=self.oversample)
        gain = np.float32(db_to_gain(gain_db))
        position = -latency

        def emit(y: np.ndarray) -> None:
            nonlocal position
            start, position = position, position + y.shape[1]
            lo, hi = max(start, 0), min(position, n)
            if hi <= lo:
                return
            block = y[:, lo - start : hi - start]
            np.clip(block, -ceiling_lin, ceiling_lin, out=block)  # no-op unless the limiter overshoots
            meter.add(block)
            peak_meter.add(block)
            if writer is None:
                assert out2 is not None
                out2[:, lo:hi] = block
            elif write:
                writer.write(block[0] if self.mono_output else block)

        for a in range(0, n, self.block_samples):
            block = x[:, a : a + self.block_samples]
            if side_gain != 1.0:
                mid = (block[0] + block[1]) * np.float32(0.5)
                side = (block[0] - block[1]) * np.float32(0.5 * side_gain)
                block = np.stack([mid + side, mid - side])
            emit(limiter(block * gain, sr, reset=False))
        emit(limiter(np.zeros((channels, latency), np.float32), sr, reset=False))
        result: dict[str, Any] = {
            "lufs": meter.integrated_lufs(),
            "max_gr": limiter.max_gain_reduction_db,
            "peak": peak_meter.dbtp,
            "sample_peak": peak_meter.sample_peak,
        }
        if channels == 2:
            result["mono"] = {
                "correlation": round(float(meter.correlation), 4),
                "mono_loudness_drop_lu": _drop(meter.stereo_lufs(), meter.mono_lufs()),
            }
        return result


def loudness_gain_search(
    one_pass: Any,
    *,
    source_lufs: float,
    target_lufs: float,
    ceiling_dbtp: float,
    tolerance_lu: float,
    max_passes: int,
    max_limiting_lu: float,
    writer: Any = None,
) -> tuple[float, dict[str, Any], int]:
    """Find the gain that lands the limited output on ``target_lufs``: ``(gain_db, last pass, passes)``.

    ``one_pass(gain_db, ceiling_dbtp, write=...)`` renders and measures the whole mix. The first
    guess is the plain loudness difference; a miss (heavy limiting takes loudness) is corrected by
    the measured slope, then by interpolating between the passes on either side of the target. A
    pass whose true peak overshoots the ceiling lowers the limiter's ceiling by the overshoot. The
    first pass goes straight to the writer (most mixes land on target at once); if it has to be
    redone, the next passes only measure, and one last pass writes: an encoder (AAC is ~2 s per 3
    minutes) then runs at most twice however many passes the search takes.
    """
    margin_db = 0.1
    gain_db = target_lufs - source_lufs
    below: tuple[float, float] | None = None
    above: tuple[float, float] | None = None
    previous: tuple[float, float] | None = None
    passes = 0
    write_pass = True
    written = False
    while True:
        passes += 1
        if write_pass and written and writer is not None:
            writer.restart()
        result = one_pass(gain_db, ceiling_dbtp - margin_db, write=write_pass)
        written = written or write_pass
        wrote_this = write_pass
        out_lufs, max_gr, peak = result["lufs"], result["max_gr"], result["peak"]
        error = target_lufs - out_lufs
        loss = source_lufs + gain_db - out_lufs
        if error > 0 and loss > max_limiting_lu:
            workable = math.floor((out_lufs - (loss - max_limiting_lu) - 0.5) * 2.0) / 2.0
            raise RenderError(
                f"master: target_lufs={target_lufs:g} needs the limiter to squash more than {loss:.1f} LU of loudness "
                f"(peaks reduced by up to {max_gr:.1f} dB) to keep this mix under {ceiling_dbtp:g} dBTP, more than "
                f"max_limiting_lu={max_limiting_lu:g}; use target_lufs={workable:g} or lower, or a higher ceiling_dbtp"
            )
        if passes >= max_passes or (abs(error) <= tolerance_lu and peak <= ceiling_dbtp):
            if writer is not None and not wrote_this:
                writer.restart()
                one_pass(gain_db, ceiling_dbtp - margin_db, write=True)  # deterministic: the measured pass again
            return gain_db, result, passes
        write_pass = writer is None
        if peak > ceiling_dbtp:
            margin_db += peak - ceiling_dbtp + 0.02
        if abs(error) > tolerance_lu:
            point = (gain_db, out_lufs)
            if error > 0:
                below = point
            else:
                above = point
            if below and above:
                span = above[0] - below[0]
                guess = below[0] + (target_lufs - below[1]) * span / (above[1] - below[1])
                gain_db = min(max(guess, below[0] + 0.1 * span), above[0] - 0.1 * span)
            else:
                slope = 1.0
                if previous is not None and previous[0] != gain_db:
                    slope = min(1.0, max(0.1, (out_lufs - previous[1]) / (gain_db - previous[0])))
                gain_db += max(-12.0, min(12.0, error / slope))
            previous = point
