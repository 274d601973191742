"""Decoding the take and the backing, with one check of what a usable take is."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..audio_io import DecodedAudio, decode, file_sha256, load_audio, probe, resample
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


def decode_take(path: str | os.PathLike, *, npy_path: Path | None = None, spill_bytes: int | None = None,
                analysis_buffer: Callable[[int], np.ndarray] | None = None,
                ) -> tuple[DecodedAudio, dict[str, Any], list[str], dict[str, Any]]:
    """:func:`load_take` in one streaming pass, plus a mono copy at :data:`ANALYSIS_SR`, with
    clipping found and repaired at the file's own rate (:func:`declip_at_file_rate`).

    Returns the decoded take, its file info, the warnings and the clipping found (``clipping``:
    :func:`find_clipping` at ``sr``, the file's rate; ``action``: the
    clean-up action when runs were repaired, else None). A take longer than ``spill_bytes`` at the
    engine rate (float32) is decoded straight to ``npy_path`` instead of memory (``audio`` is then
    ``None``); its clipping is looked for and repaired there, at the engine rate, block by block
    (:func:`declip_long_take`; the file's own rate would need the whole take in memory at that
    rate), and its mono copy goes into what ``analysis_buffer`` gives (see
    :func:`~melisma.audio_io.decode`), if given.
    """
    info = probe(path)
    long_take = (spill_bytes is not None and npy_path is not None and info.duration_s is not None
                 and info.duration_s * ENGINE_SR * 4 > spill_bytes)
    if long_take:
        d = decode(path, sr=ENGINE_SR, channels=1, analysis_sr=ANALYSIS_SR, npy_path=npy_path,
                   analysis_buffer=analysis_buffer)
        assert d.npy_path is not None
        clipping: dict[str, Any] = declip_long_take(d.npy_path)
    else:
        d, clipping = declip_at_file_rate(path, info)
    warnings = check_take(path, info, peak=d.peak, n_samples=d.n_samples, ac_peak=_ac_peak(d.analysis, ANALYSIS_SR))
    if clipping["action"] is not None and clipping["clipping"].get("heavy"):
        warnings.append(f"heavy clipping: {100 * clipping['clipping']['fraction']:.1f} % of samples were at the rail "
                        "(repaired); record with the input gain lower")
    return d, file_info(path, info, d.n_samples), warnings, clipping


def declip_at_file_rate(path: str | os.PathLike, info: Any) -> tuple[DecodedAudio, dict[str, Any]]:
    """Decode a take to mono at :data:`ENGINE_SR` (plus :data:`ANALYSIS_SR`), its clipped runs
    repaired at the file's own rate first.

    A clipped take's flat tops are only flat at the rate they were recorded at: a resampler turns
    them into ripples that :func:`~melisma.analysis.cleanup.detect_clipping` no longer sees
    (measured: 880 runs at 44.1 kHz, 0 after resampling to 48 kHz), so the detection and the
    repair (:class:`~melisma.render.declip.ARDeclipper`) run on the decoded take at its own rate,
    before the resampling, the alignment and the bleed removal (which rewrites every sample). A
    take with no clipped runs is decoded exactly as before (the same samples). Lossy codecs
    (AAC) smear the tops, and noise on an analog rail hides it from the exact test: when that finds
    nothing, :func:`~melisma.render.declip.detect_soft_clipping` tests the shape of the near-peak
    runs (``firmware/docs/restore.md``), and a take it finds clipped is repaired at the level it found.
    """
    if info.sr == ENGINE_SR or info.sr <= 0:
        d = decode(path, sr=ENGINE_SR, channels=1, analysis_sr=ANALYSIS_SR)
        assert d.audio is not None
        clipping = {**find_clipping(d.audio[0], sr=d.file_sr), "sr": d.file_sr}
        if clipping["regions"] == 0:
            return d, {"clipping": clipping, "action": None}
        action = _repair(d.audio[0], clipping, d.file_sr)
        return _with_audio(d, d.audio[0], ENGINE_SR), {"clipping": clipping, "action": action}
    raw = decode(path, sr=None, channels=1)
    assert raw.audio is not None
    take = raw.audio[0]
    clipping = {**find_clipping(take, sr=raw.file_sr), "sr": raw.file_sr}
    if clipping["regions"] == 0:
        del raw, take  # the file-rate copy is out of memory before the usual decode
        return decode(path, sr=ENGINE_SR, channels=1, analysis_sr=ANALYSIS_SR), {"clipping": clipping, "action": None}
    action = _repair(take, clipping, raw.file_sr)
    return _with_audio(raw, take, raw.file_sr), {"clipping": clipping, "action": action}


def find_clipping(take: np.ndarray, *, sr: int) -> dict[str, Any]:
    """Clipped runs in a decoded take: samples at an exact rail
    (:func:`~melisma.analysis.cleanup.detect_clipping`), else a rail smeared by a codec or noise
    (:func:`~melisma.render.declip.detect_soft_clipping`, ``method: 'soft rail'``); ``regions`` 0 when neither finds any.
    """
    from ..analysis.cleanup import detect_clipping
    from ..render.declip import detect_soft_clipping

    exact = detect_clipping(take, sr=sr)
    if exact["regions"] > 0:
        return {**exact, "method": "rail"}
    soft = detect_soft_clipping(take, sr=sr)
    return soft if soft["regions"] > 0 else exact


#: Samples of a long take read at a time by :func:`declip_long_take` (one second at the engine rate).
LONG_TAKE_BLOCK = ENGINE_SR


def declip_long_take(npy_path: Path, *, sr: int = ENGINE_SR) -> dict[str, Any]:
    """Find and repair the clipping of a long take already decoded to ``npy_path`` (mono, at ``sr``),
    reading and rewriting it one block at a time.

    A take too long to hold in memory is resampled to the engine rate as it is decoded, so its
    clipping can only be looked for there: an exact rail survives only in a file recorded at that
    rate; a resampled (or AAC) take's rail is found by the soft-rail test, which reads the
    resampler's ripples as it reads the codec's (``firmware/docs/restore.md``). The same tests as
    :func:`find_clipping`, with the peaks and the near-peak level taken from a pass over the blocks
    and the soft-rail test run on the one-second blocks with the most near-peak samples; the
    repair is :class:`~melisma.render.declip.ARDeclipper` streaming over the blocks, each block's
    output written back behind the block being read (it comes ``latency_samples`` late). The 16 kHz
    analysis copy, made from the file as it was decoded, is left as it is.

    Returns ``{"clipping": ..., "action": ...}`` as :func:`declip_at_file_rate` does.
    """
    from ..analysis.cleanup import HEAVY_CLIPPING_FRACTION, MIN_CLIP_RUN, clipped_runs
    from ..render.declip import (
        SOFT_CLIP_EXCERPT_S,
        SOFT_CLIP_MIN_OVERSHOOT_DB,
        SOFT_RAIL_DEPTHS_DB,
        ARDeclipper,
        rebuilt_overshoot_db,
    )
    from ..render.stages import db_to_gain

    x = np.load(npy_path, mmap_mode="r+")
    n, blk = int(x.shape[-1]), LONG_TAKE_BLOCK
    found: dict[str, Any] = {"fraction": 0.0, "threshold": 1.0, "regions": 0, "longest_ms": 0.0, "heavy": False,
                             "sr": sr, "at": "engine rate (a long take, resampled as it was decoded)"}
    if x.ndim != 1 or n < MIN_CLIP_RUN:
        return {"clipping": found, "action": None}
    # pass 1: the peak of each polarity and a histogram of magnitudes (0.01 dB bins from -100 dBFS)
    pos = neg = 0.0
    hist = np.zeros(12001, np.int64)
    for a in range(0, n, blk):
        b = np.asarray(x[a:a + blk], dtype=np.float32)
        if not np.all(np.isfinite(b)):
            return {"clipping": found, "action": None}
        pos, neg = max(pos, float(b.max())), max(neg, float(-b.min()))
        db = 20.0 * np.log10(np.maximum(np.abs(b), 1e-5))
        hist += np.bincount(np.clip(np.round((db + 100.0) * 100.0).astype(np.int64), 0, 12000), minlength=12001)
    if max(pos, neg) <= 0.0:
        return {"clipping": found, "action": None}

    def runs_at(level_pos: float, level_neg: float) -> tuple[int, int, int]:
        """Runs of MIN_CLIP_RUN or more samples at or past the levels: count, samples, longest (block by block)."""
        count = total = longest = 0
        for a in range(0, n, blk):
            b = np.asarray(x[a:a + blk])
            mask = (b >= level_pos) | (b <= -level_neg)
            starts, ends = clipped_runs(mask.astype(np.float32), threshold=0.5)
            if starts.size:
                count, total = count + int(starts.size), total + int(np.sum(ends - starts))
                longest = max(longest, int(np.max(ends - starts)))
        return count, total, longest

    tol = 2e-5  # as detect_clipping: samples within 2e-5 of the rail
    method, threshold = "rail", min(pos, neg if neg > 0 else pos) * (1.0 - tol)
    count, total, longest = runs_at(pos * (1.0 - tol), neg * (1.0 - tol) if neg > 0 else np.inf)
    if count == 0:
        # the soft-rail test on the seconds with the most near-peak samples, at each depth
        cum = np.cumsum(hist)
        near_peak = float(db_to_gain(int(np.searchsorted(cum, 0.9999 * cum[-1])) / 100.0 - 100.0))
        levels = [near_peak * db_to_gain(-float(d)) for d in SOFT_RAIL_DEPTHS_DB]
        counts = np.zeros((len(levels), (n + blk - 1) // blk), np.int64)
        for i, a in enumerate(range(0, n, blk)):
            mag = np.abs(np.asarray(x[a:a + blk]))
            counts[:, i] = [int(np.count_nonzero(mag >= lv)) for lv in levels]
        best, best_level = -np.inf, None
        for lv, c in zip(levels, counts, strict=True):
            chosen = sorted(int(i) for i in np.argsort(c)[::-1][:SOFT_CLIP_EXCERPT_S] if c[i] > 0)
            over = rebuilt_overshoot_db([np.asarray(x[i * blk:(i + 1) * blk]) for i in chosen], level=lv, sr=sr)
            if over is not None and over > best:
                best, best_level = over, lv
        if best_level is None or best < SOFT_CLIP_MIN_OVERSHOOT_DB:
            return {"clipping": found, "action": None}
        method, threshold = "soft rail", best_level
        count, total, longest = runs_at(best_level, best_level)
        found["overshoot_db"] = round(float(best), 3)
        if count == 0:
            return {"clipping": found, "action": None}
    fraction = total / n
    found.update(fraction=round(fraction, 6), threshold=round(float(threshold), 6), regions=count,
                 longest_ms=round(1000.0 * longest / sr, 3), heavy=bool(fraction >= HEAVY_CLIPPING_FRACTION),
                 method=method)
    # the repair, streaming: a block's output is the input ``lag`` samples earlier, written back behind the reading
    stage = ARDeclipper(threshold=float(found["threshold"]))
    lag = stage.latency_samples(sr)
    for a in range(0, n + lag, blk):
        b = np.asarray(x[a:a + blk], dtype=np.float32).copy() if a < n else np.zeros(0, np.float32)
        if a + blk > n:  # past the end: zeros push the last samples out
            b = np.concatenate([b, np.zeros(min(blk, n + lag - a) - b.size, np.float32)])
        out = stage.process(b, sr)
        lo = a - lag
        keep = slice(max(0, -lo), min(out.size, n - lo))
        if keep.stop > keep.start:
            x[lo + keep.start:lo + keep.stop] = out[keep]
    x.flush()
    action = {"action": "declip", "method": "ar", "found": method, "threshold": float(found["threshold"]),
              "regions": count, "fraction": float(found["fraction"]), "sr": sr,
              "at": "the decoded take at the engine rate (a long take), before bleed removal"}
    return {"clipping": found, "action": action}


def _repair(take: np.ndarray, clipping: dict[str, Any], sr: int) -> dict[str, Any]:
    """Repair ``take``'s clipped runs in place; the clean-up action that says so."""
    from ..render.declip import ARDeclipper

    stage = ARDeclipper(threshold=float(clipping["threshold"]))
    stage.process_into(take, sr)
    return {"action": "declip", "method": "ar", "found": str(clipping.get("method", "rail")),
            "threshold": float(clipping["threshold"]),
            "regions": int(clipping["regions"]), "fraction": float(clipping.get("fraction", 0.0)),
            "sr": int(sr), "at": "decoded take, its own rate, before resampling and bleed removal"}


def _with_audio(d: DecodedAudio, take: np.ndarray, take_sr: int) -> DecodedAudio:
    """``d`` with its samples replaced by the repaired mono ``take`` (at ``take_sr``), resampled to
    :data:`ENGINE_SR` and :data:`ANALYSIS_SR`.
    """
    import soxr

    audio = resample(take, orig_sr=take_sr, target_sr=ENGINE_SR) if take_sr != ENGINE_SR else take
    audio = np.ascontiguousarray(audio, dtype=np.float32)[None, :]
    # the analysis copy at the quality decode() makes it with (HQ)
    analysis = np.asarray(soxr.resample(take, take_sr, ANALYSIS_SR, quality="HQ"), dtype=np.float32)
    return DecodedAudio(audio=audio, sr=ENGINE_SR, n_samples=audio.shape[1], channels=1, file_sr=d.file_sr,
                        file_channels=d.file_channels, peak=float(np.max(np.abs(audio))) if audio.size else 0.0,
                        analysis=analysis, analysis_sr=ANALYSIS_SR)


def decode_backing(path: str | os.PathLike, npy_path: Path, *, analysis_buffer: Callable[[int], np.ndarray] | None = None,
                   ) -> tuple[DecodedAudio, dict[str, Any], list[str]]:
    """Decode a backing to stereo at the engine rate straight into ``npy_path``, plus a mono copy at
    :data:`ANALYSIS_SR` (into what ``analysis_buffer`` gives, if given); the full-rate backing is
    never held in memory.
    """
    warnings: list[str] = []
    info = probe(path)
    d = decode(path, sr=ENGINE_SR, channels=2, analysis_sr=ANALYSIS_SR, npy_path=npy_path, analysis_buffer=analysis_buffer)
    peak_db = 20 * np.log10(d.peak) if d.peak > 0 else -np.inf
    if peak_db < SILENCE_PEAK_DBFS:
        raise AudioContentError(f"{path}: the backing track is silent (peak {peak_db:.0f} dBFS); choose the right file")
    if d.file_channels > 2:
        warnings.append(f"backing has {d.file_channels} channels; they were folded down to stereo")
    return d, file_info(path, info, d.n_samples), warnings
