"""Live ornament-aware pitch correction for the monitor (耳返): a few ms of added latency.

Three parts run in the audio callback, block by block, with no lookahead:

1. **Pitch** (:class:`LiveYin`): a time-domain YIN (de Cheveigné & Kawahara 2002) on the last
   ``2 * sr / fmin`` samples (25 ms at 80 Hz, 2 periods of the lowest f0 of the singer's range),
   difference function by FFT, cumulative-mean normalisation, absolute threshold, parabolic
   interpolation. One estimate per ~2.7 ms. The range is the singer's (``fmin_hz``..``fmax_hz``).
2. **Note centre** (:class:`NoteCentre`): the pitch in cents smoothed by a running mean over
   180 ms (one period of a 5.6 Hz vibrato: a zero there, at most ~20 % of a 4.5-7 Hz vibrato
   leaks through; 90 ms of lag; two cascaded means, 200 + 150 ms, null vibrato better but lag
   175 ms and followed real singers' drift worse in ``tools/eval_live_correction.py``). Only this
   slowly moving centre is pulled toward the target; vibrato and slides ride on top of it
   untouched. It restarts at a voicing onset and when the pitch stays far (> 250 cents) from
   the centre for 40 ms (a new note: it restarts from the mean of those 40 ms); shorter
   excursions (octave slips, glitches) are not averaged in. The target is the
   nearest note of the key (or the reference melody's note at the backing's playhead, in the
   singer's octave), kept until another note is nearer by :data:`HYSTERESIS_CENTS`. The shift
   ``amount * (target - centre)`` moves toward its new value at most :data:`SLEW_CENTS_PER_S`,
   and back to 0 after :data:`UNVOICED_HOLD_S` of unvoiced input.
3. **Shifter** (:class:`PsolaShifter`): a delay line read at the ratio ``2 ** (cents / 1200)``;
   when the read head has drifted out of ``[d_lo, d_lo + P]`` (``P``: the current pitch
   period) it jumps by exactly one period (so the two heads are in phase) with a crossfade over
   one period (at most 5 ms): pitch-synchronous grains, as zita-at1 and x42-fat1 do. The
   added latency is the head's delay: ``d_lo + P/2`` on average, at most ``d_lo + sr/fmin``
   (≈ 13.5 ms at 80 Hz / 48 kHz, 128-frame blocks; 1 + 2.5 ms for a 200 Hz voice).

Nothing is read ahead: the audio path's added latency is the shifter's delay alone; the tracker
and the centre only steer the ratio (their lag shows as the correction's reaction time, like a
"retune speed", which is what keeps ornaments).

Examples
--------
>>> import numpy as np
>>> from melisma.analysis.key import parse_key
>>> sr = 48000
>>> t = np.arange(sr) / sr
>>> x = (0.3 * np.sin(2 * np.pi * 440 * 2 ** (30 / 1200) * t)).astype(np.float32)  # A4 + 30 cents
>>> c = LiveCorrector(amount=1.0, target=LiveTarget(scale=parse_key("A minor")))
>>> c.prepare(sample_rate=sr, frames_per_buffer=128)
>>> y = np.concatenate([c.process(x[i:i + 128]).copy() for i in range(0, sr, 128)])
>>> round(c.shift_cents)  # the centre (A4 + 30) is pulled down onto A4
-30
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import AudioDeviceError

#: The singer's range the tracker searches (Hz); narrower is cheaper and safer.
DEFAULT_FMIN_HZ = 80.0
DEFAULT_FMAX_HZ = 1000.0
#: YIN's absolute threshold on the cumulative-mean-normalised difference.
YIN_THRESHOLD = 0.15
#: Above this minimum the frame is unvoiced.
YIN_UNVOICED = 0.35
#: Input below this RMS (dBFS) is unvoiced.
GATE_DB = -55.0
#: Note-centre running means (s), cascaded: one of 180 ms (a zero at 5.6 Hz).
CENTRE_MEANS_S: tuple[float, ...] = (0.180,)
#: The centre restarts when the pitch stays this far away (cents) for :data:`JUMP_HOLD_S`.
JUMP_CENTS = 250.0
JUMP_HOLD_S = 0.040
#: A new target is taken only when it is this much nearer (cents) than the current one.
HYSTERESIS_CENTS = 30.0
#: The applied shift moves at most this fast (cents per second).
SLEW_CENTS_PER_S = 1500.0
#: The largest shift applied (cents).
MAX_SHIFT_CENTS = 200.0
#: Keep the shift through this much unvoiced input (consonants), then let it go to 0.
UNVOICED_HOLD_S = 0.060
#: Longest crossfade of the shifter (s).
MAX_FADE_S = 0.005
#: The tracker runs once per at least this many seconds of input.
MIN_HOP_S = 0.0025
RING = 1 << 14


@dataclass
class LiveTarget:
    """Where live note centres are pulled: the key's notes, or the reference melody at the playhead.

    Parameters
    ----------
    scale : melisma.analysis.key.Scale, optional
        The key; ``None``: every semitone (chromatic).
    melody : sequence of (start_s, end_s, midi), optional
        Reference notes on the backing's time line; where one sounds at the playhead it is the
        target (in the octave nearest the singer), elsewhere the key is.
    tuning_cents : float
        The band's tuning away from A440 (cents); every target moves with it.
    """

    scale: Any = None
    melody: Sequence[tuple[float, float, float]] = field(default_factory=list)
    tuning_cents: float = 0.0

    def __post_init__(self) -> None:
        mel = sorted((float(a), float(b), float(m)) for a, b, m in self.melody)
        self._starts = np.array([m[0] for m in mel], np.float64)
        self._mel = mel

    @property
    def name(self) -> str:
        """What the target is, for messages and JSON."""
        key = getattr(self.scale, "name", None) or "chromatic"
        return f"melody ({len(self._mel)} notes) else {key}" if self._mel else key

    def _melody_at(self, t_s: float) -> float | None:
        if not self._mel or t_s < 0:
            return None
        i = int(np.searchsorted(self._starts, t_s, side="right")) - 1
        if i >= 0 and self._mel[i][0] <= t_s < self._mel[i][1]:
            return self._mel[i][2]
        return None

    def candidates(self, centre_midi: float, t_s: float) -> tuple[float, float]:
        """The two target notes (MIDI, tuning included) nearest ``centre_midi``: (best, runner-up).

        >>> from melisma.analysis.key import parse_key
        >>> LiveTarget(scale=parse_key("C major")).candidates(61.4, 0.0)
        (62.0, 60.0)
        """
        tune = self.tuning_cents / 100.0
        c = centre_midi - tune
        mel = self._melody_at(t_s)
        if mel is not None:
            best = mel + 12.0 * round((c - mel) / 12.0)
            return best + tune, best + tune + (12.0 if c > best else -12.0)
        base = math.floor(c)
        pcs = None if self.scale is None else set(self.scale.pitch_classes)
        cands = [m for m in range(base - 3, base + 5) if pcs is None or m % 12 in pcs]
        cands.sort(key=lambda m: (abs(m - c), m))
        return float(cands[0]) + tune, float(cands[1]) + tune


class LiveYin:
    """YIN on a short window, fed block by block; :attr:`hz` is 0 when unvoiced."""

    def __init__(self, sample_rate: int, *, fmin_hz: float = DEFAULT_FMIN_HZ, fmax_hz: float = DEFAULT_FMAX_HZ):
        if not 30.0 <= fmin_hz < fmax_hz <= 2000.0:
            raise AudioDeviceError(f"singer's range {fmin_hz:g}..{fmax_hz:g} Hz is not usable; use 30 <= fmin < fmax <= 2000")
        self.sr = int(sample_rate)
        self.tau_min = max(2, int(self.sr / fmax_hz))
        self.tau_max = int(math.ceil(self.sr / fmin_hz))
        self.w = self.tau_max
        self.n = self.w + self.tau_max + 2
        self.nfft = 1 << int(math.ceil(math.log2(self.n + self.w)))
        self.buf = np.zeros(self.n, np.float64)
        self._tau = np.arange(1, self.tau_max + 1, dtype=np.float64)
        self._gate = (10 ** (GATE_DB / 20)) ** 2 * self.w
        self.hz = 0.0
        self.period = 0.0
        self.aperiodicity = 1.0

    @property
    def window_s(self) -> float:
        """Length of the analysis window (s)."""
        return self.n / self.sr

    def push(self, x: np.ndarray) -> None:
        """Append a block to the analysis window."""
        k = min(len(x), self.n)
        self.buf[:-k] = self.buf[k:]
        self.buf[-k:] = x[-k:]

    def estimate(self) -> float:
        """Run YIN on the window; returns (and keeps in :attr:`hz`) f0 in Hz, 0 when unvoiced."""
        x = self.buf
        a = x[:self.w]
        e0 = float(a @ a)
        if e0 < self._gate:
            self.hz, self.period, self.aperiodicity = 0.0, 0.0, 1.0
            return 0.0
        fx = np.fft.rfft(x, self.nfft)
        fa = np.fft.rfft(a, self.nfft)
        c = np.fft.irfft(np.conj(fa) * fx, self.nfft)[:self.tau_max + 1]
        cs = np.concatenate(([0.0], np.cumsum(x * x)))
        e = cs[self.w:self.w + self.tau_max + 1] - cs[:self.tau_max + 1]
        d = np.maximum(e0 + e - 2.0 * c, 0.0)
        d1 = d[1:]
        csum = np.cumsum(d1)
        cm = np.where(csum > 0, d1 * self._tau / np.maximum(csum, 1e-20), 1.0)  # cm[i] is lag i + 1
        lo, hi = self.tau_min - 1, self.tau_max - 1
        seg = cm[lo:hi]
        below = np.flatnonzero(seg < YIN_THRESHOLD)
        if below.size:
            i = int(below[0]) + lo
            while i + 1 < hi and cm[i + 1] < cm[i]:
                i += 1
        else:
            i = int(np.argmin(seg)) + lo
        ap = float(cm[i])
        if ap > YIN_UNVOICED:
            self.hz, self.period, self.aperiodicity = 0.0, 0.0, ap
            return 0.0
        tau = float(i + 1)
        if 1 <= i < len(cm) - 1:
            y0, y1, y2 = cm[i - 1], cm[i], cm[i + 1]
            den = y0 - 2 * y1 + y2
            if den > 0:
                tau += 0.5 * (y0 - y2) / den
        self.period, self.aperiodicity = tau, ap
        self.hz = self.sr / tau
        return self.hz


class NoteCentre:
    """The slowly varying note centre (cents re MIDI 0) and the shift that moves it to the target."""

    def __init__(self, hop_s: float, target: LiveTarget, amount: float):
        self.hop_s = float(hop_s)
        self.target = target
        self.amount = float(amount)
        self._n = [max(1, round(s / hop_s)) for s in CENTRE_MEANS_S]
        self._rings = [np.zeros(n, np.float64) for n in self._n]
        self._pos = [0 for _ in self._n]
        self._sums = [0.0 for _ in self._n]
        self.centre: float | None = None  # cents
        self.target_cents: float | None = None
        self.shift = 0.0
        self._far = 0
        self._far_sum = 0.0
        self._far_need = max(1, round(JUMP_HOLD_S / hop_s))
        self._unvoiced = 0
        self._unvoiced_hold = max(1, round(UNVOICED_HOLD_S / hop_s))
        self._slew = SLEW_CENTS_PER_S * hop_s

    @property
    def lag_s(self) -> float:
        """Group delay of the centre's smoothing (s)."""
        return sum((n - 1) / 2 for n in self._n) * self.hop_s

    def _reset(self, cents: float) -> None:
        for k, r in enumerate(self._rings):
            r.fill(cents)
            self._sums[k] = cents * len(r)
            self._pos[k] = 0
        self.centre = cents
        self.target_cents = None
        self._far = 0

    def _mean(self, k: int, v: float) -> float:
        r, p = self._rings[k], self._pos[k]
        self._sums[k] += v - r[p]
        r[p] = v
        self._pos[k] = (p + 1) % len(r)
        return self._sums[k] / len(r)

    def update(self, hz: float, t_s: float) -> float:
        """One tracker estimate (0: unvoiced) at backing time ``t_s``; returns the shift (cents)."""
        if hz <= 0:
            self._unvoiced += 1
            if self._unvoiced >= self._unvoiced_hold:
                self.centre = None
                self._step_toward(0.0)
            return self.shift
        cents = 1200.0 * math.log2(hz / 440.0) + 6900.0
        if self.centre is None or self._unvoiced >= self._unvoiced_hold:
            self._reset(cents)
        self._unvoiced = 0
        assert self.centre is not None
        value = cents
        if abs(cents - self.centre) > JUMP_CENTS:
            self._far_sum = cents if self._far == 0 else self._far_sum + cents
            self._far += 1
            if self._far >= self._far_need:
                value = self._far_sum / self._far
                self._reset(value)  # a new note: start from the mean of what was sung since it began
            else:
                value = self.centre  # an outlier (octave slip, a glitch) until it lasts: not averaged in
        else:
            self._far = 0
        for k in range(len(self._n)):
            value = self._mean(k, value)
        self.centre = value
        best, _ = self.target.candidates(self.centre / 100.0, t_s)
        best_c = 100.0 * best
        cur = self.target_cents
        if cur is None or abs(self.centre - best_c) + HYSTERESIS_CENTS < abs(self.centre - cur):
            self.target_cents = cur = best_c
        elif self.target.melody and abs(cur - best_c) > 1.0 and self.target._melody_at(t_s) is not None:
            self.target_cents = cur = best_c  # the melody moved on: follow it at once
        want = max(-MAX_SHIFT_CENTS, min(MAX_SHIFT_CENTS, self.amount * (cur - self.centre)))
        self._step_toward(want)
        return self.shift

    def _step_toward(self, want: float) -> None:
        d = want - self.shift
        self.shift += max(-self._slew, min(self._slew, d))


class PsolaShifter:
    """Delay-line pitch shifter with pitch-synchronous jumps and one-period crossfades."""

    def __init__(self, sample_rate: int, frames_per_buffer: int, *, fmin_hz: float = DEFAULT_FMIN_HZ):
        self.sr = int(sample_rate)
        self.max_fade = max(8, int(MAX_FADE_S * self.sr))
        rho_dev = 2 ** (MAX_SHIFT_CENTS / 1200) - 1
        self.d_lo = float(max(32, math.ceil((frames_per_buffer + self.max_fade) * rho_dev) + 4))
        self.p_max = float(self.sr / fmin_hz)
        self.default_period = self.sr / 200.0
        self.ring = np.zeros(RING, np.float32)
        self.mask = RING - 1
        self.w = 0  # samples written
        self.r = -(self.d_lo + 0.5 * self.default_period)  # read head (absolute, fractional)
        self.r_old = 0.0
        self.fade_pos = -1  # < 0: no crossfade running
        self.fade_len = 1
        self.jumps = 0
        self._k: np.ndarray = np.arange(frames_per_buffer, dtype=np.float64)
        self.delay_sum = 0.0
        self.delay_max = 0.0
        self.blocks = 0

    @property
    def max_latency_s(self) -> float:
        """The longest the head can lag the input: ``d_lo + sr/fmin`` samples (s)."""
        return (self.d_lo + self.p_max) / self.sr

    @property
    def mean_latency_s(self) -> float:
        """Mean delay of the read head so far (s)."""
        return self.delay_sum / max(self.blocks, 1) / self.sr

    def _read(self, pos: np.ndarray) -> np.ndarray:
        i = np.floor(pos)
        frac = (pos - i).astype(np.float32)
        ii = i.astype(np.int64)
        a = self.ring[ii & self.mask]
        b = self.ring[(ii + 1) & self.mask]
        return a + frac * (b - a)

    def process(self, x: np.ndarray, cents: float, period: float) -> np.ndarray:
        """Shift block ``x`` by ``cents``; ``period``: the current pitch period (samples, 0 unknown)."""
        n = len(x)
        k = self._k if n == len(self._k) else np.arange(n, dtype=np.float64)
        start = self.w & self.mask
        if start + n <= RING:
            self.ring[start:start + n] = x
        else:
            m = RING - start
            self.ring[start:] = x[:m]
            self.ring[:n - m] = x[m:]
        rho = 2.0 ** (cents / 1200.0)
        p = period if period > 0 else self.default_period
        p = min(max(p, 8.0), self.p_max)
        d_end = (self.w + n) - (self.r + rho * n)
        if self.fade_pos < 0:
            jump = 0.0
            if d_end < self.d_lo:
                jump = -p * max(1, math.ceil((self.d_lo - d_end) / p))
            elif d_end > self.d_lo + (p if rho < 1.0 else self.p_max):  # (unshifted: no needless jumps)
                jump = p * math.floor((d_end - self.d_lo) / p)
            if jump:
                self.r_old = self.r
                self.r += jump
                self.fade_pos = 0
                self.fade_len = int(min(p, self.max_fade))
                self.jumps += 1
        d0 = self.w - self.r
        if d0 > RING - 2 * n - 1 or d0 < 1:  # lost (should not happen): start over at the nominal delay
            self.r = self.w - (self.d_lo + 0.5 * p)
            self.fade_pos = -1
        pos = self.r + rho * k
        y = self._read(pos)
        if self.fade_pos >= 0:
            old = self._read(self.r_old + rho * k)
            g = np.clip((self.fade_pos + k) / self.fade_len, 0.0, 1.0).astype(np.float32)
            y = old + g * (y - old)
            self.fade_pos += n
            self.r_old += rho * n
            if self.fade_pos >= self.fade_len:
                self.fade_pos = -1
        d = self.w - self.r
        self.delay_sum += d
        self.delay_max = max(self.delay_max, d + n * abs(rho - 1.0))
        self.blocks += 1
        self.r += rho * n
        self.w += n
        return y


class LiveCorrector:
    """The monitor's corrector: ``prepare`` once, then ``process(block)`` per callback (mono float32).

    Parameters
    ----------
    amount : float
        0..1: how far the note centre moves toward the target (1: onto it).
    target : LiveTarget
        Key and/or reference melody.
    fmin_hz, fmax_hz : float
        The singer's range.
    playhead : callable, optional
        Returns the backing's playhead in seconds (the melody follows it); default: time since start.
    """

    def __init__(self, amount: float, target: LiveTarget | None = None, *, fmin_hz: float = DEFAULT_FMIN_HZ,
                 fmax_hz: float = DEFAULT_FMAX_HZ, playhead=None):
        if not 0.0 <= amount <= 1.0:
            raise AudioDeviceError(f"correction {amount} is out of range; use 0..1 (0: off)")
        self.amount = float(amount)
        self.target = target or LiveTarget()
        self.fmin_hz, self.fmax_hz = float(fmin_hz), float(fmax_hz)
        self.playhead = playhead
        self.shift_cents = 0.0
        self.frames = 0

    def prepare(self, *, sample_rate: int, frames_per_buffer: int) -> None:
        """Allocate everything for ``frames_per_buffer``-frame blocks at ``sample_rate``."""
        self.sr = int(sample_rate)
        self.block = int(frames_per_buffer)
        self.tracker = LiveYin(self.sr, fmin_hz=self.fmin_hz, fmax_hz=self.fmax_hz)
        self.hop = max(self.block, int(math.ceil(MIN_HOP_S * self.sr / self.block)) * self.block)
        self.centre = NoteCentre(self.hop / self.sr, self.target, self.amount)
        self.shifter = PsolaShifter(self.sr, self.block, fmin_hz=self.fmin_hz)
        self._since = 0
        self.frames = 0
        self.shift_cents = 0.0
        # Where the estimates went (tests and measurements read these; a ring, no growth).
        self.log_cents = np.zeros(1 << 16, np.float32)
        self.log_shift = np.zeros(1 << 16, np.float32)
        self.log_n = 0

    @property
    def latency_s(self) -> float:
        """The audio path's added latency bound (s): the shifter's longest delay; nothing reads ahead."""
        return self.shifter.max_latency_s

    def figures(self) -> dict[str, Any]:
        """Latency parts and counters (JSON-ready)."""
        return {"shifter_mean_delay_ms": round(1000 * self.shifter.mean_latency_s, 3),
                "shifter_max_delay_ms": round(1000 * self.latency_s, 3),
                "pitch_window_ms": round(1000 * self.tracker.window_s, 3),
                "centre_lag_ms": round(1000 * self.centre.lag_s, 1),
                "jumps": self.shifter.jumps, "target": self.target.name, "amount": self.amount,
                "singer_range_hz": [self.fmin_hz, self.fmax_hz]}

    def process(self, x: np.ndarray) -> np.ndarray:
        """Correct one mono block; returns the shifted block (same length)."""
        n = len(x)
        tr = self.tracker
        tr.push(x)
        self._since += n
        if self._since >= self.hop:
            self._since = 0
            hz = tr.estimate()
            t_s = self.playhead() if self.playhead is not None else self.frames / self.sr
            self.shift_cents = self.centre.update(hz, t_s)
            i = self.log_n & 0xFFFF
            self.log_cents[i] = 0.0 if hz <= 0 else 1200.0 * math.log2(hz / 440.0) + 6900.0
            self.log_shift[i] = self.shift_cents
            self.log_n += 1
        self.frames += n
        return self.shifter.process(x, self.shift_cents, tr.period)

    def close(self) -> None:
        """Nothing to release (kept for the monitor's interface)."""
