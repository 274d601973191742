"""Analyze once: decode, align, clean and analyze a take (and its backing) into a plan."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..leftovers import work_prefix
from ..plan import Plan, new_record
from ..progress import ProgressCallback, StageClock
from .alignment import align_from_melody, alignment_decision, decide_alignment
from .clock import timed_stage
from .inputs import decode_backing, decode_take
from .options import ANALYSIS_SR, ANALYSIS_WEIGHTS, DEFAULT_TARGET_LUFS, ENGINE_SR, AnalysisOptions


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
    accept_alignment_guess: bool = False,
    progress: ProgressCallback | None = None,
    _work_parent: str | os.PathLike | None = None,
) -> Plan:
    """Do the expensive work once and return the plan (its audio in private work files until saved).

    Without a backing the plan holds only the vocal (no alignment, no balance); pitch analysis
    then takes its key from ``melody_path``, ``key``/``scale`` or the sung notes. The options
    are those of :class:`~melisma.pipeline.options.AnalysisOptions`, all checked before any work.
    When the take's offset behind the backing is unknown (no bleed of the backing in the take and
    no ``latency_ms``), the analysis stops with :class:`~melisma.errors.AlignmentError` saying why
    and what would work, unless ``accept_alignment_guess`` is true: then the best guess is used
    and the report's ``alignment.decision`` says so.
    ``_work_parent`` (internal): where the plan's temporary work folder goes (default: the
    system's temporary folder; the file entry points put it beside their outputs).
    """
    options = AnalysisOptions(latency_ms=latency_ms, style=style, sliders=sliders, target_lufs=target_lufs, pitch=pitch,
                              key=key, scale=scale, melody_path=melody_path, pitch_tracker=pitch_tracker,
                              correction=correction, ornaments=ornaments, accept_alignment_guess=accept_alignment_guess)
    settings = options.check()  # fail on bad settings before any work
    clock = StageClock(ANALYSIS_WEIGHTS, progress)
    record = new_record()
    record["melisma_version"] = __version__
    record["sr"] = ENGINE_SR
    warnings: list[str] = []
    # Work files (the backing decoded straight to disk, the cleaned vocal) live in a private
    # folder that the plan owns; Plan.save moves them into its cache folder.
    work = Path(tempfile.mkdtemp(prefix=work_prefix(), dir=_work_parent))
    try:
        with contextlib.ExitStack() as buffers:  # file-backed buffers of a long take, closed however it ends
            plan = _analyze_into(record, take_path, backing_path, options, clock=clock, work=work, warnings=warnings,
                                 buffers=buffers)
        record["settings"] = {
            "style": settings.style,
            "sliders": dict(settings.sliders),
            "target_lufs": float(options.target_lufs),
            "correction": options.correction,
            "ornaments": options.ornaments,
        }
        record["warnings"] = warnings
        plan.own_work_dir(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    record["timings_s"] = {"analysis": clock.timings_s}
    return plan


def _analyze_into(record: dict[str, Any], take_path, backing_path, options: AnalysisOptions, *, clock: StageClock,
                  work: Path, warnings: list[str], buffers: contextlib.ExitStack) -> Plan:
    """The analysis stages in order, filling ``record``; returns the plan that owns the work files."""
    from ..analysis.align import Alignment, apply_offset, estimate_offset
    from ..analysis.bleed_voicing import BLEED_METHODS, BleedGatedTracker
    from ..analysis.cleanup import analyze_cleanup
    from ..analysis.intonation import analyze_pitch, pitch_tracker_named
    from ..analysis.voice import analyze_backing, analyze_voice
    from ..audio_io import resample, resample_blocks
    from ..render.clean import clean_take
    from . import spill

    spilled_take: Any = None  # a long take's aligned samples live in a file-backed buffer (spill.py)
    with timed_stage(clock, "decode"):
        # clipping repaired at the file's own rate; a long take goes to a file instead
        # a long take's 16 kHz copies are written into file-backed buffers as they are decoded,
        # closed with the analysis (buffers)
        allocate = spill.spilled_allocator(work, buffers)
        # The take's 16 kHz copy is dead after the alignment: its buffers are closed then, so that
        # their release threads stop sweeping (each wakes every 2 ms for as long as it is open).
        take_buffers = buffers.enter_context(contextlib.ExitStack())
        take_d, take_info, w, clipping = decode_take(take_path, npy_path=work / "take.npy",
                                                     spill_bytes=spill.ANALYSIS_SPILL_BYTES,
                                                     analysis_buffer=spill.spilled_allocator(work, take_buffers))
        warnings += w
        back_d = backing_info = None
        if backing_path is not None:
            back_d, backing_info, w = decode_backing(backing_path, work / "backing.npy",
                                                     analysis_buffer=allocate if take_d.npy_path is not None else None)
            warnings += w
    record["inputs"] = {"take": take_info, "backing": backing_info}

    backing16 = None
    backing_shape: tuple[int, int] | None = None
    # decode() with analysis_sr gives both copies; the backing went straight to its .npy file
    take48, take16 = take_d.audio, take_d.analysis
    take_file = take_d.npy_path  # set when the take was too long to hold at 48 kHz
    assert (take48 is not None or take_file is not None) and take16 is not None
    del take_d
    if back_d is None:
        alignment = Alignment(offset_ms=0.0, method="none", confidence=0.0, details={"reason": "no backing track given"})
        if take48 is not None:
            aligned = take48[0]
        else:
            aligned, spilled_take = _shifted_from_file(take_file, offset_ms=0.0, backing_n=None, warnings=warnings,
                                                       folder=work)
            buffers.enter_context(spilled_take)
        del take48, take16
        take_buffers.close()
    else:
        with timed_stage(clock, "align"):
            assert back_d.analysis is not None
            # Alignment on the 16 kHz copies: same offset (to microseconds), a third of the work.
            # a long take's weighted copies (four take-length arrays at 16 kHz) go to files too
            with contextlib.ExitStack() as align_buffers:  # internal to the estimate: closed with it
                alignment = estimate_offset(take16, back_d.analysis, sr=ANALYSIS_SR, latency_ms=options.latency_ms,
                                            allocate=spill.spilled_allocator(work, align_buffers)
                                            if take_file is not None else None)
            alignment = align_from_melody(alignment, take16, sr=ANALYSIS_SR, melody_path=options.melody_path,
                                          tracker=pitch_tracker_named(options.pitch_tracker))
            alignment = decide_alignment(alignment, accept_guess=options.accept_alignment_guess, warnings=warnings)
            backing16 = back_d.analysis
            if take48 is not None:
                aligned = apply_offset(take48[0], offset_ms=alignment.offset_ms, sr=ENGINE_SR)
                del take48, take16  # out of memory before the clean-up
                aligned, length = _fit_to_backing(aligned, back_d.n_samples, warnings)
            else:
                del take48, take16
                take_buffers.close()
                aligned, spilled_take = _shifted_from_file(take_file, offset_ms=alignment.offset_ms,
                                                           backing_n=back_d.n_samples, warnings=warnings, folder=work)
                buffers.enter_context(spilled_take)
                length = aligned.shape[0]
            backing_shape = (2, length)  # a shorter backing file reads as padded with zeros
            if alignment.known and alignment.confidence < 0.3 and alignment.method != "calibrated":
                warnings.append(
                    f"alignment is uncertain (method {alignment.method}, confidence {alignment.confidence:.2f}); "
                    "record with the phone speaker on, or calibrate the latency in the app"
                )
    record["alignment"] = {**alignment.to_dict(), "decision": alignment_decision(alignment, backing=back_d is not None)}

    with timed_stage(clock, "cleanup"):
        bleed_action = None
        if back_d is not None:
            aligned, bleed_action = _remove_bleed(aligned, back_d.npy_path)
        cleanup = analyze_cleanup(aligned, sr=ENGINE_SR)
        vocal, actions = clean_take(aligned, sr=ENGINE_SR, analysis=cleanup, in_place=True)  # aligned is ours
        if bleed_action is not None:
            actions.insert(0, bleed_action)
        if clipping["action"] is not None:  # repaired first, at the decoder's rate (pipeline/inputs.py)
            actions.insert(0, clipping["action"])
            cleanup["clipping_at_file_rate"] = clipping["clipping"]
        del aligned
        warnings += list(cleanup.get("warnings", []))
    record["cleanup"] = {"analysis": cleanup, "actions": actions}

    with timed_stage(clock, "analyze_voice"):
        # a long take's vocal is read from its file-backed buffer block by block, never mapped in whole
        spilled_vocal = spilled_take is not None and vocal.ndim == 1 and np.shares_memory(vocal, spilled_take.array)
        record["voice"] = analyze_voice(spilled_take.reader() if spilled_vocal else vocal, sr=ENGINE_SR)
    plan = Plan(record=record)
    vocal16 = None
    with timed_stage(clock, "cache"):
        if options.pitch:
            # The pitch tracker works at 16 kHz (it would resample the vocal itself) and the key
            # and tuning estimates look below 2 kHz: the 16 kHz copies carry all they need.
            # (a long take's straight into a file-backed buffer, block by block: the same samples)
            vocal16 = (resample_blocks(vocal, orig_sr=ENGINE_SR, target_sr=ANALYSIS_SR, allocate=allocate)
                       if spilled_vocal else resample(vocal, orig_sr=ENGINE_SR, target_sr=ANALYSIS_SR))
        # The full-rate vocal goes to its cache file now, out of memory before pitch analysis.
        vocal_file = work / "vocal.npy"
        np.save(vocal_file, np.ascontiguousarray(vocal, dtype=np.float32), allow_pickle=False)
        plan.adopt("vocal", vocal_file, vocal.shape)
        del vocal
        if spilled_take is not None:
            spilled_take.close()
        if take_file is not None:
            take_file.unlink(missing_ok=True)
        if back_d is not None:
            assert back_d.npy_path is not None and backing_shape is not None
            plan.adopt("backing", back_d.npy_path, backing_shape, file_shape=(2, back_d.n_samples))
    record["backing"] = None
    if back_d is not None:
        with timed_stage(clock, "analyze_backing"), plan.reader("backing") as reader:
            record["backing"] = analyze_backing(reader, sr=ENGINE_SR)
    if options.pitch:
        with timed_stage(clock, "analyze_pitch"):
            assert vocal16 is not None
            tracker = pitch_tracker_named(options.pitch_tracker)
            gated = None
            if backing16 is not None:
                # Bleed is not singing: the f0 frames whose pitch is the backing's own bleed are unvoiced.
                bleed_present = alignment.method in BLEED_METHODS or bool(bleed_action and bleed_action.get("detected"))
                tracker = gated = BleedGatedTracker(tracker, backing16, bleed_present=bleed_present)
            record["pitch"] = analyze_pitch(
                vocal16,
                sr=ANALYSIS_SR,
                backing=backing16,
                key=options.key,
                scale=options.scale,
                melody_path=options.melody_path,
                tracker=tracker,
            )
            if gated is not None and gated.info["applied"]:  # a headphone take's report stays as it was
                record["pitch"]["bleed_gate"] = gated.info
    return plan


def _remove_bleed(aligned: np.ndarray, backing_npy) -> tuple[np.ndarray, dict[str, Any]]:
    """The backing's bleed taken out of the aligned take, the backing read from its .npy in blocks."""
    from ..audio_io import NpyBlockReader
    from ..render.clean import remove_bleed

    aligned = np.ascontiguousarray(aligned, dtype=np.float32)
    with NpyBlockReader(backing_npy) as reader:
        return remove_bleed(aligned, reader, sr=ENGINE_SR, in_place=True)


def _shifted_from_file(npy_path: Any, *, offset_ms: float, backing_n: int | None, warnings: list[str],
                       folder: Path) -> tuple[np.ndarray, Any]:
    """:func:`~melisma.analysis.align.apply_offset` and :func:`_fit_to_backing` of a take kept in a
    ``.npy`` file, block by block into a file-backed buffer (:class:`~melisma.pipeline.spill.SpilledArray`):
    the same samples, without the take in memory. Returns the aligned take and the buffer to close.
    """
    from ..audio_io import NpyBlockReader
    from .spill import ANALYSIS_RELEASE_INTERVAL_S, SpilledArray

    shift = int(round(offset_ms * ENGINE_SR / 1000.0))  # as apply_offset rounds it
    with NpyBlockReader(npy_path) as reader:
        shifted_n = max(0, reader.n_samples - shift)
        length = shifted_n if backing_n is None else _target_length(shifted_n, backing_n, warnings)
        buffer = SpilledArray((length,), folder=folder, release_interval_s=ANALYSIS_RELEASE_INTERVAL_S)
        out = buffer.array
        block = 1 << 18
        for a in range(0, length, block):
            b = min(a + block, length)
            lo = max(a + shift, 0)  # before the take's first sample: zeros (an early take)
            out[a : min(b, lo - shift)] = 0.0
            if b + shift > lo:
                reader.read(lo, b + shift, out=out[lo - shift : b])
    return out, buffer


def _target_length(sung_n: int, backing_n: int, warnings: list[str]) -> int:
    """The aligned take's length: the backing's, or the take's own when it runs well past it."""
    length = backing_n
    sung_s = sung_n / ENGINE_SR
    backing_s = length / ENGINE_SR
    if sung_s > backing_s + 2.0:
        warnings.append(
            f"take runs {sung_s - backing_s:.1f} s past the end of the backing; the extra singing is kept over silence"
        )
        length = sung_n
    elif sung_s < 0.5 * backing_s:
        warnings.append(
            f"take covers only {sung_s:.1f} s of the {backing_s:.1f} s backing; the rest of the mix is backing only"
        )
    return length


def _fit_to_backing(aligned: np.ndarray, backing_n: int, warnings: list[str]) -> tuple[np.ndarray, int]:
    """The aligned take cut or padded to the backing's length (or kept longer when it runs well past it)."""
    length = _target_length(aligned.shape[0], backing_n, warnings)
    return _fit_length(aligned, length), length


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    if y.shape[-1] >= n:
        return y[..., :n]
    pad = [(0, 0)] * (y.ndim - 1) + [(0, n - y.shape[-1])]
    return np.pad(y, pad)
