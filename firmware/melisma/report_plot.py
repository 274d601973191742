"""The picture of a mix: what the singer and the app see next to the report.

Panels: the vocal and backing levels over time as placed in the mix (with the style's target
ratio), the vocal's average spectrum before and after the chain, the master's loudness, and the
pitch curve with notes and ornaments when pitch analysis ran. matplotlib is imported here only,
so the engine does not pay for it unless a picture is asked for.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

ORNAMENT_COLOURS = {
    "vibrato": "#d62728",
    "slide_in": "#1f77b4",
    "slide_out": "#17becf",
    "portamento": "#9467bd",
    "grace": "#ff7f0e",
    "trill": "#2ca02c",
    "mordent": "#8c564b",
    "drift": "#7f7f7f",
}


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


def plot_report(
    path: str | os.PathLike,
    report: dict[str, Any],
    *,
    mix: np.ndarray,
    stems: dict[str, np.ndarray],
    sr: int,
    vocal_dry: np.ndarray | None = None,
) -> None:
    """Draw the mix picture to ``path`` (png/svg/pdf, chosen by the extension)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pitch = report.get("pitch") or {}
    has_pitch = bool(pitch.get("f0"))
    rows = 3 + int(has_pitch)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.6 * rows), constrained_layout=True)
    style = (report.get("settings") or {}).get("style", "?")
    title = f"Melisma mix — style {style}"
    loud = report.get("loudness") or {}
    if loud:
        title += f" — {loud.get('integrated_lufs', float('nan')):.1f} LUFS, {loud.get('true_peak_dbtp', float('nan')):.1f} dBTP"
    fig.suptitle(title)

    ax = axes[0]
    t, v = _short_term_db(stems["vocal"], sr)
    _, b = _short_term_db(stems["backing"], sr)
    ax.plot(t, v, label="vocal (as placed)", color="#d62728", lw=1)
    ax.plot(t, b, label="backing (as placed)", color="#1f77b4", lw=1)
    bal = report.get("balance") or {}
    al = report.get("alignment") or {}
    ax.set_title(
        f"levels — vocal {bal.get('vocal_to_backing_lu', float('nan')):+.1f} LU over backing "
        f"(target {bal.get('target_lu', float('nan')):+.1f}); take was {al.get('offset_ms', 0):+.0f} ms late "
        f"({al.get('method', '?')}, confidence {al.get('confidence', 0):.2f})",
        fontsize=9,
    )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("dBFS (0.4 s RMS)")
    ax.set_ylim(max(-80, min(np.min(v), np.min(b)) - 3), 0)
    ax.legend(loc="lower right", fontsize=8)

    ax = axes[1]
    if vocal_dry is not None:
        f, p = _spectrum_db(vocal_dry, sr)
        ax.semilogx(f[1:], p[1:], label="vocal after clean-up", color="#7f7f7f", lw=1)
    f, p = _spectrum_db(stems["vocal"], sr)
    ax.semilogx(f[1:], p[1:], label="vocal after chain", color="#d62728", lw=1)
    ax.set_xlim(40, sr / 2)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("dB")
    ax.set_title("vocal spectrum before and after the vocal chain", fontsize=9)
    ax.legend(loc="lower left", fontsize=8)

    ax = axes[2]
    t, m = _short_term_db(mix, sr)
    ax.plot(t, m, color="black", lw=1)
    ax.axhline(loud.get("target_lufs", -14.0), color="#2ca02c", ls="--", lw=1, label="target loudness")
    ax.set_title("master (0.4 s RMS)", fontsize=9)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("dBFS")
    ax.legend(loc="lower right", fontsize=8)

    if has_pitch:
        _plot_pitch(axes[3], pitch)
    fig.savefig(path, dpi=100, format=os.path.splitext(str(path))[1].lstrip(".").lower() or "png")
    plt.close(fig)


def plot_pitch_report(path: str | os.PathLike, report: dict[str, Any]) -> None:
    """The pitch picture alone (``melisma correct --plot``): f0 before/after, targets, ornaments."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 1, figsize=(12, 4.5), constrained_layout=True)
    _plot_pitch(ax, report["pitch"])
    fig.savefig(path, dpi=100, format=os.path.splitext(str(path))[1].lstrip(".").lower() or "png")
    plt.close(fig)


def _plot_pitch(ax, pitch: dict[str, Any]) -> None:
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
    seen = set()
    for orn in pitch.get("ornaments", []):
        colour = ORNAMENT_COLOURS.get(orn["type"], "#bcbd22")
        ax.axvspan(orn["start_s"], orn["end_s"], color=colour, alpha=0.18,
                   label=orn["type"] if orn["type"] not in seen else None)
        seen.add(orn["type"])
    key = pitch.get("key") or {}
    ax.set_title(f"pitch — key {key.get('name', '?')} (confidence {key.get('confidence', 0):.2f})", fontsize=9)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("MIDI note")
    ax.legend(loc="upper right", fontsize=7, ncol=4)
