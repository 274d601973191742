"""Decoding the take and the backing, with one check of what a usable take is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..audio_io import DecodedAudio, decode, file_sha256, load_audio, probe
from ..errors import AudioContentError
from .options import ANALYSIS_SR, ENGINE_SR, MIN_TAKE_S, SILENCE_PEAK_DBFS

#: Lowest sample rate a take may have (AMR-NB phone recordings are 8000 Hz).
MIN_TAKE_SR = 8000


def check_take(path: str | os.PathLike, info: Any, *, peak: float, n_samples: int, ac_peak: float | None = None) -> list[str]:
    """Refuse a silent, constant (DC), too-short or absurdly sampled take; returns the warnings a usable one deserves.

    ``info`` is the file's :func:`~melisma.audio_io.probe`, ``peak`` the decoded take's peak
    (linear), ``n_samples`` its length at :data:`ENGINE_SR` and ``ac_peak`` (when known) the RMS
    of the take about its median (its ends left out: a resampler rings there).
    """
    if 0 < info.sr < MIN_TAKE_SR:
        raise AudioContentError(f"{path}: the take is sampled at {info.sr} Hz, which cannot hold a voice; phones record "
                                f"at {MIN_TAKE_SR} Hz or more: export the take again from the recording app")
    peak_db = 20 * np.log10(peak) if peak > 0 else -np.inf
    if ac_peak is not None and peak_db >= SILENCE_PEAK_DBFS and ac_peak < 10 ** (SILENCE_PEAK_DBFS / 20):
        raise AudioContentError(f"{path}: the take holds no sound, only a constant level (DC offset, peak "
                                f"{peak_db:.0f} dBFS); check the microphone and record again")
    if peak_db < SILENCE_PEAK_DBFS:
        raise AudioContentError(
            f"{path}: the take is silent (peak {peak_db:.0f} dBFS); check the phone's microphone "
            "permission and record again"
        )
    if n_samples < MIN_TAKE_S * ENGINE_SR:
        raise AudioContentError(
            f"{path}: the take is only {n_samples / ENGINE_SR:.2f} s long; Melisma needs at least {MIN_TAKE_S:.0f} s of singing"
        )
    warnings = []
    if info.sr < 16000:
        warnings.append(
            f"take is sampled at {info.sr} Hz: nothing above {info.sr // 2} Hz was recorded, the vocal will sound dull"
        )
    if info.channels > 1:
        warnings.append(f"take has {info.channels} channels; they were averaged to mono")
    return warnings


def _ac_peak(y: Any, sr: int) -> float:
    """Largest distance of the take from its median level, 50 ms in from each end (0 for a DC-only take)."""
    a = np.asarray(y, dtype=np.float32).reshape(-1)
    trim = int(0.05 * sr)
    if a.size > 4 * trim:
        a = a[trim:-trim]
    return float(np.max(np.abs(a - np.median(a)))) if a.size else 0.0


def file_info(path: str | os.PathLike, info: Any, n_samples: int) -> dict[str, Any]:
    """What the plan and the report say about an input file."""
    return {
        "path": str(path),
        "sha256": file_sha256(path),
        "codec": info.codec,
        "sr": info.sr,
        "channels": info.channels,
        "duration_s": round(n_samples / ENGINE_SR, 3),
    }


def load_take(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    """Decode a take to mono at the engine rate, whole in memory; refuse silence and too-short takes."""
    info = probe(path)
    y, _ = load_audio(path, sr=ENGINE_SR, mono=True)
    warnings = check_take(path, info, peak=float(np.max(np.abs(y))) if y.size else 0.0, n_samples=y.shape[0],
                          ac_peak=_ac_peak(y, ENGINE_SR))
    return y, file_info(path, info, y.shape[0]), warnings


def decode_take(path: str | os.PathLike, *, npy_path: Path | None = None,
                spill_bytes: int | None = None) -> tuple[DecodedAudio, dict[str, Any], list[str]]:
    """:func:`load_take` in one streaming pass, plus a mono copy at :data:`ANALYSIS_SR`.

    A take longer than ``spill_bytes`` at the engine rate (float32) goes to ``npy_path`` instead
    of memory (``audio`` is then ``None`` and ``npy_path`` says where it is).
    """
    info = probe(path)
    long_take = (spill_bytes is not None and npy_path is not None and info.duration_s is not None
                 and info.duration_s * ENGINE_SR * 4 > spill_bytes)
    d = decode(path, sr=ENGINE_SR, channels=1, analysis_sr=ANALYSIS_SR, npy_path=npy_path if long_take else None)
    warnings = check_take(path, info, peak=d.peak, n_samples=d.n_samples, ac_peak=_ac_peak(d.analysis, ANALYSIS_SR))
    return d, file_info(path, info, d.n_samples), warnings


def decode_backing(path: str | os.PathLike, npy_path: Path) -> tuple[DecodedAudio, dict[str, Any], list[str]]:
    """Decode a backing to stereo at the engine rate straight into ``npy_path``, plus a mono copy at
    :data:`ANALYSIS_SR`; the full-rate backing is never held in memory.
    """
    warnings: list[str] = []
    info = probe(path)
    d = decode(path, sr=ENGINE_SR, channels=2, analysis_sr=ANALYSIS_SR, npy_path=npy_path)
    peak_db = 20 * np.log10(d.peak) if d.peak > 0 else -np.inf
    if peak_db < SILENCE_PEAK_DBFS:
        raise AudioContentError(f"{path}: the backing track is silent (peak {peak_db:.0f} dBFS); choose the right file")
    if d.file_channels > 2:
        warnings.append(f"backing has {d.file_channels} channels; they were folded down to stereo")
    return d, file_info(path, info, d.n_samples), warnings
