"""The engine: analyse a take against a backing once, render the mix as often as wanted.

``analyze`` does the expensive work (decode, resample, align, clean, analyse) and returns a
:class:`~melisma.plan.Plan`; ``render`` reads only the plan and its cached audio, applies the
style preset and sliders, and returns the mix with its report. ``mix_files``,
``analyze_files`` and ``render_plan`` are the file-level entry points the CLI and the device
service call.

Examples
--------
>>> from melisma import pipeline, examples  # doctest: +SKIP
>>> report = pipeline.mix_files(examples.TAKE, examples.BACKING, "mix.m4a", style="cpop")  # doctest: +SKIP
>>> round(report["loudness"]["integrated_lufs"])  # doctest: +SKIP
-14
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .audio_io import (
    AudioWriter,
    DecodedAudio,
    NpyBlockReader,
    atomic_path,
    check_writable,
    decode,
    encode_audio,
    file_sha256,
    load_audio,
    output_format,
    probe,
)
from .errors import AudioContentError, ConfigError, MelismaError, PlanError, RenderError
from .plan import Plan, new_record, to_json
from .progress import ProgressCallback, StageClock

#: Sample rate of everything inside the engine.
ENGINE_SR = 48000
#: A take quieter than this everywhere is treated as silent (dBFS, peak).
SILENCE_PEAK_DBFS = -60.0
#: Shortest take worth mixing, in seconds.
MIN_TAKE_S = 1.0
#: Reverb/compressor run-in before a preview window, in seconds (so the window sounds as in the full mix).
PREVIEW_PREROLL_S = 1.0
DEFAULT_TARGET_LUFS = -14.0
#: Rate of the mono copies made while decoding, for alignment and pitch/key analysis.
ANALYSIS_SR = 16000
#: True-peak ceiling of the master. Lossy encoders (AAC, MP3, Opus) add 0.2-0.5 dB of true peak
#: on real mixes (measured on the real-recording evaluation), so lossy outputs are limited lower
#: and checked again after encoding.
CEILING_DBTP = -1.0
LOSSY_CEILING_DBTP = -1.5
LOSSY_EXTENSIONS = (".m4a", ".mp3", ".ogg", ".opus")


def ceiling_for(out_path: str | os.PathLike | None) -> float:
    """The master's true-peak ceiling for an output file (lower for lossy formats)."""
    if out_path is not None and Path(out_path).suffix.lower() in LOSSY_EXTENSIONS:
        return LOSSY_CEILING_DBTP
    return CEILING_DBTP

ANALYSIS_WEIGHTS = {
    "decode": 10,
    "align": 8,
    "cleanup": 25,
    "analyse_voice": 6,
    "analyse_backing": 6,
    "analyse_pitch": 25,
    "cache": 5,
}
RENDER_WEIGHTS = {"correct_pitch": 25, "vocal_chain": 25, "balance": 10, "master": 30, "write": 10}


# ----------------------------------------------------------------------------------------------
# Inputs


def _peak_dbfs(y: np.ndarray) -> float:
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return 20 * np.log10(peak) if peak > 0 else -np.inf


def _input_info(path: str | os.PathLike, y: np.ndarray) -> dict[str, Any]:
    info = probe(path)
    return {
        "path": str(path),
        "sha256": file_sha256(path),
        "codec": info.codec,
        "sr": info.sr,
        "channels": info.channels,
        "duration_s": round(y.shape[-1] / ENGINE_SR, 3),
    }


def load_take(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    """Decode a take to mono at the engine rate; refuse silence and too-short takes."""
    warnings: list[str] = []
    info = probe(path)
    y, _ = load_audio(path, sr=ENGINE_SR, mono=True)
    if _peak_dbfs(y) < SILENCE_PEAK_DBFS:
        raise AudioContentError(
            f"{path}: the take is silent (peak {_peak_dbfs(y):.0f} dBFS); check the phone's microphone "
            "permission and record again"
        )
    if y.shape[0] < MIN_TAKE_S * ENGINE_SR:
        raise AudioContentError(
            f"{path}: the take is only {y.shape[0] / ENGINE_SR:.2f} s long; Melisma needs at least {MIN_TAKE_S:.0f} s of singing"
        )
    if info.sr < 16000:
        warnings.append(
            f"take is sampled at {info.sr} Hz: nothing above {info.sr // 2} Hz was recorded, the vocal will sound dull"
        )
    if info.channels > 1:
        warnings.append(f"take has {info.channels} channels; they were averaged to mono")
    return y, _input_info(path, y), warnings


def load_backing(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    """Decode a backing to stereo (2, n) at the engine rate."""
    warnings: list[str] = []
    y, _ = load_audio(path, sr=ENGINE_SR, mono=False)
    if _peak_dbfs(y) < SILENCE_PEAK_DBFS:
        raise AudioContentError(f"{path}: the backing track is silent (peak {_peak_dbfs(y):.0f} dBFS); choose the right file")
    channels = y.shape[0]
    if channels == 1:
        y = np.repeat(y, 2, axis=0)
    elif channels > 2:
        # Fold a multichannel file to stereo: odd-numbered channels left, even right.
        y = np.stack([y[0::2].mean(axis=0), y[1::2].mean(axis=0)]).astype(np.float32)
        warnings.append(f"backing has {channels} channels; they were folded down to stereo")
    return np.ascontiguousarray(y, dtype=np.float32), _input_info(path, y), warnings


def _release_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps them after big temporaries are
    freed, which would count in the process's memory during the next stage); no-op elsewhere.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        _MALLOC_TRIM = False
        with contextlib.suppress(Exception):
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


@contextlib.contextmanager
def _stage(clock: StageClock, name: str, *, release: bool = True) -> Iterator[None]:
    """A timed stage that starts with the previous stages' freed memory handed back (``release``:
    a preview's temporaries are small, and handing pages back costs a millisecond each time).
    """
    if release:
        _release_memory()
    with clock.stage(name):
        yield


def _decode_take(path: str | os.PathLike) -> tuple[DecodedAudio, dict[str, Any], list[str]]:
    """:func:`load_take` in one streaming pass, plus a mono copy at :data:`ANALYSIS_SR`."""
    warnings: list[str] = []
    info = probe(path)
    d = decode(path, sr=ENGINE_SR, channels=1, analysis_sr=ANALYSIS_SR)
    peak_db = 20 * np.log10(d.peak) if d.peak > 0 else -np.inf
    if peak_db < SILENCE_PEAK_DBFS:
        raise AudioContentError(
            f"{path}: the take is silent (peak {peak_db:.0f} dBFS); check the phone's microphone permission and record again"
        )
    if d.n_samples < MIN_TAKE_S * ENGINE_SR:
        raise AudioContentError(
            f"{path}: the take is only {d.n_samples / ENGINE_SR:.2f} s long; Melisma needs at least {MIN_TAKE_S:.0f} s of singing"
        )
    if info.sr < 16000:
        warnings.append(
            f"take is sampled at {info.sr} Hz: nothing above {info.sr // 2} Hz was recorded, the vocal will sound dull"
        )
    if info.channels > 1:
        warnings.append(f"take has {info.channels} channels; they were averaged to mono")
    return d, _file_info(path, info, d.n_samples), warnings


def _decode_backing(path: str | os.PathLike, npy_path: Path) -> tuple[DecodedAudio, dict[str, Any], list[str]]:
    """:func:`load_backing` straight into ``npy_path`` (stereo, engine rate), plus a mono copy at
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
    return d, _file_info(path, info, d.n_samples), warnings


def _file_info(path: str | os.PathLike, info, n_samples: int) -> dict[str, Any]:
    return {
        "path": str(path),
        "sha256": file_sha256(path),
        "codec": info.codec,
        "sr": info.sr,
        "channels": info.channels,
        "duration_s": round(n_samples / ENGINE_SR, 3),
    }


# ----------------------------------------------------------------------------------------------
# Analyse


def analyze(
    take_path: str | os.PathLike,
    backing_path: str | os.PathLike | None,
    *,
    latency_ms: float | None = None,
    style: str = "neutral",
    sliders: dict[str, float] | None = None,
    target_lufs: float = DEFAULT_TARGET_LUFS,
    pitch: bool = True,
    key: str | None = None,
    scale: str | None = None,
    melody_path: str | os.PathLike | None = None,
    pitch_tracker: str | None = None,
    correction: float | None = None,
    ornaments: str | dict | None = None,
    progress: ProgressCallback | None = None,
    _work_parent: str | os.PathLike | None = None,
) -> Plan:
    """Do the expensive work once and return the plan (its audio in private work files until saved).

    Without a backing the plan holds only the vocal (no alignment, no balance); pitch analysis
    then takes its key from ``melody_path``, ``key``/``scale`` or the sung notes.
    ``_work_parent`` (internal): where the plan's temporary work folder goes (default: the
    system's temporary folder; the file entry points put it beside their outputs).
    """
    from .analysis.align import apply_offset, estimate_offset
    from .analysis.cleanup import analyze_cleanup
    from .analysis.voice import analyze_backing, analyze_voice
    from .audio_io import resample
    from .intonation import analyze_pitch, correction_from_sliders, pitch_tracker_named, resolve_scale
    from .render.clean import clean_take
    from .semantic import resolve_settings

    settings = resolve_settings(style, sliders)  # fail on bad settings before any work
    _check_target_lufs(target_lufs)
    correction_from_sliders(settings.sliders, correction=correction, ornaments=ornaments)
    resolve_scale(key, scale)
    if melody_path is not None and not Path(melody_path).is_file():
        raise ConfigError(f"--melody {melody_path}: no such file; give a standard MIDI file (.mid) of the song's melody")
    if latency_ms is not None and not (np.isfinite(latency_ms) and -2000 <= latency_ms <= 2000):
        raise ConfigError(f"latency_ms={latency_ms} is out of range; give the calibrated latency in −2000…2000 ms")

    clock = StageClock(ANALYSIS_WEIGHTS, progress)
    record = new_record()
    record["melisma_version"] = __version__
    record["sr"] = ENGINE_SR
    warnings: list[str] = []
    # Work files (the backing decoded straight to disk, the cleaned vocal) live in a private
    # folder that the plan owns; Plan.save moves them into its cache folder.
    work = Path(tempfile.mkdtemp(prefix=".melisma-work-", dir=_work_parent))
    try:
        with _stage(clock, "decode"):
            take_d, take_info, w = _decode_take(take_path)
            warnings += w
            back_d = backing_info = None
            if backing_path is not None:
                back_d, backing_info, w = _decode_backing(backing_path, work / "backing.npy")
                warnings += w
        record["inputs"] = {"take": take_info, "backing": backing_info}

        backing16 = None
        backing_shape = None
        if back_d is None:
            from .analysis.align import Alignment

            alignment = Alignment(offset_ms=0.0, method="none", confidence=0.0, details={"reason": "no backing track given"})
            aligned = take_d.audio[0]
            del take_d
        else:
            with _stage(clock, "align"):
                # Alignment on the 16 kHz copies: same offset (to microseconds), a third of the work.
                alignment = estimate_offset(take_d.analysis, back_d.analysis, sr=ANALYSIS_SR, latency_ms=latency_ms)
                backing16 = back_d.analysis
                length = back_d.n_samples
                aligned = apply_offset(take_d.audio[0], offset_ms=alignment.offset_ms, sr=ENGINE_SR)
                del take_d
                sung_s = aligned.shape[0] / ENGINE_SR
                backing_s = length / ENGINE_SR
                if sung_s > backing_s + 2.0:
                    warnings.append(
                        f"take runs {sung_s - backing_s:.1f} s past the end of the backing; "
                        "the extra singing is kept over silence"
                    )
                    length = aligned.shape[0]
                elif sung_s < 0.5 * backing_s:
                    warnings.append(
                        f"take covers only {sung_s:.1f} s of the {backing_s:.1f} s backing; the rest of the mix is backing only"
                    )
                aligned = _fit_length(aligned, length)
                backing_shape = (2, length)  # a shorter backing file reads as padded with zeros
                if alignment.confidence < 0.3 and alignment.method != "calibrated":
                    warnings.append(
                        f"alignment is uncertain (method {alignment.method}, confidence {alignment.confidence:.2f}); "
                        "record with the phone speaker on, or calibrate the latency in the app"
                    )
        record["alignment"] = alignment.to_dict()

        with _stage(clock, "cleanup"):
            cleanup = analyze_cleanup(aligned, sr=ENGINE_SR)
            vocal, actions = clean_take(aligned, sr=ENGINE_SR, analysis=cleanup, in_place=True)  # aligned is ours
            del aligned
            warnings += list(cleanup.get("warnings", []))
        record["cleanup"] = {"analysis": cleanup, "actions": actions}

        with _stage(clock, "analyse_voice"):
            record["voice"] = analyze_voice(vocal, sr=ENGINE_SR)
        plan = Plan(record=record)
        vocal16 = None
        with _stage(clock, "cache"):
            if pitch:
                # The pitch tracker works at 16 kHz (it would resample the vocal itself) and the key
                # and tuning estimates look below 2 kHz: the 16 kHz copies carry all they need.
                vocal16 = resample(vocal, orig_sr=ENGINE_SR, target_sr=ANALYSIS_SR)
            # The full-rate vocal goes to its cache file now, out of memory before pitch analysis.
            vocal_file = work / "vocal.npy"
            np.save(vocal_file, np.ascontiguousarray(vocal, dtype=np.float32), allow_pickle=False)
            plan.adopt("vocal", vocal_file, vocal.shape)
            del vocal
            if back_d is not None:
                plan.adopt("backing", back_d.npy_path, backing_shape, file_shape=(2, back_d.n_samples))
        record["backing"] = None
        if back_d is not None:
            with _stage(clock, "analyse_backing"), plan.reader("backing") as reader:
                record["backing"] = analyze_backing(reader, sr=ENGINE_SR)
        if pitch:
            with _stage(clock, "analyse_pitch"):
                record["pitch"] = analyze_pitch(
                    vocal16,
                    sr=ANALYSIS_SR,
                    backing=backing16,
                    key=key,
                    scale=scale,
                    melody_path=melody_path,
                    tracker=pitch_tracker_named(pitch_tracker),
                )
        del vocal16, backing16

        record["settings"] = {
            "style": settings.style,
            "sliders": dict(settings.sliders),
            "target_lufs": float(target_lufs),
            "correction": correction,
            "ornaments": ornaments,
        }
        record["warnings"] = warnings
        plan.own_work_dir(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    record["timings_s"] = {"analysis": clock.timings_s}
    return plan


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    if y.shape[-1] >= n:
        return y[..., :n]
    pad = [(0, 0)] * (y.ndim - 1) + [(0, n - y.shape[-1])]
    return np.pad(y, pad)


def _check_target_lufs(target_lufs: float) -> None:
    if not (np.isfinite(target_lufs) and -30.0 <= target_lufs <= -6.0):
        raise ConfigError(
            f"target_lufs={target_lufs} is out of range; use −30…−6 LUFS (−14 suits phones and streaming, −16 for Apple Music)"
        )


# ----------------------------------------------------------------------------------------------
# Render


def render(
    plan: Plan,
    *,
    style: str | None = None,
    sliders: dict[str, float] | None = None,
    target_lufs: float | None = None,
    correction: float | None = None,
    ornaments: str | dict | None = None,
    start_s: float | None = None,
    duration_s: float | None = None,
    ceiling_dbtp: float = CEILING_DBTP,
    progress: ProgressCallback | None = None,
    mix_path: Path | None = None,
) -> tuple[np.ndarray | None, dict[str, np.ndarray] | None, dict[str, Any]]:
    """Render the mix from a plan.

    Returns ``(mix, stems, report)``: the mastered stereo mix at :data:`ENGINE_SR`, the vocal and
    backing as placed before the master bus, and the report (the plan's record plus what this
    render did). ``start_s``/``duration_s`` render a preview window only. A plan made without a
    backing renders the processed vocal alone.

    With ``mix_path`` the lean path is taken: the wet vocal becomes the mix in place
    (balance_into) and is mastered block by block straight into the file at ``mix_path``
    (master_stream); no stems are kept and ``(None, None, report)`` is returned.
    """
    from .intonation import correction_from_sliders
    from .render.chain import build_vocal_chain, render_vocal_chain
    from .render.master import balance, balance_into, master, master_stream
    from .semantic import MixSettings, resolve_settings

    base = plan.record.get("settings", {})
    merged_sliders = dict(base.get("sliders", {}))
    merged_sliders.update(sliders or {})
    settings: MixSettings = resolve_settings(style or base.get("style", "neutral"), merged_sliders)
    target = float(base.get("target_lufs", DEFAULT_TARGET_LUFS) if target_lufs is None else target_lufs)
    _check_target_lufs(target)
    # An explicit correction/policy (now or at analysis) wins over the tuning/ornaments sliders,
    # unless those sliders are being moved now.
    if correction is None and "tuning" not in (sliders or {}):
        correction = base.get("correction")
    if ornaments is None and "ornaments" not in (sliders or {}):
        ornaments = base.get("ornaments")
    tuning = correction_from_sliders(settings.sliders, correction=correction, ornaments=ornaments)

    clock = StageClock(RENDER_WEIGHTS, progress)
    cache = plan.record.get("cache", {})
    has_backing = "backing" in cache
    if "vocal" not in cache:
        raise PlanError("plan has no cached 'vocal'; run `melisma analyze` again")
    n_total = int(cache["vocal"]["shape"][0])
    window = _window(n_total, start_s, duration_s)
    lo, hi, cut = window["lo"], window["hi"], window["cut"]
    lean = mix_path is not None
    full = not window["preview"]
    # A full render streams the vocal from a file into the chain (the plan's cached vocal, or the
    # cached corrected one), so only the chain's stereo output is ever whole in memory.
    vocal: np.ndarray | None = None
    vocal_file: Path | None = None
    pitch_report = None
    if "pitch" in plan.record:
        with _stage(clock, "correct_pitch", release=full):
            vocal, pitch_report, vocal_file = _corrected(plan, lo=lo, hi=hi, full=full, settings=tuning, keep=cut)
            if full:
                _release_memory()
    elif full:
        with contextlib.suppress(PlanError):
            vocal_file = plan.cache_file("vocal")
    if vocal is None and vocal_file is None:
        vocal = plan.array("vocal", lo, hi)

    with _stage(clock, "vocal_chain", release=full):
        chain, explanation = build_vocal_chain(settings, plan.record.get("voice", {}), plan.record.get("backing"), sr=ENGINE_SR)
        if vocal is None:
            with NpyBlockReader(vocal_file) as source:
                if source.shape != (n_total,):
                    raise PlanError(
                        f"{vocal_file}: holds {source.shape} samples, the plan expects ({n_total},); run `melisma analyze` again"
                    )
                wet = render_vocal_chain(chain, source, sr=ENGINE_SR)
        else:
            wet = render_vocal_chain(chain, vocal, sr=ENGINE_SR)
        if wet.ndim == 1:
            wet = np.stack([wet, wet])
        del vocal
    if cut:
        wet = np.ascontiguousarray(wet[:, cut:])
    with _stage(clock, "balance", release=full):
        if lean:
            backing_source = None
            if has_backing:
                # A preview window is small: read it whole. A full render streams the cache file.
                backing_source = plan.array("backing", lo + cut, hi) if window["preview"] else plan.reader("backing")
            try:
                if backing_source is not None:
                    # A full render places the vocal against the whole backing, whose raw loudness the
                    # analysis already measured: reuse it instead of metering the backing again.
                    known_lufs = (plan.record.get("backing") or {}).get("loudness_lufs") if full else None
                    mix, balance_report = balance_into(
                        wet,
                        backing_source,
                        sr=ENGINE_SR,
                        vocal_to_backing_lu=settings.vocal_to_backing_lu,
                        duck_db=settings.duck_db,
                        out=wet,
                        backing_lufs=float(known_lufs) if known_lufs is not None else None,
                    )
                else:
                    mix, balance_report = wet, None
            finally:
                if backing_source is not None and not isinstance(backing_source, np.ndarray):
                    backing_source.close()
            del wet
        else:
            backing = plan.array("backing", lo + cut, hi) if has_backing else None
            if backing is not None:
                vocal_placed, backing_placed, balance_report = balance(
                    wet, backing, sr=ENGINE_SR, vocal_to_backing_lu=settings.vocal_to_backing_lu, duck_db=settings.duck_db
                )
            else:
                vocal_placed, backing_placed, balance_report = wet, np.zeros_like(wet), None
            del wet, backing
    with _stage(clock, "master", release=full):
        if lean:

            def write_master(gain: float = 1.0) -> dict[str, Any]:
                with AudioWriter(mix_path, sr=ENGINE_SR, channels=2) as writer:
                    return master_stream(
                        mix,
                        sr=ENGINE_SR,
                        writer=writer if gain == 1.0 else _ScaledWriter(writer, gain),
                        target_lufs=target,
                        ceiling_dbtp=ceiling_dbtp,
                    )

            master_report = write_master()
        else:
            mix = vocal_placed + backing_placed
            mix, master_report = master(mix, sr=ENGINE_SR, target_lufs=target, ceiling_dbtp=ceiling_dbtp)
            if not np.all(np.isfinite(mix)):
                raise RenderError(
                    "the rendered mix contains NaN/Inf samples; this is a bug — please report it with the plan file"
                )
    file_loudness: dict[str, float] = {}
    if lean:
        start = time.perf_counter()
        if mix_path.suffix.lower() in LOSSY_EXTENSIONS:
            # The codec may push the true peak up: measure the file itself (the pre-master mix is
            # still here, so a trimmed pass can be written again).
            file_loudness = _check_encoded_file(mix_path, rewrite=write_master)
        del mix
        mix = None
        clock.timings_s["write"] = round(time.perf_counter() - start, 4)

    report = _report_base(plan)
    report["settings"] = {
        "style": settings.style,
        "sliders": dict(settings.sliders),
        "target_lufs": target,
        "correction": tuning.correction,
        "ornaments": tuning.ornaments,
        "mix": settings.to_dict(),
    }
    report["chain"] = explanation
    report["balance"] = balance_report
    report["master"] = master_report
    report["loudness"] = {
        "integrated_lufs": master_report["integrated_lufs"],
        "true_peak_dbtp": master_report["true_peak_dbtp"],
        "target_lufs": target,
        "ceiling_dbtp": ceiling_dbtp,
        **file_loudness,
    }
    if pitch_report is not None:
        report["pitch"] = {**report.get("pitch", {}), **pitch_report}
    if not has_backing:
        report["warnings"].append("no backing track: this is the processed vocal alone")
    if window["preview"]:
        report["window"] = {"start_s": window["start_s"], "duration_s": window["duration_s"]}
        report["warnings"].append("preview window: loudness was matched on the window alone")
    report["timings_s"]["render"] = clock.timings_s
    if lean:
        return None, None, report
    stems = {"vocal": vocal_placed, "backing": backing_placed}
    return mix, stems, report


#: A preview corrects pitch only from this long before its window (the pre-roll before that only
#: primes the compressor and reverb, whose state hardly depends on a few cents of pitch).
PREVIEW_CORRECTION_MARGIN_S = 0.1


def _corrected(
    plan: Plan, *, lo: int, hi: int, full: bool, settings, keep: int = 0
) -> tuple[np.ndarray | None, dict[str, Any], Path | None]:
    """The pitch-corrected vocal for samples ``lo:hi`` and the correction report.

    A full render's result is cached as a file beside the plan (or in an unsaved plan's work
    folder) and returned as ``(None, report, file)``, to be streamed; otherwise (a preview, or no
    place to cache) as ``(array, report, None)``.
    """
    from .intonation import correct_vocal, correction_key, plan_correction

    pitch = plan.record["pitch"]
    folder = plan.scratch_dir() if full else None
    cache_file = folder / f"corrected-{correction_key(pitch, settings)}.npy" if folder is not None else None
    if cache_file is not None and cache_file.exists():
        try:
            with NpyBlockReader(cache_file) as reader:
                usable = reader.shape == (hi - lo,)
            if usable:
                _, report = plan_correction(pitch, settings)
                report["cached"] = True
                return None, report, cache_file
        except (MelismaError, OSError):
            pass  # a damaged cache entry is simply recomputed
    if not full:
        vocal = plan.array("vocal", lo, hi)
        first = max(0, keep - int(PREVIEW_CORRECTION_MARGIN_S * ENGINE_SR))
        vocal[first:], report = correct_vocal(vocal[first:], pitch, sr=ENGINE_SR, settings=settings, start_sample=lo + first)
        return vocal, report, None
    corrected, report = correct_vocal(plan.array("vocal", lo, hi), pitch, sr=ENGINE_SR, settings=settings, start_sample=lo)
    if cache_file is not None:
        try:
            with atomic_path(cache_file, overwrite=True) as tmp, open(tmp, "wb") as f:
                np.save(f, corrected, allow_pickle=False)
            return None, report, cache_file
        except (OSError, MelismaError):
            pass  # no cache: keep the corrected vocal in memory
    return corrected, report, None


def _window(n_total: int, start_s: float | None, duration_s: float | None) -> dict[str, Any]:
    if start_s is None and duration_s is None:
        return {"lo": 0, "hi": n_total, "cut": 0, "preview": False}
    start_s = 0.0 if start_s is None else float(start_s)
    total_s = n_total / ENGINE_SR
    if not np.isfinite(start_s) or start_s < 0 or start_s >= total_s:
        raise ConfigError(f"--start {start_s} is outside the take; use 0…{max(total_s - 0.1, 0):.1f} s")
    duration_s = total_s - start_s if duration_s is None else float(duration_s)
    if not np.isfinite(duration_s) or duration_s <= 0.5:
        raise ConfigError(f"--duration {duration_s} is too short; previews need at least 0.5 s (10 s is typical)")
    start = int(round(start_s * ENGINE_SR))
    stop = min(n_total, start + int(round(duration_s * ENGINE_SR)))
    lo = max(0, start - int(PREVIEW_PREROLL_S * ENGINE_SR))
    return {
        "lo": lo,
        "hi": stop,
        "cut": start - lo,
        "preview": True,
        "start_s": start_s,
        "duration_s": (stop - start) / ENGINE_SR,
    }


def _report_base(plan: Plan) -> dict[str, Any]:
    rec = plan.record
    return {
        "format": "melisma-report",
        "version": 1,
        "melisma_version": __version__,
        "platform": platform.machine(),
        "inputs": rec.get("inputs"),
        "alignment": rec.get("alignment"),
        "cleanup": rec.get("cleanup"),
        "voice": rec.get("voice"),
        "backing": rec.get("backing"),
        **({"pitch": rec["pitch"]} if "pitch" in rec else {}),
        "warnings": list(rec.get("warnings", [])),
        "timings_s": {"analysis": dict(rec.get("timings_s", {}).get("analysis", {}))},
    }


# ----------------------------------------------------------------------------------------------
# Writing outputs: everything is staged to temporary files and moved into place at the end


@contextlib.contextmanager
def _staged_outputs(paths: list[Path], *, overwrite: bool) -> Iterator[dict[Path, Path]]:
    with contextlib.ExitStack() as stack:
        yield {p: stack.enter_context(atomic_path(p, overwrite=overwrite)) for p in paths}


def _output_paths(
    out_path: str | os.PathLike | None,
    *,
    report_path: str | os.PathLike | None,
    stems_dir: str | os.PathLike | None,
    plot_path: str | os.PathLike | None,
    overwrite: bool,
) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    if out_path is not None:
        output_format(out_path)
        paths["mix"] = Path(out_path)
    if report_path is not None:
        paths["report"] = Path(report_path)
    if stems_dir is not None:
        stems = Path(stems_dir)
        if stems.exists() and not stems.is_dir():
            raise ConfigError(f"--stems {stems}: is a file; give a directory")
        paths["stem_vocal"] = stems / "vocal.wav"
        paths["stem_backing"] = stems / "backing.wav"
    if plot_path is not None:
        if Path(plot_path).suffix.lower() not in (".png", ".svg", ".pdf"):
            raise ConfigError(f"--plot {plot_path}: use a .png, .svg or .pdf file name")
        paths["plot"] = Path(plot_path)
    resolved = [p.resolve() for p in paths.values()]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("two outputs share one file name; give the mix, report, stems and plot different names")
    for key, p in paths.items():
        if key.startswith("stem_") and not p.parent.exists():
            continue  # the stems folder is created when writing
        check_writable(p, overwrite=overwrite)
    return paths


def write_outputs(
    paths: dict[str, Path],
    mix: np.ndarray,
    stems: dict[str, np.ndarray],
    report: dict[str, Any],
    *,
    overwrite: bool,
    vocal_dry: np.ndarray | None = None,
) -> None:
    """Write the mix, stems, plot and report; all or nothing as far as the file system allows."""
    if "stem_vocal" in paths:
        paths["stem_vocal"].parent.mkdir(parents=True, exist_ok=True)
    report["outputs"] = {k: str(v) for k, v in paths.items()}
    with _staged_outputs(list(paths.values()), overwrite=overwrite) as tmp:
        if "mix" in paths:
            encode_audio(tmp[paths["mix"]], mix, sr=ENGINE_SR)
            if paths["mix"].suffix.lower() in LOSSY_EXTENSIONS:
                _check_encoded_peak(tmp[paths["mix"]], mix, report)
        for name in ("vocal", "backing"):
            key = f"stem_{name}"
            if key in paths:
                encode_audio(tmp[paths[key]], stems[name], sr=ENGINE_SR, float_wav=True)
        if "plot" in paths:
            from .report_plot import plot_report

            plot_report(tmp[paths["plot"]], report, mix=mix, stems=stems, vocal_dry=vocal_dry, sr=ENGINE_SR)
        if "report" in paths:
            tmp[paths["report"]].write_text(to_json(report), encoding="utf-8")


def _check_encoded_peak(path: Path, mix: np.ndarray, report: dict[str, Any]) -> None:
    """Decode a lossy mix again, measure it, and trim and re-encode once if the codec pushed the
    true peak over −1 dBTP; the report then gives the file's own figures.
    """
    from .analysis.loudness import integrated_lufs, true_peak_dbtp

    decoded, sr = load_audio(path)
    tp = true_peak_dbtp(decoded, sr=sr)
    trim_db = 0.0
    if tp > CEILING_DBTP:
        trim_db = CEILING_DBTP - tp - 0.1
        encode_audio(path, mix * np.float32(10 ** (trim_db / 20)), sr=ENGINE_SR)
        decoded, sr = load_audio(path)
        tp = true_peak_dbtp(decoded, sr=sr)
    loud = report.setdefault("loudness", {})
    loud["file_true_peak_dbtp"] = round(float(tp), 3)
    loud["file_integrated_lufs"] = round(float(integrated_lufs(decoded, sr=sr)), 3)
    loud["file_trim_db"] = round(float(trim_db), 3)


class _ScaledWriter:
    """Passes blocks on to ``writer`` times ``gain`` (a trimmed re-encode of a mastered stream)."""

    def __init__(self, writer: AudioWriter, gain: float):
        self.writer, self.gain = writer, np.float32(gain)

    def write(self, block: np.ndarray) -> None:
        self.writer.write(block * self.gain)

    def restart(self) -> None:
        self.writer.restart()


def _measure_file(path: Path) -> tuple[float, float]:
    """(true peak dBTP, integrated LUFS) of an audio file, measured while it decodes (the decoded
    mix is never held whole).
    """
    from .analysis.loudness import KWeightedHops, TruePeakMeter
    from .audio_io import iter_decoded

    hops = meter = None
    for block, sr in iter_decoded(path):
        if hops is None:
            hops = KWeightedHops(sr, channels=block.shape[0])
            meter = TruePeakMeter(channels=block.shape[0])
        hops.add(block)
        meter.add(block)
    if hops is None:
        raise RenderError(f"{path}: the encoded mix holds no audio; this is a bug — please report it")
    return float(meter.dbtp), float(hops.integrated_lufs())


def _check_encoded_file(path: Path, *, rewrite) -> dict[str, float]:
    """:func:`_check_encoded_peak` for a mix mastered straight into ``path``: measure the file;
    if the codec pushed the true peak over −1 dBTP, ``rewrite(gain)`` writes it again trimmed.
    """
    tp, lufs = _measure_file(path)
    trim_db = 0.0
    if tp > CEILING_DBTP:
        trim_db = CEILING_DBTP - tp - 0.1
        rewrite(10 ** (trim_db / 20))
        tp, lufs = _measure_file(path)
    return {"file_true_peak_dbtp": round(tp, 3), "file_integrated_lufs": round(lufs, 3), "file_trim_db": round(float(trim_db), 3)}


# ----------------------------------------------------------------------------------------------
# File-level entry points (CLI, device service)


def analyze_files(
    take_path: str | os.PathLike,
    backing_path: str | os.PathLike | None,
    plan_path: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> Plan:
    """Analyse and save the plan (JSON + cache folder) to ``plan_path``.

    ``options`` are :func:`analyze`'s: latency_ms, style, sliders, target_lufs, pitch, key,
    scale, melody_path, correction, ornaments.
    """
    check_writable(plan_path, overwrite=overwrite)
    plan = analyze(take_path, backing_path, progress=progress, _work_parent=Path(plan_path).resolve().parent, **options)
    plan.save(plan_path, overwrite=overwrite)
    return plan


def render_plan(
    plan_path: str | os.PathLike | Plan,
    out_path: str | os.PathLike | None,
    *,
    style: str | None = None,
    sliders: dict[str, float] | None = None,
    target_lufs: float | None = None,
    correction: float | None = None,
    ornaments: str | dict | None = None,
    start_s: float | None = None,
    duration_s: float | None = None,
    report_path: str | os.PathLike | None = None,
    stems_dir: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Render a saved plan to files; returns the report."""
    paths = _output_paths(out_path, report_path=report_path, stems_dir=stems_dir, plot_path=plot_path, overwrite=overwrite)
    plan = plan_path if isinstance(plan_path, Plan) else Plan.load(plan_path)
    clock_start = time.perf_counter()
    report = _render_files(
        plan,
        paths,
        overwrite=overwrite,
        progress=progress,
        options=dict(
            style=style,
            sliders=sliders,
            target_lufs=target_lufs,
            correction=correction,
            ornaments=ornaments,
            start_s=start_s,
            duration_s=duration_s,
        ),
    )
    report["timings_s"]["render_total"] = round(time.perf_counter() - clock_start, 4)
    if progress:
        progress("done", 1.0)
    return report


def _render_files(
    plan: Plan, paths: dict[str, Path], *, overwrite: bool, progress: ProgressCallback | None, options: dict[str, Any]
) -> dict[str, Any]:
    """Render ``plan`` into the output files. Without stems or a plot (which need the placed
    signals and the mix as arrays) the mix is mastered block by block straight into its staged
    file; otherwise :func:`render` runs and :func:`write_outputs` writes the arrays.
    """
    ceiling = ceiling_for(paths.get("mix"))
    if "mix" in paths and "plot" not in paths and not any(k.startswith("stem_") for k in paths):
        report_key = paths.get("report")
        with _staged_outputs(list(paths.values()), overwrite=overwrite) as tmp:
            _, _, report = render(plan, ceiling_dbtp=ceiling, progress=progress, mix_path=tmp[paths["mix"]], **options)
            report["outputs"] = {k: str(v) for k, v in paths.items()}
            if report_key is not None:
                tmp[report_key].write_text(to_json(report), encoding="utf-8")
        return report
    mix, stems, report = render(plan, ceiling_dbtp=ceiling, progress=progress, **options)
    start = time.perf_counter()
    write_outputs(
        paths, mix, stems, report, overwrite=overwrite, vocal_dry=None if "plot" not in paths else np.asarray(plan.array("vocal"))
    )
    report["timings_s"]["render"]["write"] = round(time.perf_counter() - start, 4)
    return report


def mix_files(
    take_path: str | os.PathLike,
    backing_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    style: str = "neutral",
    sliders: dict[str, float] | None = None,
    latency_ms: float | None = None,
    target_lufs: float = DEFAULT_TARGET_LUFS,
    report_path: str | os.PathLike | None = None,
    stems_dir: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    **pitch_options: Any,
) -> dict[str, Any]:
    """One tap: analyse and render in one go; returns the report.

    ``pitch_options`` are :func:`analyze`'s pitch options: pitch (False skips correction), key,
    scale, melody_path, correction, ornaments.
    """
    paths = _output_paths(out_path, report_path=report_path, stems_dir=stems_dir, plot_path=plot_path, overwrite=overwrite)
    t0 = time.perf_counter()

    def scaled(lo: float, hi: float) -> ProgressCallback | None:
        if progress is None:
            return None
        return lambda stage, f: progress(stage, lo + (hi - lo) * f)

    plan = analyze(
        take_path,
        backing_path,
        latency_ms=latency_ms,
        style=style,
        sliders=sliders,
        target_lufs=target_lufs,
        progress=scaled(0.0, 0.6),
        _work_parent=Path(out_path).parent,
        **pitch_options,
    )
    report = _render_files(plan, paths, overwrite=overwrite, progress=scaled(0.6, 0.95), options={})
    report["timings_s"]["total"] = round(time.perf_counter() - t0, 4)
    if progress:
        progress("done", 1.0)
    return report


def correct_file(
    take_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    key: str | None = None,
    scale: str | None = None,
    melody_path: str | os.PathLike | None = None,
    pitch_tracker: str | None = None,
    correction: float | None = None,
    ornaments: str | dict | None = None,
    report_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Pitch-correct a take and write the corrected vocal alone (no clean-up, chain or master).

    Without ``key`` or ``melody_path`` the key is estimated from the vocal itself.
    """
    from .intonation import analyze_pitch, correct_vocal, correction_from_sliders, pitch_tracker_named

    paths = _output_paths(out_path, report_path=report_path, stems_dir=None, plot_path=plot_path, overwrite=overwrite)
    settings = correction_from_sliders({}, correction=correction, ornaments=ornaments)
    if melody_path is not None and not Path(melody_path).is_file():
        raise ConfigError(f"--melody {melody_path}: no such file; give a standard MIDI file (.mid) of the song's melody")
    clock = StageClock({"decode": 10, "analyse_pitch": 40, "correct_pitch": 40, "write": 10}, progress)
    with clock.stage("decode"):
        take, info, warnings = load_take(take_path)
    with clock.stage("analyse_pitch"):
        pitch = analyze_pitch(
            take, sr=ENGINE_SR, key=key, scale=scale, melody_path=melody_path, tracker=pitch_tracker_named(pitch_tracker)
        )
    with clock.stage("correct_pitch"):
        corrected, correction_report = correct_vocal(take, pitch, sr=ENGINE_SR, settings=settings)
    peak = float(np.max(np.abs(corrected)))
    if peak > 1.0:  # resynthesis can overshoot a take recorded right up to full scale
        corrected = corrected / np.float32(peak / 0.999)
        warnings.append(f"the corrected vocal peaked {20 * np.log10(peak):+.1f} dBFS and was scaled down to fit")
    report = {
        "format": "melisma-report",
        "version": 1,
        "melisma_version": __version__,
        "inputs": {"take": info},
        "pitch": {**pitch, **correction_report},
        "warnings": warnings,
    }
    start = time.perf_counter()
    with _staged_outputs(list(paths.values()), overwrite=overwrite) as tmp:
        encode_audio(tmp[paths["mix"]], corrected, sr=ENGINE_SR)
        if "plot" in paths:
            from .report_plot import plot_pitch_report

            plot_pitch_report(tmp[paths["plot"]], report)
        report["timings_s"] = {**clock.timings_s, "write": round(time.perf_counter() - start, 4)}
        if "report" in paths:
            tmp[paths["report"]].write_text(to_json(report), encoding="utf-8")
    if progress:
        progress("done", 1.0)
    return report


__all__ = [
    "ENGINE_SR",
    "MelismaError",
    "PlanError",
    "analyze",
    "analyze_files",
    "correct_file",
    "load_backing",
    "load_take",
    "mix_files",
    "render",
    "render_plan",
]
