"""Resynthesis: make a voice follow a new, time-varying pitch curve while keeping its formants.

Method choice (measured with ``tools/bench_correction.py`` on synthetic formant-filtered voices;
numbers in ``firmware/docs/correction.md``):

* ``'psola'`` (default) — TD-PSOLA driven by the plan's f0. The plan already knows f0, so the
  pitch marks come for free: analysis marks are where the integrated source phase
  ``∫ f0 dt`` crosses a whole cycle, synthesis marks where the integrated *target* phase does.
  Each synthesis mark copies the two-period Hann grain of the nearest analysis mark. Grains keep
  the spectral envelope, so formants stay put (no chipmunk), and the waveform inside a period
  is the singer's own (no vocoder buzz). Grains are centred on each period's energy centre
  (see :func:`_pulse_phase`) and placed at fractional positions; both matter for high voices.
  It is by far the fastest: 0.003-0.005 s per second of audio on one (shared) x86 core, i.e.
  0.5-0.9 s for a 3-minute 48 kHz take, inside the ~2-3 s budget.
* ``'world'`` — pyworld (CheapTrick envelope + D4C aperiodicity + synthesis) with the plan's
  f0 in place of its own tracker. Same envelope error and pitch accuracy within a cent, but
  about 0.13 s per second of audio (~24 s for 3 minutes: 30-40x PSOLA, far over budget on a
  Pi) and pyworld has no aarch64 wheel. Kept as a reference and for offline use.

Both process only the *voiced runs* (contiguous voiced frames) that contain a frame whose ratio
``target / source`` differs from 1, padded by :data:`EDGE_PAD_S` and cross-faded into the
original there. Everything else — unvoiced frames, and whole voiced runs left alone — is passed
through bit-exact. Inside a processed run, frames whose ratio is 1 are rebuilt by overlap-add and
match the input closely (Hann grains at one-period spacing sum to one), not bit-exact; working
per voiced run keeps the synthesis marks phase-locked to the original at each cross-fade, which
a cross-fade in the middle of a run after a shift could not (it would comb-filter).

Frame ``k`` of an f0 curve is at ``k * hop_s`` seconds; 0 Hz = unvoiced.

Examples
--------
>>> import numpy as np
>>> from melisma.render.resynth import shift_pitch
>>> sr, hop_s = 16000, 0.01
>>> t = np.arange(sr) / sr
>>> y = (0.3 * np.sin(2 * np.pi * 200 * t) + 0.1 * np.sin(2 * np.pi * 400 * t)).astype(np.float32)
>>> f0 = np.full(100, 200.0)
>>> out = shift_pitch(y, sr=sr, f0_hz=f0, hop_s=hop_s, target_f0_hz=f0 * 2 ** (2 / 12))
>>> out.shape == y.shape and out.dtype == np.float32
True
>>> bool(np.array_equal(shift_pitch(y, sr=sr, f0_hz=f0, hop_s=hop_s, target_f0_hz=f0), y))  # nothing to do
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import RenderError
from .stages import Stage, as_2d

#: Methods :func:`shift_pitch` knows.
METHODS = ("psola", "world")
#: Padding around each processed voiced run, also the cross-fade length (s).
EDGE_PAD_S = 0.02
#: Grain samples handled per vectorised overlap-add batch (bounds memory on small boards).
BATCH_SAMPLES = 1 << 19
#: Periods over which the grain-centring offset is averaged.
PULSE_SMOOTH_CYCLES = 5
#: WORLD's frame period (ms) when ``method='world'``.
WORLD_FRAME_MS = 5.0


def _check_inputs(y: Any, sr: int, f0_hz: Any, hop_s: float, target_f0_hz: Any, method: str):
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise RenderError(f"shift_pitch takes mono audio (samples,), got shape {y.shape}; process channels one by one")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise RenderError(f"sr must be a positive integer sample rate (e.g. 48000), got {sr!r}")
    f0 = np.asarray(f0_hz, dtype=np.float64)
    target = np.asarray(target_f0_hz, dtype=np.float64)
    if f0.ndim != 1 or target.shape != f0.shape:
        raise RenderError(f"f0_hz and target_f0_hz must be 1-D and the same length, got {f0.shape} and {target.shape}")
    if not (0 < hop_s <= 0.05):
        raise RenderError(f"hop_s must be a frame hop in seconds in (0, 0.05] (e.g. 0.01), got {hop_s!r}")
    if not (np.all(np.isfinite(f0)) and np.all(np.isfinite(target))) or np.any(f0 < 0) or np.any(target < 0):
        raise RenderError("f0_hz and target_f0_hz must be finite and >= 0 Hz (0 = unvoiced)")
    if method not in METHODS:
        raise RenderError(f"unknown resynthesis method {method!r}; use one of {', '.join(METHODS)}")
    return y, f0, target


def frame_ratios(f0_hz: np.ndarray, target_f0_hz: np.ndarray) -> np.ndarray:
    """``target / source`` per frame; 1 where either is unvoiced (those frames pass through)."""
    ratio = np.ones(f0_hz.shape)
    both = (f0_hz > 0) & (target_f0_hz > 0)
    ratio[both] = target_f0_hz[both] / f0_hz[both]
    return ratio


def processing_regions(f0_hz: np.ndarray, ratio: np.ndarray) -> list[tuple[int, int]]:
    """Frame ranges ``[a, b)`` to resynthesise: voiced runs holding at least one ratio != 1."""
    voiced = f0_hz > 0
    if not voiced.any():
        return []
    edges = np.flatnonzero(np.diff(np.r_[0, voiced.astype(np.int8), 0]))
    regions = []
    for a, b in zip(edges[::2], edges[1::2], strict=False):
        if np.any(ratio[a:b] != 1.0):
            regions.append((int(a), int(b)))
    return regions


def _region_curves(f0_hz, ratio, a, b, hop_s, sr, start, stop):
    """Per-sample source f0 and ratio for samples [start, stop), from frames [a, b) (voiced);
    outside the voiced run the source f0 is held and the ratio is 1.
    """
    frames = np.arange(a, b)
    times = frames * hop_s
    t = np.arange(start, stop) / sr
    log_f0 = np.interp(t, times, np.log(f0_hz[a:b]))
    rat = np.interp(t, np.r_[times[0] - hop_s, times, times[-1] + hop_s], np.r_[1.0, ratio[a:b], 1.0])
    return np.exp(log_f0), rat


def _pulse_phase(x: np.ndarray, phase: np.ndarray, sr: int) -> np.ndarray:
    """Per-sample offset (in cycles) from the integrated f0 phase to the energy centre of each
    period, smoothed over a few periods.

    PSOLA grains should be centred on the glottal pulse: between two harmonics a two-period
    Hann grain's spectrum is half of each, so they add only if the grain is centred where the
    harmonics line up in phase; off-centre grains leave holes between harmonics that the new
    harmonics then sample (a few dB of formant error on high voices). The circular mean of the
    energy's phase within each cycle finds that centre without picking peaks one by one.
    """
    n = x.size
    # Every `step`-th sample (about 12 kHz) is plenty to place an energy centre; 4x cheaper at 48 kHz.
    step = max(1, sr // 12000)
    ph = phase[:n:step]
    cycle = np.floor(ph).astype(np.int64)
    energy = x[::step].astype(np.float64) ** 2
    angle = 2.0 * np.pi * ph
    re: np.ndarray = np.bincount(cycle, weights=energy * np.cos(angle))
    im: np.ndarray = np.bincount(cycle, weights=energy * np.sin(angle))
    kernel = np.ones(PULSE_SMOOTH_CYCLES)
    re = np.convolve(re, kernel, mode="same")
    im = np.convolve(im, kernel, mode="same")
    offset = np.unwrap(np.arctan2(im, re)) / (2.0 * np.pi)
    return np.interp(phase[:n], np.arange(offset.size) + 0.5, offset)


def _marks(psi: np.ndarray) -> np.ndarray:
    """Sample positions (float) where the (monotonic) phase ``psi`` crosses whole cycles."""
    psi = np.maximum.accumulate(psi)
    cycles = np.arange(np.ceil(psi[0]), np.floor(psi[-1]) + 1)
    # np.interp needs strictly increasing x; flat stretches only occur in silence.
    keep = np.r_[True, np.diff(psi) > 0]
    return np.interp(cycles, psi[keep], np.flatnonzero(keep).astype(np.float64))


def _psola_region(x: np.ndarray, sr: int, f0: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """TD-PSOLA of ``x`` (one padded region) to pitch ``f0 * ratio``; output same length.

    Source and target phases start together, so while the ratio is 1 the synthesis marks are
    the analysis marks and each grain lands where it came from (the output equals the input up
    to the Hann overlap-add sum, which is one at one-period spacing). Grains are placed at
    fractional positions (linear interpolation of the source): rounding marks to samples would
    jitter a 600 Hz voice at 24 kHz by up to 20 cents.
    """
    n = x.size
    phase_src = np.concatenate(([0.0], np.cumsum(f0) / sr))[:n]
    phase_tgt = np.concatenate(([0.0], np.cumsum(f0 * ratio) / sr))[:n]
    offset = _pulse_phase(x, phase_src, sr)
    ana = _marks(phase_src - offset)
    syn = _marks(phase_tgt - offset)
    if ana.size == 0 or syn.size == 0:
        return x.astype(np.float64)
    # Nearest analysis mark for each synthesis mark.
    k = np.clip(np.searchsorted(ana, syn), 1, max(ana.size - 1, 1))
    if ana.size > 1:
        k = np.where(np.abs(ana[k - 1] - syn) <= np.abs(ana[k] - syn), k - 1, k)
    else:
        k = np.zeros(syn.size, dtype=np.int64)
    src = ana[k]
    dst = np.floor(syn).astype(np.int64)
    frac = syn - dst
    half = np.maximum(2, np.rint(sr / f0[np.clip(np.rint(src).astype(np.int64), 0, n - 1)]).astype(np.int64))
    off0 = int(half.max()) + 2
    xp = np.pad(x.astype(np.float64), (off0, off0 + 1))
    out = np.zeros(n + 2 * off0 + 1)
    base = src - frac
    base_int = np.floor(base).astype(np.int64)
    base_frac = base - base_int
    lengths = 2 * half + 2  # offsets -H .. H+1 cover a window centred anywhere in [dst, dst+1)
    ends = np.cumsum(lengths)
    first = 0
    while first < half.size:
        # Vectorised overlap-add in batches of grains (bincount is the fast scatter-add).
        last = int(np.searchsorted(ends, (ends[first - 1] if first else 0) + BATCH_SAMPLES, side="right"))
        last = max(last, first + 1)
        g = np.arange(first, last)
        lens = lengths[g]
        gid = np.repeat(g, lens)
        h = half[gid]
        o = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens) - h  # -H .. H+1
        rel = o - frac[gid]  # distance from the synthesis mark, in samples
        window = np.where(np.abs(rel) < h, 0.5 + 0.5 * np.cos(np.pi * rel / h), 0.0)
        # Source position src - frac + o: its fractional part is one number per grain.
        i0 = base_int[gid] + o + off0
        t = base_frac[gid]
        values = (xp[i0] * (1.0 - t) + xp[i0 + 1] * t) * window
        idx = dst[gid] + o + off0
        lo = int(idx.min())
        acc = np.bincount(idx - lo, weights=values)
        out[lo : lo + acc.size] += acc
        first = last
    # Grains of one source period spaced one target period apart sum to about ratio; undo it.
    return out[off0 : off0 + n] / ratio


def _world_region(x: np.ndarray, sr: int, f0: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    import pyworld

    period = WORLD_FRAME_MS / 1000.0
    frame_pos = np.arange(0.0, x.size / sr, period)
    idx = np.clip(np.rint(frame_pos * sr).astype(np.int64), 0, x.size - 1)
    src = np.ascontiguousarray(f0[idx], dtype=np.float64)
    xd = np.ascontiguousarray(x, dtype=np.float64)
    sp = pyworld.cheaptrick(xd, src, frame_pos, sr)
    ap = pyworld.d4c(xd, src, frame_pos, sr)
    y = pyworld.synthesize(np.ascontiguousarray(src * ratio[idx]), sp, ap, sr, WORLD_FRAME_MS)
    out = np.zeros(x.size)
    m = min(x.size, y.size)
    out[:m] = y[:m]
    return out


def shift_pitch(
    y: np.ndarray,
    *,
    sr: int,
    f0_hz: np.ndarray,
    hop_s: float,
    target_f0_hz: np.ndarray,
    method: str = "psola",
    in_place: bool = False,
) -> np.ndarray:
    """Resynthesise a mono voice so its pitch follows ``target_f0_hz``, formants kept.

    Parameters
    ----------
    y : ndarray
        Mono audio, (samples,).
    sr : int
        Sample rate of ``y``.
    f0_hz : ndarray
        Source f0 per frame (Hz, 0 = unvoiced); frame ``k`` at ``k * hop_s`` s.
    hop_s : float
        Frame hop in seconds.
    target_f0_hz : ndarray
        Wanted f0 per frame, same length; 0 or equal to the source leaves the frame alone.
    method : {'psola', 'world'}
        Resynthesis method (see the module notes for why PSOLA is the default).
    in_place : bool
        Write the result into ``y`` itself (a float32 C-contiguous array the caller owns): no
        second take-sized array. Each region still reads its original samples (where two padded
        regions overlap, the few samples the next one needs are kept aside before they are
        overwritten), so the result is exactly the copying one's.

    Returns
    -------
    ndarray
        float32, same length as ``y``; bit-exact copy outside the processed voiced runs.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    >>> f0 = np.zeros(50)                 # all unvoiced: nothing is touched
    >>> bool(np.array_equal(shift_pitch(y, sr=8000, f0_hz=f0, hop_s=0.02, target_f0_hz=f0), y))
    True
    """
    given = y
    y, f0, target = _check_inputs(y, sr, f0_hz, hop_s, target_f0_hz, method)
    ratio = frame_ratios(f0, target)
    in_place = in_place and y is given and y.flags.c_contiguous and y.flags.writeable
    out = y if in_place else y.copy()
    spans = [(a, b, start, min(y.size, stop)) for a, b, start, stop in region_spans(f0, ratio, hop_s=hop_s, sr=sr)]
    kept, kept_lo, written_hi = np.zeros(0, np.float32), 0, 0  # originals of [kept_lo, written_hi), overwritten
    for i, (a, b, start, stop) in enumerate(spans):
        if stop - start < 4:
            continue
        # A region starting inside the previous one's padded end (in place only) reads the kept originals.
        seg = np.concatenate([kept[start - kept_lo :], y[written_hi:stop]]) if start < written_hi else y[start:stop]
        if in_place:
            following = spans[i + 1][2] if i + 1 < len(spans) else stop
            kept, kept_lo, written_hi = seg[max(following, start) - start :].copy(), max(following, start), stop
        out[start:stop] = _corrected_region(seg, sr, f0, ratio, a, b, hop_s, start, stop, method=method,
                                            fade_out=stop < y.size)
    return out


def region_spans(f0_hz: np.ndarray, ratio: np.ndarray, *, hop_s: float, sr: int) -> list[tuple[int, int, int, int]]:
    """``(a, b, start, stop)`` per processed voiced run: frames ``[a, b)`` and the samples
    ``[start, stop)`` they are resynthesised over, padded by :data:`EDGE_PAD_S` (``stop`` is not
    clipped to the signal's length; the caller does that).
    """
    pad = int(round(EDGE_PAD_S * sr))
    return [(a, b, max(0, int(np.floor(a * hop_s * sr)) - pad), int(np.ceil((b - 1) * hop_s * sr)) + pad)
            for a, b in processing_regions(f0_hz, ratio)]


def _corrected_region(seg: np.ndarray, sr: int, f0: np.ndarray, ratio: np.ndarray, a: int, b: int, hop_s: float,
                      start: int, stop: int, *, method: str, fade_out: bool) -> np.ndarray:
    """One voiced run's samples ``seg = y[start:stop]`` resynthesised and cross-faded into the original."""
    pad = int(round(EDGE_PAD_S * sr))
    src_f0, rat = _region_curves(f0, ratio, a, b, hop_s, sr, start, stop)
    new = _psola_region(seg, sr, src_f0, rat) if method == "psola" else _world_region(seg, sr, src_f0, rat)
    fade = np.ones(seg.size)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(1, pad + 1) / (pad + 1))
    m = min(pad, seg.size // 2)
    if start > 0:
        fade[:m] = ramp[:m]
    if fade_out:
        fade[seg.size - m :] = ramp[:m][::-1]
    return (seg * (1.0 - fade) + new * fade).astype(np.float32)


@dataclass
class PitchCorrector(Stage):
    """Ornament-aware pitch correction as a render stage.

    Built from the plan's f0 curve, notes, ornaments and :class:`~melisma.render.correct.CorrectionSettings`;
    the target curve is computed once (and again only when the settings change).

    :meth:`correct` is the aligned whole-take form (what the engine's correction computes).
    As a stage, a voiced run is resynthesised as a whole (a cut inside a run would comb-filter,
    see the module notes), so the stage must see a run's end before it outputs the run's start:
    like the framed stages it returns its audio :meth:`latency_samples` late — the longest
    corrected run of this plan, padded — in one call as in a stream, and streamed blocks of any
    size give exactly what one call gives. A ``(channels, samples)`` input applies the same curve
    to every channel. The live monitor has its own low-latency corrector.

    Examples
    --------
    >>> import numpy as np
    >>> from melisma.render.correct import CorrectionSettings
    >>> stage = PitchCorrector(f0_hz=np.zeros(10), hop_s=0.01, notes=[], ornaments=[])
    >>> stage(np.zeros(1600, np.float32), 16000).shape
    (1600,)
    >>> stage.latency_samples(16000)  # nothing to correct: nothing to wait for
    0
    """

    f0_hz: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hop_s: float = 0.01
    notes: Sequence[Mapping] = field(default_factory=list)
    ornaments: Sequence[Mapping] = field(default_factory=list)
    settings: Any = None
    method: str = "psola"

    def __post_init__(self) -> None:
        from .correct import CorrectionSettings

        if self.settings is None:
            self.settings = CorrectionSettings()
        if self.method not in METHODS:
            raise RenderError(f"unknown resynthesis method {self.method!r}; use one of {', '.join(METHODS)}")
        self._cache_key: Any = None
        self._target: np.ndarray | None = None
        self._corrections: list[dict] = []
        self._spans_key: Any = None
        self._spans_memo: tuple[np.ndarray, list[tuple[int, int, int, int]]] = (np.ones(0), [])
        self.reset()

    def _curves(self) -> tuple[np.ndarray, np.ndarray]:
        from .correct import target_f0

        key = repr(self.settings)
        if self._target is None or key != self._cache_key:
            self._target, self._corrections = target_f0(
                self.f0_hz, hop_s=self.hop_s, notes=self.notes, ornaments=self.ornaments, settings=self.settings
            )
            self._cache_key = key
        return np.asarray(self.f0_hz, dtype=np.float64), self._target

    @property
    def corrections(self) -> list[dict]:
        """Per-note corrections of the last render (for the mix report)."""
        self._curves()
        return self._corrections

    def _spans(self, sr: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
        """The frame ratios and the runs to resynthesise, computed once per rate and settings
        (a stream calls this for every block).
        """
        f0, target = self._curves()
        key = (sr, self._cache_key)
        if self._spans_key != key:
            ratio = frame_ratios(f0, target)
            self._spans_memo = (ratio, region_spans(f0, ratio, hop_s=self.hop_s, sr=sr))
            self._spans_key = key
        return self._spans_memo

    def latency_samples(self, sr: int) -> int:
        """The longest corrected voiced run of this plan, padded (0 when nothing is corrected)."""
        return max((stop - start for _a, _b, start, stop in self._spans(sr)[1]), default=0)

    def correct(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """The whole take corrected, aligned (not late): :func:`shift_pitch` with the plan's curves."""
        f0, target = self._curves()
        x = np.asarray(audio, dtype=np.float32)

        def one(channel: np.ndarray) -> np.ndarray:
            return shift_pitch(channel, sr=sr, f0_hz=f0, hop_s=self.hop_s, target_f0_hz=target, method=self.method)

        return one(x) if x.ndim == 1 else np.stack([one(ch) for ch in x])

    def reset(self) -> None:
        self._position = 0  # input samples received
        self._held = np.zeros((0, 0), np.float32)  # input from sample `_held_from` on
        self._held_from = 0
        self._done_runs: dict[int, np.ndarray] = {}

    def process(self, audio: np.ndarray, sr: int) -> np.ndarray:
        x = as_2d(audio)
        f0, _target = self._curves()
        ratio, spans = self._spans(sr)
        late = self.latency_samples(sr)
        n = x.shape[1]
        if self._held.shape[0] != x.shape[0]:
            self._held = np.zeros((x.shape[0], 0), np.float32)
        self._held = np.concatenate([self._held, x], axis=1)
        self._position += n
        # This call returns output samples [position - n, position): the corrected take's samples
        # [c0, c1), `late` earlier. Every run they touch ends by `position` (a run is <= `late` long).
        c1 = self._position - late
        c0 = c1 - n
        out = np.zeros((x.shape[0], n), np.float32)
        lo = max(c0, 0)
        if c1 > lo:
            out[:, lo - c0 :] = self._held[:, lo - self._held_from : c1 - self._held_from]
            for k, (a, b, start, stop) in enumerate(spans):
                if stop <= lo or start >= c1 or stop - start < 4:
                    continue
                run = self._done_runs.get(k)
                if run is None:
                    seg = self._held[:, start - self._held_from : stop - self._held_from]
                    run = np.stack([_corrected_region(ch, sr, f0, ratio, a, b, self.hop_s, start, stop,
                                                      method=self.method, fade_out=True) for ch in seg])
                    self._done_runs[k] = run
                s0, s1 = max(start, lo), min(stop, c1)  # later runs overwrite earlier ones, as in shift_pitch
                out[:, s0 - c0 : s1 - c0] = run[:, s0 - start : s1 - start]
            self._done_runs = {k: r for k, r in self._done_runs.items() if spans[k][3] > c1}
        # Keep what the next call can still need: runs ending after c1 start after c1 - late.
        keep_from = max(self._held_from, c1 - late)
        self._held = self._held[:, keep_from - self._held_from :]
        self._held_from = keep_from
        return out[0] if audio.ndim == 1 else out

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "stage": self.name,
            "method": self.method,
            "correction": s.correction,
            "ornaments": s.ornaments,
            "max_shift_cents": s.max_shift_cents,
        }
