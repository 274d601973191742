"""The picture of a mix: what the singer and the engineer see next to the report.

Panels: the vocal and backing levels over time as placed in the mix (with the style's target
ratio and how the take was lined up); what the vocal chain did to the vocal's spectrum (before and
after matched in level, and their difference in dB), beside the level of the singer's pauses
(bleed and noise) in the raw take, after the bleed removal and after the clean-up; the mix's short-term loudness in LUFS
against the target; and, when pitch analysis ran, the pitch curve with note names, the cents each
note's centre moved, and the ornaments named as a singer names them (vibrato, slide, grace note,
trill). matplotlib is imported here only, so the engine does not pay for it unless a picture is
asked for.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

#: Ornaments as a singer names them (the plan's classes folded; drift is not an ornament) and their colours.
SINGER_COLOURS = {
    "vibrato": "#d62728",
    "slide": "#1f77b4",
    "grace note": "#ff7f0e",
    "trill": "#2ca02c",
}
#: Kept for callers that colour the plan's own classes.
ORNAMENT_COLOURS = {
    "vibrato": "#d62728",
    "slide_in": "#1f77b4",
    "slide_out": "#1f77b4",
    "portamento": "#1f77b4",
    "grace": "#ff7f0e",
    "trill": "#2ca02c",
    "mordent": "#2ca02c",
    "drift": "#7f7f7f",
}
#: Band over which the before/after spectra are matched in level (Hz).
MATCH_BAND_HZ = (100.0, 8000.0)


def _short_term_db(y: np.ndarray, sr: int, window_s: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    if y.ndim == 2:
        y = y.mean(axis=0)
    hop = int(window_s * sr)
    n = len(y) // hop
    if n == 0:
        return np.zeros(1), np.full(1, -90.0)
    power = (y[: n * hop].astype(np.float64).reshape(n, hop) ** 2).mean(axis=1)
    return (np.arange(n) + 0.5) * window_s, 10 * np.log10(power + 1e-10)


def _spectrum_db(y: np.ndarray, sr: int, n_fft: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    from scipy.signal import welch

    if y.ndim == 2:
        y = y.mean(axis=0)
    f, p = welch(np.asarray(y, dtype=np.float32)[: sr * 60], fs=sr, nperseg=n_fft)
    return f, 10 * np.log10(p + 1e-14)


def smoothed_spectrum_db(y: np.ndarray, sr: int, *, fraction: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """The average spectrum in 1/``fraction``-octave bands from 40 Hz to Nyquist: (centres Hz, dB)."""
    f, p = _spectrum_db(y, sr)
    power = 10 ** (p / 10)
    centres = 40.0 * 2 ** (np.arange(0, int(fraction * np.log2(0.5 * sr / 40.0)) + 1) / fraction)
    half = 2 ** (0.5 / fraction)
    out = np.array([power[(f >= c / half) & (f < c * half)].mean() if np.any((f >= c / half) & (f < c * half)) else np.nan
                    for c in centres])
    return centres, 10 * np.log10(out + 1e-14)


def level_matched(before: np.ndarray, after: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, float]:
    """``after`` shifted so that its mean power over :data:`MATCH_BAND_HZ` equals ``before``'s; and the shift (dB).

    Matched so, the curves show what the chain did to the balance of frequencies (its EQ, de-esser
    and compressor), not how much louder it made the vocal.
    """
    band = (centres >= MATCH_BAND_HZ[0]) & (centres <= MATCH_BAND_HZ[1]) & np.isfinite(before) & np.isfinite(after)
    if not np.any(band):
        return after, 0.0

    def mean_db(c: np.ndarray) -> float:
        return float(10 * np.log10(np.mean(10 ** (c[band] / 10))))

    shift = mean_db(before) - mean_db(after)
    return after + shift, shift


def loudness_curve(mix: np.ndarray, sr: int, *, hop_s: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The mix's EBU R128 short-term loudness (3 s windows, K-weighted, LUFS), as a meter reads it
    at each time (the end of its window): ``(times s, LUFS)``.

    >>> import numpy as np
    >>> y = np.sin(2 * np.pi * 997 * np.arange(5 * 48000) / 48000).astype(np.float32)
    >>> t, lufs = loudness_curve(np.stack([y, y]), 48000)
    >>> float(t[0]), round(float(lufs[0]), 1) + 0.0
    (3.0, 0.0)
    """
    from .analysis.loudness import short_term_lufs

    st = short_term_lufs(mix, sr=sr, window_s=3.0, hop_s=hop_s)
    return 3.0 + np.arange(len(st)) * hop_s, st


def singer_name(kind: str) -> str | None:
    """An ornament class as a singer names it (None for what is not an ornament, such as drift)."""
    from .report_headline import SINGER_ORNAMENTS

    return SINGER_ORNAMENTS.get(kind)


def plot_report(
    path: str | os.PathLike,
    report: dict[str, Any],
    *,
    mix: np.ndarray,
    stems: dict[str, np.ndarray],
    sr: int,
    vocal_dry: np.ndarray | None = None,
) -> list[str]:
    """Draw the mix picture to ``path`` (png/svg/pdf, chosen by the extension); returns the panels' titles.

    Panels: the vocal and backing as placed; what the vocal chain did to the spectrum (before and
    after, level-matched, and their difference in dB); the mix's short-term loudness in LUFS
    against the target; and, when pitch ran, the pitch curve with note names, the cents each
    note moved, and the ornaments named as a singer names them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pitch = report.get("pitch") or {}
    has_pitch = bool(pitch.get("f0"))
    rows = 3 + int(has_pitch)
    heights = [1.0, 1.0, 0.8] + ([1.5] if has_pitch else [])
    fig = plt.figure(figsize=(12, 2.8 * sum(heights)), constrained_layout=True)
    grid = fig.add_gridspec(rows, 4, height_ratios=heights)
    # the spectrum shares its row with the pauses' levels before and after the clean-up
    axes = [fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, :3])] + [fig.add_subplot(grid[r, :]) for r in range(2, rows)]
    _plot_pauses(fig.add_subplot(grid[1, 3]), report.get("cleanup") or {})
    style = (report.get("settings") or {}).get("style", "?")
    loud = report.get("loudness") or {}
    title = f"Melisma mix — style {style}"
    if loud:
        where = " (the file)" if loud.get("measured") == "file" else ""
        title += (f" — {loud.get('integrated_lufs', float('nan')):.1f} LUFS, "
                  f"{loud.get('true_peak_dbtp', float('nan')):.1f} dBTP{where}")
    fig.suptitle(title)

    ax = axes[0]
    t, v = _short_term_db(stems["vocal"], sr)
    _, b = _short_term_db(stems["backing"], sr)
    ax.plot(t, v, label="vocal (as placed)", color="#d62728", lw=1)
    ax.plot(t, b, label="backing (as placed)", color="#1f77b4", lw=1)
    bal = report.get("balance") or {}
    al = report.get("alignment") or {}
    if al.get("method", "none") == "none":
        timing = "take NOT lined up (no bleed, no calibration)"
    elif al.get("method") == "guess":
        timing = f"take placed {al.get('offset_ms', 0):+.0f} ms by an accepted GUESS (not measured)"
    else:
        timing = (f"take was {al.get('offset_ms', 0):+.0f} ms late ({al.get('method', '?')}, "
                  f"confidence {al.get('confidence', 0):.2f})")
    ax.set_title(f"levels — vocal {bal.get('vocal_to_backing_lu', float('nan')):+.1f} LU over backing "
                 f"(target {bal.get('target_lu', float('nan')):+.1f}); {timing}", fontsize=9)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("dBFS (0.4 s RMS)")
    ax.set_ylim(max(-80, min(np.min(v), np.min(b)) - 3), 0)
    ax.legend(loc="lower right", fontsize=8)

    ax = axes[1]
    centres, after = smoothed_spectrum_db(stems["vocal"], sr)
    if vocal_dry is not None:
        _, before = smoothed_spectrum_db(vocal_dry, sr)
        after_matched, shift = level_matched(before, after, centres)
        ax.semilogx(centres, before, label="vocal before the chain (cleaned)", color="#7f7f7f", lw=1.2)
        ax.semilogx(centres, after_matched, label=f"after the chain, level-matched ({-shift:+.1f} dB overall)",
                    color="#d62728", lw=1.2)
        # the difference only where the vocal has something (within 60 dB of its loudest band)
        audible = before >= np.nanmax(before) - 60.0
        change = np.where(audible, after_matched - before, np.nan)
        diff = ax.twinx()
        diff.semilogx(centres, change, color="black", lw=1, ls="--", label="after − before")
        diff.axhline(0.0, color="black", lw=0.5, alpha=0.4)
        span = max(6.0, float(np.nanmax(np.abs(change))) + 1.0) if np.any(np.isfinite(change)) else 6.0
        diff.set_ylim(-span, span)
        diff.set_ylabel("after − before (dB)")
        diff.legend(loc="lower right", fontsize=8)
        ax.set_title("what the vocal chain did to the spectrum (1/6 octave, level-matched "
                     f"{MATCH_BAND_HZ[0]:.0f} Hz–{MATCH_BAND_HZ[1] / 1000:.0f} kHz)", fontsize=9)
    else:
        ax.semilogx(centres, after, label="vocal after the chain", color="#d62728", lw=1.2)
        ax.set_title("vocal spectrum after the chain (1/6 octave)", fontsize=9)
    ax.set_xlim(40, sr / 2)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("dB")
    ax.legend(loc="lower left", fontsize=8)

    ax = axes[2]
    st_t, st = loudness_curve(mix, sr)
    ax.plot(st_t, np.where(np.isfinite(st), st, np.nan), color="black", lw=1, label="short-term loudness (3 s)")
    target = float(loud.get("target_lufs", -14.0))
    ax.axhline(target, color="#2ca02c", ls="--", lw=1, label=f"target {target:g} LUFS")
    if loud.get("integrated_lufs") is not None:
        ax.axhline(float(loud["integrated_lufs"]), color="#9467bd", ls=":", lw=1.2,
                   label=f"integrated {float(loud['integrated_lufs']):.1f} LUFS")
    finite = st[np.isfinite(st)]
    low = float(np.min(finite)) if finite.size else target - 10
    ax.set_ylim(max(target - 24, low - 2), max(target + 6, float(np.max(finite)) + 2 if finite.size else target + 6))
    ax.set_title("mix loudness over time (EBU R128 short-term, LUFS) against the target", fontsize=9)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("LUFS")
    ax.legend(loc="lower right", fontsize=8)

    if has_pitch:
        _plot_pitch(axes[3], pitch)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    fig.savefig(path, dpi=100, format=os.path.splitext(str(path))[1].lstrip(".").lower() or "png")
    plt.close(fig)
    return titles


def pause_bars(cleanup: dict[str, Any]) -> list[tuple[str, float]]:
    """The level of the singer's pauses (dBFS) at each step of the clean-up: ``[(label, dBFS), ...]``.

    From the bleed removal's and the clean-up's ``pause_levels`` (see :mod:`melisma.render.pauses`):
    the raw take, after the bleed was removed, after the noise clean-up.

    >>> pause_bars({"actions": [{"action": "bleed_removal", "pauses_before_dbfs": -40.0, "pauses_after_dbfs": -58.0},
    ...                         {"action": "pause_levels", "pauses_before_dbfs": -57.0, "pauses_after_dbfs": -75.0}]})
    [('raw take', -40.0), ('bleed removed', -58.0), ('cleaned', -75.0)]
    """
    bars: list[tuple[str, float]] = []
    actions = cleanup.get("actions") or []
    bleed = next((a for a in actions if a.get("action") == "bleed_removal" and a.get("pauses_before_dbfs") is not None), None)
    clean = next((a for a in actions if a.get("action") == "pause_levels" and a.get("pauses_before_dbfs") is not None), None)
    if bleed is not None:
        bars += [("raw take", float(bleed["pauses_before_dbfs"])), ("bleed removed", float(bleed["pauses_after_dbfs"]))]
    if clean is not None:
        if bleed is None:
            bars.append(("raw take", float(clean["pauses_before_dbfs"])))
        bars.append(("cleaned", float(clean["pauses_after_dbfs"])))
    return bars


def _plot_pauses(ax, cleanup: dict[str, Any]) -> None:
    """Bars: the singer's pauses (bleed + noise) before and after each clean-up step, annotated in dB."""
    bars = pause_bars(cleanup)
    ax.set_title("bleed and noise in the singer's pauses", fontsize=9)
    if not bars:
        ax.text(0.5, 0.5, "no pauses measured", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    labels, levels = [b[0] for b in bars], np.array([b[1] for b in bars])
    bottom = float(min(-100.0, np.min(levels) - 10.0))
    colours = {"raw take": "#7f7f7f", "bleed removed": "#1f77b4", "cleaned": "#2ca02c"}
    ax.bar(range(len(bars)), levels - bottom, bottom=bottom, color=[colours[k] for k in labels], width=0.6)
    for i, level in enumerate(levels):
        text = f"{level:.0f} dBFS" + (f"\n{level - levels[i - 1]:+.0f} dB" if i else "")
        ax.annotate(text, (i, level), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xticks(range(len(bars)), labels, fontsize=7)
    ax.set_ylim(bottom, float(np.max(levels)) + 12.0)
    ax.set_ylabel("dBFS (50 ms blocks)", fontsize=7)


def plot_pitch_report(path: str | os.PathLike, report: dict[str, Any]) -> None:
    """The pitch picture alone (``melisma correct --plot``): f0 before/after, note names, cents moved, ornaments."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 1, figsize=(12, 4.5), constrained_layout=True)
    _plot_pitch(ax, report["pitch"])
    fig.savefig(path, dpi=100, format=os.path.splitext(str(path))[1].lstrip(".").lower() or "png")
    plt.close(fig)


def pitch_labels(pitch: dict[str, Any]) -> list[tuple[float, float, str]]:
    """``(time s, midi, text)`` for each note: its name and the cents its centre moved, e.g. ``A4 −37¢``.

    >>> pitch_labels({"notes": [{"start_s": 1.0, "end_s": 2.0, "midi": 69.4, "target_midi": 69.0}],
    ...               "corrections": [{"note": 0, "shift_cents": -37.0}]})
    [(1.5, 69.4, 'A4 −37¢')]
    """
    from .report_headline import note_name

    moved = {int(c.get("note", -1)): float(c.get("shift_cents") or 0.0) for c in pitch.get("corrections") or []}
    out = []
    for i, n in enumerate(pitch.get("notes") or []):
        centre = float(n.get("target_midi") if n.get("target_midi") is not None else n["midi"])
        text = note_name(centre)
        if i in moved and abs(moved[i]) >= 0.5:
            text += f" {moved[i]:+.0f}¢".replace("-", "−")
        out.append((0.5 * (float(n["start_s"]) + float(n["end_s"])), float(n["midi"]), text))
    return out


def _plot_pitch(ax, pitch: dict[str, Any]) -> None:
    from .report_headline import note_name

    f0 = pitch["f0"]
    hz = np.asarray(f0["hz"], dtype=float)
    t = np.arange(len(hz)) * float(f0["hop_s"])
    midi = np.where(hz > 0, 69 + 12 * np.log2(np.maximum(hz, 1e-6) / 440.0), np.nan)
    ax.plot(t, midi, color="#444444", lw=0.8, label="sung pitch")
    if pitch.get("target_f0"):
        th = np.asarray(pitch["target_f0"]["hz"], dtype=float)
        tm = np.where(th > 0, 69 + 12 * np.log2(np.maximum(th, 1e-6) / 440.0), np.nan)
        ax.plot(np.arange(len(th)) * float(pitch["target_f0"]["hop_s"]), tm, color="#2ca02c", lw=0.8, label="corrected")
    for note in pitch.get("notes", []):
        if note.get("target_midi") is not None:
            ax.hlines(note["target_midi"], note["start_s"], note["end_s"], color="#2ca02c", lw=2, alpha=0.5)
    for i, (x, y, text) in enumerate(pitch_labels(pitch)):  # alternate heights so neighbours do not overlap
        ax.annotate(text, (x, y), xytext=(0, 8 if i % 2 == 0 else -13), textcoords="offset points", ha="center",
                    fontsize=6.5, color="#222222")
    seen = set()
    for orn in pitch.get("ornaments", []):
        name = singer_name(str(orn.get("type")))
        if name is None:
            continue  # drift and other inner classes are not ornaments a singer names
        ax.axvspan(orn["start_s"], orn["end_s"], color=SINGER_COLOURS[name], alpha=0.18,
                   label=name if name not in seen else None)
        seen.add(name)
    finite = midi[np.isfinite(midi)]
    if finite.size:
        lo, hi = int(np.floor(np.percentile(finite, 1))) - 2, int(np.ceil(np.percentile(finite, 99))) + 3
        ax.set_ylim(lo, hi)
        step = 1 if hi - lo <= 14 else 2
        ticks = list(range(lo, hi + 1, step))
        ax.set_yticks(ticks)
        ax.set_yticklabels([note_name(m) for m in ticks], fontsize=7)
    key = pitch.get("key") or {}
    ax.set_title(f"pitch — key {key.get('name', '?')} (confidence {key.get('confidence', 0):.2f}); "
                 "each note: its name and how far its centre moved (cents)", fontsize=9)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("note")
    ax.legend(loc="upper right", fontsize=7, ncol=5)
