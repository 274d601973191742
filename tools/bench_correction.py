"""Benchmark of ornament-aware pitch correction (issue 3): Melisma vs hard-tune vs no correction.

On synthetic takes whose f0, notes and ornaments are known exactly (tools/corpus/voice.py), it
resynthesises the voice three ways and re-tracks the output with an independent YIN tracker:

* median |cents error| of note centres (steady frames, against the note's target),
* vibrato extent kept (%, peak-to-peak, re-tracked output vs re-tracked input) and rate change,
* slide shape correlation (Pearson of the re-tracked slide before/after, i.e. offset removed),
* grace notes kept (re-tracked grace pitch vs expected),
* formant preservation for a +-2 semitone shift (LPC envelope distance, dB) next to a
  "chipmunk" resampling shift, and harmonic-to-noise ratio before/after,
* time per second of audio for PSOLA and WORLD (one core; a 3-minute take at 48 kHz too),

and saves a plot of f0 before/after for one take.

Usage::

    .venv/bin/python tools/bench_correction.py [--out out/bench_correction] [--quick]

The measurement helpers (:func:`yin_track`, :func:`vibrato_stats`, ...) are also used by the
tests in tests/melisma/render/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melisma.render.correct import EXCURSION_TYPES, CorrectionSettings, hard_tune, hz_to_midi, target_f0
from melisma.render.resynth import shift_pitch

# ---------------------------------------------------------------------------------------------
# Measurement


def yin_track(
    y: np.ndarray, *, sr: int, hop_s: float, fmin_hz: float = 70.0, fmax_hz: float = 1100.0, threshold: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """YIN f0 tracker (de Cheveigné & Kawahara 2002) with parabolic refinement.

    Frame ``k`` is centred at ``k * hop_s``. Returns ``(f0_hz, periodicity)``: f0 per frame
    (0 where no clear period) and the normalised correlation at the chosen lag (1 = perfectly
    periodic; used for the harmonic-to-noise ratio).
    """
    y = np.asarray(y, dtype=np.float64)
    max_lag = int(np.ceil(sr / fmin_hz)) + 2
    min_lag = max(2, int(np.floor(sr / fmax_hz)))
    width = max_lag  # integration window: one longest period
    frame_len = width + max_lag + 1
    n_frames = int(np.floor(y.size / sr / hop_s)) + 1
    centres = np.rint(np.arange(n_frames) * hop_s * sr).astype(np.int64)
    pad = frame_len
    yp = np.pad(y, (pad, pad))
    # Centre the integration window on the frame time (lags reach forward by tau, so the
    # comparison is centred tau/2 late: under 2 ms for voices).
    starts = centres + pad - width // 2
    idx = starts[:, None] + np.arange(frame_len)[None, :]
    frames = yp[idx]
    nfft = 1 << int(np.ceil(np.log2(2 * frame_len)))
    X = np.fft.rfft(frames, nfft, axis=1)
    A = np.fft.rfft(frames[:, :width], nfft, axis=1)
    r = np.fft.irfft(np.conj(A) * X, nfft, axis=1)[:, : max_lag + 1]
    sq = np.cumsum(np.pad(frames**2, ((0, 0), (1, 0))), axis=1)
    e0 = sq[:, width][:, None]
    lags = np.arange(max_lag + 1)
    etau = sq[:, lags + width] - sq[:, lags]
    d = np.maximum(e0 + etau - 2.0 * r, 0.0)
    cum = np.cumsum(d[:, 1:], axis=1)
    cmnd = np.ones_like(d)
    cmnd[:, 1:] = d[:, 1:] * lags[1:] / np.maximum(cum, 1e-20)
    f0 = np.zeros(n_frames)
    periodicity = np.zeros(n_frames)
    energy = e0[:, 0] / width
    floor = 1e-6 * max(float(np.max(energy)), 1e-20)
    for i in range(n_frames):
        if energy[i] <= floor:
            continue
        c = cmnd[i]
        below = np.flatnonzero(c[min_lag:max_lag] < threshold)
        if below.size:
            tau = below[0] + min_lag
            while tau + 1 < max_lag and c[tau + 1] < c[tau]:
                tau += 1
        else:
            tau = int(np.argmin(c[min_lag:max_lag])) + min_lag
            if c[tau] > 0.35:
                continue
        a, b, cc = d[i, tau - 1], d[i, tau], d[i, tau + 1]
        denom = a - 2 * b + cc
        shift = 0.5 * (a - cc) / denom if denom > 0 else 0.0
        f0[i] = sr / (tau + float(np.clip(shift, -1, 1)))
        periodicity[i] = float(np.clip(1.0 - b / max(e0[i, 0] + etau[i, tau], 1e-20), 0.0, 1.0))
    return f0, periodicity


def _frames_in(start_s: float, end_s: float, hop_s: float, n: int) -> np.ndarray:
    a = int(np.clip(np.ceil(start_s / hop_s), 0, n))
    b = int(np.clip(np.ceil(end_s / hop_s), a, n))
    return np.arange(a, b)


def steady_frames(note: dict, ornaments: Sequence[dict], hop_s: float, n: int, trim_s: float = 0.04) -> np.ndarray:
    """Frames of a note outside its excursion ornaments (slides, grace, portamento, mordent),
    trimmed at both ends."""
    frames = _frames_in(note["start_s"] + trim_s, note["end_s"] - trim_s, hop_s, n)
    keep = np.ones(frames.size, dtype=bool)
    for orn in ornaments:
        if orn["type"] in EXCURSION_TYPES or orn["type"] == "trill":
            t = frames * hop_s
            keep &= ~((t >= orn["start_s"] - trim_s) & (t < orn["end_s"] + trim_s))
    return frames[keep]


def note_centre_errors(f0_hz: np.ndarray, *, hop_s: float, notes: Sequence[dict], ornaments: Sequence[dict]) -> np.ndarray:
    """Per note: median MIDI of its steady voiced frames minus ``target_midi``, in cents (NaN if none)."""
    midi = hz_to_midi(f0_hz)
    out = []
    for note in notes:
        frames = steady_frames(note, ornaments, hop_s, f0_hz.size)
        vals = midi[frames]
        vals = vals[np.isfinite(vals)]
        if vals.size < 3 or note.get("target_midi") is None:
            out.append(np.nan)
        else:
            out.append(100.0 * (float(np.median(vals)) - float(note["target_midi"])))
    return np.asarray(out)


def vibrato_stats(f0_hz: np.ndarray, *, hop_s: float, start_s: float, end_s: float) -> tuple[float, float]:
    """(peak-to-peak extent in cents, rate in Hz) of the vibrato between ``start_s`` and ``end_s``.

    The slow centre (two passes of a 0.2 s moving mean) is removed; extent = 2*sqrt(2)*RMS of
    what is left (exact for a sine); rate = spectral peak of the residual in 3-12 Hz."""
    frames = _frames_in(start_s, end_s, hop_s, f0_hz.size)
    midi = hz_to_midi(f0_hz[frames])
    ok = np.isfinite(midi)
    if ok.sum() < 10:
        return 0.0, float("nan")
    midi = np.interp(np.arange(midi.size), np.flatnonzero(ok), midi[ok])
    w = max(1, int(round(0.2 / hop_s)))
    kernel = np.ones(w) / w
    pad = np.pad(midi, (w, w), mode="reflect")
    centre = np.convolve(np.convolve(pad, kernel, mode="same"), kernel, mode="same")[w:-w]
    res = 100.0 * (midi - centre)
    core = res[w // 2 : res.size - w // 2] if res.size > 2 * w else res
    extent = 2.0 * np.sqrt(2.0) * float(np.sqrt(np.mean(core**2)))
    nfft = 1 << 14
    spec = np.abs(np.fft.rfft(core * np.hanning(core.size), nfft))
    freqs = np.fft.rfftfreq(nfft, hop_s)
    band = (freqs >= 3.0) & (freqs <= 12.0)
    rate = float(freqs[band][np.argmax(spec[band])])
    return extent, rate


def shape_correlation(
    before_hz: np.ndarray, after_hz: np.ndarray, *, hop_s: float, start_s: float, end_s: float
) -> tuple[float, float]:
    """(Pearson correlation, RMS difference in cents after removing the mean offset) of two f0
    curves over a span."""
    frames = _frames_in(start_s, end_s, hop_s, min(before_hz.size, after_hz.size))
    a, b = hz_to_midi(before_hz[frames]), hz_to_midi(after_hz[frames])
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 4:
        return float("nan"), float("nan")
    a, b = a[ok], b[ok]
    corr = float(np.corrcoef(a, b)[0, 1])
    diff = 100.0 * ((b - b.mean()) - (a - a.mean()))
    return corr, float(np.sqrt(np.mean(diff**2)))


def lpc_envelope_db(
    y: np.ndarray, *, sr: int, order: int | None = None, n_freqs: int = 512, fmax_hz: float = 5000.0
) -> tuple[np.ndarray, np.ndarray]:
    """LPC spectral envelope (dB, normalised to 0 dB mean) of a whole segment, from its
    frame-averaged autocorrelation. Returns (freqs_hz, envelope_db)."""
    from scipy.linalg import solve_toeplitz
    from scipy.signal import freqz

    order = order or int(2 + sr / 1000)
    y = np.asarray(y, dtype=np.float64)
    y = np.append(y[0], y[1:] - 0.9 * y[:-1])  # pre-emphasis, as usual for formant LPC
    n = int(0.04 * sr)
    hopn = n // 2
    win = np.hanning(n)
    acc = np.zeros(order + 1)
    for s in range(0, y.size - n, hopn):
        f = y[s : s + n] * win
        full = np.correlate(f, f, mode="full")[n - 1 : n + order]
        acc += full
    acc[0] *= 1.0 + 1e-6
    a = solve_toeplitz(acc[:order], -acc[1 : order + 1])
    freqs = np.linspace(100.0, fmax_hz, n_freqs)
    _, h = freqz([1.0], np.r_[1.0, a], worN=freqs, fs=sr)
    env = 20 * np.log10(np.abs(h) + 1e-12)
    return freqs, env - env.mean()


def envelope_distance_db(a: np.ndarray, b: np.ndarray, *, sr: int) -> float:
    """RMS difference (dB) of the LPC envelopes of two segments, 100 Hz - 5 kHz."""
    _, ea = lpc_envelope_db(a, sr=sr)
    _, eb = lpc_envelope_db(b, sr=sr)
    return float(np.sqrt(np.mean((ea - eb) ** 2)))


def harmonic_amplitudes_db(
    y: np.ndarray, *, sr: int, f0_hz: np.ndarray, hop_s: float, start_s: float, end_s: float, fmax_hz: float = 5000.0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean (over STFT frames) level in dB of each harmonic ``k * f0`` up to ``fmax_hz``, with f0
    from the given curve. Returns (mean harmonic frequencies in Hz, levels in dB)."""
    from scipy.signal import stft

    nper = 1 << int(np.ceil(np.log2(0.08 * sr)))
    f, t, z = stft(np.asarray(y, np.float64), sr, nperseg=nper, noverlap=nper * 3 // 4)
    mag = np.abs(z)
    frame_t = np.arange(f0_hz.size) * hop_s
    rows_f, rows_a = [], []
    for j in np.flatnonzero((t >= start_s) & (t <= end_s)):
        f0 = float(np.interp(t[j], frame_t, f0_hz))
        if f0 <= 0:
            continue
        ks = np.arange(1, int(fmax_hz / f0) + 1)
        lo = np.searchsorted(f, ks * f0 - f0 / 4)
        hi = np.maximum(np.searchsorted(f, ks * f0 + f0 / 4), lo + 1)
        rows_f.append(ks * f0)
        rows_a.append(20 * np.log10(np.array([mag[a:b, j].max() for a, b in zip(lo, hi, strict=False)]) + 1e-12))
    n = min(r.size for r in rows_a)
    return np.mean([r[:n] for r in rows_f], 0), np.mean([r[:n] for r in rows_a], 0)


def harmonic_envelope_error_db(
    before: np.ndarray,
    after: np.ndarray,
    *,
    sr: int,
    f0_before_hz: np.ndarray,
    f0_after_hz: np.ndarray,
    hop_s: float,
    start_s: float,
    end_s: float,
) -> float:
    """Formant preservation: RMS (dB) between the shifted voice's harmonic levels and the
    original's spectral envelope (its harmonic levels, interpolated) at the new harmonic
    frequencies, 200 Hz - 5 kHz, after removing the overall level difference. A voice whose
    formants stay put scores near 0; a resampled ("chipmunk") voice scores several dB."""
    fa, aa = harmonic_amplitudes_db(before, sr=sr, f0_hz=f0_before_hz, hop_s=hop_s, start_s=start_s, end_s=end_s)
    fb, ab = harmonic_amplitudes_db(after, sr=sr, f0_hz=f0_after_hz, hop_s=hop_s, start_s=start_s, end_s=end_s)
    m = (fb >= max(fa[0], 200.0)) & (fb <= fa[-1])
    d = ab[m] - np.interp(fb[m], fa, aa)
    d -= d.mean()
    return float(np.sqrt(np.mean(d**2)))


def hnr_db(periodicity: np.ndarray) -> float:
    """Median harmonic-to-noise ratio (dB) from YIN periodicity values of voiced frames."""
    p = np.clip(periodicity[periodicity > 0], 1e-6, 1 - 1e-6)
    if p.size == 0:
        return float("nan")
    return float(np.median(10 * np.log10(p / (1 - p))))


def chipmunk_shift(y: np.ndarray, semitones: float) -> np.ndarray:
    """Naive pitch shift by resampling (formants move with pitch), same length: the reference
    for what formant preservation must avoid."""
    ratio = 2 ** (semitones / 12)
    pos = np.arange(y.size) * ratio
    return np.interp(pos, np.arange(y.size), y, right=0.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Synthetic takes


def demo_take(*, sr: int = 24000, seed: int = 1, voice: str = "female"):
    """A short take with every ornament the tests look at, every note detuned.

    Notes (female, C major): D5 with vibrato (D: its neighbours C#/D# are not in the scale, so
    a hard-tune keeps it on D), E5 with a scoop (slide_in), A4 with a grace note, legato G4->A4
    with portamento, C5 with a fall (slide_out)."""
    from tools.corpus.voice import NoteSpec, synthesize_voice

    notes = [
        NoteSpec(
            74,
            0.10,
            1.30,
            detune_cents=35.0,
            ornaments=[{"type": "vibrato", "rate_hz": 6.0, "extent_cents": 100.0, "onset_ms": 200.0, "fade_in_ms": 150.0}],
        ),
        NoteSpec(
            76, 1.55, 0.60, detune_cents=-30.0, ornaments=[{"type": "slide_in", "duration_ms": 180.0, "interval_cents": -250.0}]
        ),
        NoteSpec(69, 2.30, 0.50, detune_cents=25.0, ornaments=[{"type": "grace", "duration_ms": 110.0, "interval_cents": 200.0}]),
        NoteSpec(67, 2.95, 0.45, detune_cents=-40.0, ornaments=[{"type": "portamento", "duration_ms": 160.0}]),
        NoteSpec(69, 3.40, 0.45, detune_cents=30.0),
        NoteSpec(
            72, 4.00, 0.60, detune_cents=-25.0, ornaments=[{"type": "slide_out", "duration_ms": 200.0, "interval_cents": -300.0}]
        ),
    ]
    return synthesize_voice(notes, sr=sr, voice=voice, seed=seed, breaths=False)


def song_take(*, duration_s: float, sr: int = 48000, seed: int = 0, key: str = "C major", voice: str = "female"):
    """A generated melody (all ornament kinds, detuned notes) sung by the synthetic voice."""
    from tools.corpus.melody import generate_melody
    from tools.corpus.voice import synthesize_voice

    melody = generate_melody(key, tempo_bpm=92, duration_s=duration_s, seed=seed, voice=voice, lead_in_s=0.5)
    take = synthesize_voice(melody.notes, sr=sr, voice=voice, seed=seed, duration_s=duration_s)
    return take, melody.key


def correct_take(take, settings: CorrectionSettings, *, method: str = "psola") -> tuple[np.ndarray, np.ndarray, float]:
    """(target f0, corrected audio, seconds spent in resynthesis)."""
    tgt, _ = target_f0(take.f0_hz, hop_s=take.hop_s, notes=take.notes, ornaments=take.ornaments, settings=settings)
    t0 = time.perf_counter()
    out = shift_pitch(take.audio, sr=take.sr, f0_hz=take.f0_hz, hop_s=take.hop_s, target_f0_hz=tgt, method=method)
    return tgt, out, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# Benchmark


def evaluate(take, audio: np.ndarray, reference_track: np.ndarray) -> dict[str, Any]:
    """Quality numbers for one output, re-tracked."""
    hop = take.hop_s
    track, period = yin_track(audio, sr=take.sr, hop_s=hop)
    n = min(track.size, reference_track.size)
    track, ref = track[:n], reference_track[:n]
    errs = note_centre_errors(track, hop_s=hop, notes=take.notes, ornaments=take.ornaments)
    vib_kept, rate_diff, slide_corr, slide_rms = [], [], [], []
    for orn in take.ornaments:
        if orn["type"] == "vibrato":
            a = orn["start_s"] + orn["params"].get("fade_in_ms", 0) / 1000.0
            e0, r0 = vibrato_stats(ref, hop_s=hop, start_s=a, end_s=orn["end_s"] - 0.05)
            e1, r1 = vibrato_stats(track, hop_s=hop, start_s=a, end_s=orn["end_s"] - 0.05)
            if e0 > 20:
                vib_kept.append(100.0 * e1 / e0)
                rate_diff.append(abs(r1 - r0))
        if orn["type"] in ("slide_in", "slide_out", "portamento"):
            c, r = shape_correlation(ref, track, hop_s=hop, start_s=orn["start_s"], end_s=orn["end_s"])
            if np.isfinite(c):
                slide_corr.append(c)
                slide_rms.append(r)
    return {
        "median_abs_cents_error": float(np.nanmedian(np.abs(errs))),
        "p90_abs_cents_error": float(np.nanpercentile(np.abs(errs), 90)),
        "vibrato_extent_kept_pct": float(np.median(vib_kept)) if vib_kept else None,
        "vibrato_rate_change_hz": float(np.median(rate_diff)) if rate_diff else None,
        "slide_shape_corr": float(np.median(slide_corr)) if slide_corr else None,
        "slide_shape_rms_cents": float(np.median(slide_rms)) if slide_rms else None,
        "hnr_db": hnr_db(period),
    }


def formant_check(sr: int = 48000, seed: int = 3) -> dict[str, Any]:
    """Formant preservation for +-2 semitone constant shifts of a steady note (female F#4 and
    male D3): harmonic-envelope error and LPC envelope distance (dB), PSOLA and WORLD next to
    a "chipmunk" resampling shift; HNR before/after."""
    from tools.corpus.voice import NoteSpec, synthesize_voice

    res: dict[str, Any] = {}
    for voice, midi in (("female", 66), ("male", 50)):
        take = synthesize_voice([NoteSpec(midi, 0.1, 1.5)], sr=sr, voice=voice, seed=seed, breaths=False)
        a_s, b_s = 0.3, 1.4
        a, b = int(a_s * sr), int(b_s * sr)
        res[f"{voice}_input_hnr_db"] = round(hnr_db(yin_track(take.audio[a:b], sr=sr, hop_s=take.hop_s)[1]), 1)
        for semis in (-2.0, 2.0):
            tgt = take.f0_hz * 2 ** (semis / 12)
            outs = {
                m: shift_pitch(take.audio, sr=sr, f0_hz=take.f0_hz, hop_s=take.hop_s, target_f0_hz=tgt, method=m)
                for m in ("psola", "world")
            }
            outs["chipmunk"] = chipmunk_shift(take.audio, semis)
            for name, out in outs.items():
                key = f"{voice}_{name}_{semis:+.0f}st"
                res[f"{key}_harm_env_db"] = round(
                    harmonic_envelope_error_db(
                        take.audio, out, sr=sr, f0_before_hz=take.f0_hz, f0_after_hz=tgt, hop_s=take.hop_s, start_s=a_s, end_s=b_s
                    ),
                    2,
                )
                res[f"{key}_lpc_env_db"] = round(envelope_distance_db(take.audio[a:b], out[a:b], sr=sr), 2)
                if name != "chipmunk":
                    res[f"{key}_hnr_db"] = round(hnr_db(yin_track(out[a:b], sr=sr, hop_s=take.hop_s)[1]), 1)
    return res


def concat_takes(takes: Sequence[Any], *, gap_s: float = 0.5):
    """One long take from several (audio, f0, notes and ornaments shifted in time)."""
    from dataclasses import replace

    sr, hop = takes[0].sr, takes[0].hop_s
    audio, f0, notes, ornaments = [], [], [], []
    t = 0.0
    for take in takes:
        n_frames = int(round((take.audio.size / sr + gap_s) / hop))
        n_samples = int(round(n_frames * hop * sr))
        audio.append(np.pad(take.audio, (0, n_samples - take.audio.size)))
        f0.append(np.pad(take.f0_hz, (0, max(0, n_frames - take.f0_hz.size)))[:n_frames])
        offset = len(notes)
        notes += [dict(n, start_s=n["start_s"] + t, end_s=n["end_s"] + t) for n in take.notes]
        ornaments += [dict(o, start_s=o["start_s"] + t, end_s=o["end_s"] + t, note=o["note"] + offset) for o in take.ornaments]
        t += n_frames * hop
    return replace(takes[0], audio=np.concatenate(audio), f0_hz=np.concatenate(f0), notes=notes, ornaments=ornaments)


def speed(duration_s: float = 180.0, *, sr: int = 48000, methods: Sequence[str] = ("psola", "world")) -> dict[str, Any]:
    """Seconds of resynthesis per second of audio on a full-length take (generated melodies
    concatenated), and seconds for the whole take; WORLD is timed on the first 30 s only."""
    parts, total, seed = [], 0.0, 20
    while total < duration_s:
        take, _ = song_take(duration_s=20.0, sr=sr, seed=seed)
        parts.append(take)
        total += take.audio.size / sr + 0.5
        seed += 1
    take = concat_takes(parts)
    n = int(duration_s * sr)
    take.audio, take.f0_hz = take.audio[:n], take.f0_hz[: int(duration_s / take.hop_s)]
    out: dict[str, Any] = {"duration_s": duration_s, "sr": sr, "voiced_fraction": round(float(np.mean(take.f0_hz > 0)), 3)}
    settings = CorrectionSettings(ornaments="soften")  # the policy path that also computes centres
    t0 = time.perf_counter()
    tgt, _ = target_f0(take.f0_hz, hop_s=take.hop_s, notes=take.notes, ornaments=take.ornaments, settings=settings)
    out["target_f0_s"] = round(time.perf_counter() - t0, 3)
    for method in methods:
        seconds = duration_s if method == "psola" else min(duration_s, 30.0)
        k, m = int(seconds * sr), int(seconds / take.hop_s)
        t0 = time.perf_counter()
        shift_pitch(take.audio[:k], sr=sr, f0_hz=take.f0_hz[:m], hop_s=take.hop_s, target_f0_hz=tgt[:m], method=method)
        el = time.perf_counter() - t0
        out[f"{method}_s_per_audio_s"] = round(el / seconds, 5)
        out[f"{method}_s_for_{duration_s:.0f}s"] = round(el / seconds * duration_s, 2)
    return out


def plot_take(take, curves: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(take.f0_hz.size) * take.hop_s
    fig, ax = plt.subplots(figsize=(12, 5))
    styles = {
        "input (re-tracked)": ("0.6", 2.5),
        "melisma (re-tracked)": ("tab:blue", 1.2),
        "hard-tune (re-tracked)": ("tab:red", 1.0),
        "melisma target": ("k", 0.6),
    }
    voiced = take.f0_hz > 0
    for label, curve in curves.items():
        m = hz_to_midi(curve[: t.size])
        m[~voiced[: m.size]] = np.nan  # hide the tracker's guesses at note edges
        color, lw = styles.get(label, (None, 1.0))
        ax.plot(t[: m.size], m, label=label, color=color, lw=lw)
    for note in take.notes:
        ax.hlines(note["target_midi"], note["start_s"], note["end_s"], colors="green", lw=3, alpha=0.35)
    for orn in take.ornaments:
        ax.axvspan(orn["start_s"], orn["end_s"], color="orange", alpha=0.08)
        ax.text(orn["start_s"], np.nanmax(hz_to_midi(take.f0_hz)) + 0.6, orn["type"], fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch (MIDI)")
    ax.set_title("f0 before/after: ornament-aware correction vs hard-tune (green = targets, orange = ornaments)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/bench_correction"),
        help="folder for results.json and the plot (out/ is git-ignored)",
    )
    parser.add_argument("--quick", action="store_true", help="short takes, 30 s speed test")
    parser.add_argument("--sr", type=int, default=48000)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    takes = [("demo", demo_take(sr=args.sr), [2, 4, 7, 9, 11, 0, 5])]
    for seed in (1, 2) if args.quick else (1, 2, 3, 4):
        take, key = song_take(
            duration_s=12.0 if args.quick else 20.0,
            sr=args.sr,
            seed=seed,
            key=["C major", "A minor", "D shang", "G zhi"][seed - 1],
        )
        takes.append((f"song{seed}", take, key.pitch_classes()))

    results: dict[str, Any] = {"takes": {}}
    rows = []
    for name, take, scale in takes:
        ref_track, _ = yin_track(take.audio, sr=take.sr, hop_s=take.hop_s)
        per: dict[str, Any] = {"none": evaluate(take, take.audio, ref_track)}
        curves = {"input (re-tracked)": ref_track}
        variants = (
            ("melisma_keep", CorrectionSettings(), "psola"),
            ("melisma_soften", CorrectionSettings(ornaments="soften"), "psola"),
            ("melisma_world", CorrectionSettings(), "world"),
        )
        for label, settings, method in variants:
            tgt, out, el = correct_take(take, settings, method=method)
            per[label] = evaluate(take, out, ref_track) | {"resynth_s_per_audio_s": round(el / (take.audio.size / take.sr), 5)}
            if label == "melisma_keep":
                curves["melisma (re-tracked)"] = yin_track(out, sr=take.sr, hop_s=take.hop_s)[0]
                curves["melisma target"] = tgt
        hard = hard_tune(take.f0_hz, hop_s=take.hop_s, scale_pitch_classes=scale)
        hard_out = shift_pitch(take.audio, sr=take.sr, f0_hz=take.f0_hz, hop_s=take.hop_s, target_f0_hz=hard)
        per["hard_tune"] = evaluate(take, hard_out, ref_track)
        curves["hard-tune (re-tracked)"] = yin_track(hard_out, sr=take.sr, hop_s=take.hop_s)[0]
        results["takes"][name] = per
        if name == "demo":
            plot_take(take, curves, args.out / "f0_before_after.png")
        for label, r in per.items():
            rows.append((name, label, r))

    results["formants"] = formant_check(sr=args.sr)
    results["speed"] = speed(30.0 if args.quick else 180.0, sr=args.sr)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))

    print(
        f"{'take':8s} {'method':15s} {'|err| med':>9s} {'p90':>6s} {'vib kept%':>9s} {'rate Δ':>7s} {'slide r':>7s} {'slide rms':>9s} {'HNR dB':>7s}"
    )
    fmt = lambda v, f: f.format(v) if v is not None else "-"  # noqa: E731
    for name, label, r in rows:
        print(
            f"{name:8s} {label:15s} {r['median_abs_cents_error']:9.1f} {r['p90_abs_cents_error']:6.1f} "
            f"{fmt(r['vibrato_extent_kept_pct'], '{:9.1f}'):>9s} {fmt(r['vibrato_rate_change_hz'], '{:7.2f}'):>7s} "
            f"{fmt(r['slide_shape_corr'], '{:7.3f}'):>7s} {fmt(r['slide_shape_rms_cents'], '{:9.1f}'):>9s} {r['hnr_db']:7.1f}"
        )
    print("formants (LPC envelope distance, dB):", json.dumps(results["formants"]))
    print("speed:", json.dumps(results["speed"]))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'f0_before_after.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
