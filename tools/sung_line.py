"""Generated singing with a known truth: detuned notes, vibrato and slides (live-correction checks).

A harmonic voice (harmonics up to 8 kHz shaped by three vowel formants, a little breath noise)
sings notes of a key, each detuned by a known amount; some carry a 5.5 Hz vibrato of known
extent, some are reached by a slide (a legato glide of known length) from the note before.

>>> line = sung_line(seed=1)
>>> line.audio.dtype, line.sr, len(line.notes) > 5
(dtype('float32'), 48000, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SungNote:
    """One note of the line: the scale note it aims at, how far off it is, its ornaments."""

    start_s: float
    end_s: float
    target_midi: int
    detune_cents: float
    vibrato_cents: float  # peak deviation (half the peak-to-peak extent); 0: none
    vibrato_hz: float
    slide_in_s: float  # 0: attacked; >0: a glide from the previous note over this long

    @property
    def centre_midi(self) -> float:
        """The sung centre (target + detune)."""
        return self.target_midi + self.detune_cents / 100.0


@dataclass
class SungLine:
    """Audio plus the truth: per-sample f0 (Hz, 0 in gaps) and the notes."""

    audio: np.ndarray
    sr: int
    f0_hz: np.ndarray
    notes: list[SungNote] = field(default_factory=list)
    key: str = "A minor"


_FORMANTS = ((730.0, 90.0, 1.0), (1090.0, 110.0, 0.5), (2440.0, 170.0, 0.25))  # /a/


def _envelope(f: np.ndarray) -> np.ndarray:
    g = np.full_like(f, 0.02)
    for fc, bw, a in _FORMANTS:
        g += a / (1.0 + ((f - fc) / bw) ** 2)
    return g * (f < 8000.0)


def sung_line(seed: int = 0, *, sr: int = 48000, key_pcs: tuple[int, ...] = (9, 11, 0, 2, 4, 5, 7),
              base_midi: int = 57, n_notes: int = 12, level: float = 0.25) -> SungLine:
    """A line of ``n_notes`` in the key (A minor by default) around ``base_midi``, with known truth.

    Notes alternate between plain, vibrato (5.5 Hz, ±30..45 cents) and slid-into (120-200 ms);
    every note is detuned by ±15..45 cents.
    """
    rng = np.random.default_rng(seed)
    scale = [m for m in range(base_midi - 5, base_midi + 13) if m % 12 in key_pcs]
    notes: list[SungNote] = []
    t = 0.25
    prev = None
    for i in range(n_notes):
        m = int(rng.choice([s for s in scale if prev is None or (abs(s - prev) <= 5 and s != prev)]))
        dur = float(rng.uniform(0.7, 1.2))
        kind = i % 3
        slide = float(rng.uniform(0.12, 0.2)) if kind == 2 and notes else 0.0
        if slide == 0.0 and notes:
            t += 0.08  # a breath between attacked notes
        det = float(rng.uniform(15, 45) * rng.choice([-1, 1]))
        vib = float(rng.uniform(30, 45)) if kind == 1 else 0.0
        notes.append(SungNote(t, t + dur, m, det, vib, 5.5, slide))
        t += dur
        prev = m
    total = int((t + 0.3) * sr)
    ts = np.arange(total) / sr
    cents = np.full(total, np.nan)
    amp = np.zeros(total)
    for j, n in enumerate(notes):
        a, b = int(n.start_s * sr), int(n.end_s * sr)
        seg = ts[a:b] - n.start_s
        c = np.full(b - a, 100.0 * n.centre_midi)
        if n.vibrato_cents:
            onset = np.clip((seg - 0.15) / 0.2, 0.0, 1.0)  # vibrato grows in after 150 ms
            c += n.vibrato_cents * onset * np.sin(2 * np.pi * n.vibrato_hz * seg)
        if n.slide_in_s and j > 0:
            p = 100.0 * notes[j - 1].centre_midi
            g = np.clip(seg / n.slide_in_s, 0.0, 1.0)
            g = 0.5 - 0.5 * np.cos(np.pi * g)
            c = p + (c - p) * g
        cents[a:b] = c
        env = np.ones(b - a)
        att = int(0.03 * sr)
        if not n.slide_in_s:
            env[:att] = np.linspace(0, 1, att)
        nxt = notes[j + 1] if j + 1 < len(notes) else None
        if nxt is None or not nxt.slide_in_s:
            env[-att:] = np.minimum(env[-att:], np.linspace(1, 0, att))
        amp[a:b] = env
    voiced = ~np.isnan(cents)
    f0 = np.where(voiced, 440.0 * 2 ** ((np.nan_to_num(cents) - 6900.0) / 1200.0), 0.0)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = np.zeros(total)
    for k in range(1, 60):
        fk = k * f0
        if not np.any(fk[voiced] < 8000):
            break
        y += _envelope(fk) / k ** 0.5 * np.sin(k * phase)
    y *= amp
    y /= max(np.max(np.abs(y)), 1e-9)
    y += 0.003 * rng.standard_normal(total) * (amp > 0)
    return SungLine((level * y).astype(np.float32), sr, f0.astype(np.float32), notes)
