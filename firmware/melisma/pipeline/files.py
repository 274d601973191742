"""The file-level entry points the CLI and the device service call: files in, files out, a report back."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..audio_io import check_writable, encode_audio, probe
from ..errors import AudioIOError, ConfigError, MelismaError, PlanError
from ..plan import Plan, to_json
from ..progress import ProgressCallback, StageClock
from ..report_headline import finish_report
from .analyze import analyze
from .inputs import load_take
from .options import DEFAULT_TARGET_LUFS, ENGINE_SR, ceiling_for
from .outputs import output_paths, refuse_inputs_as_outputs, staged_outputs, write_outputs
from .render import prime_render, render

#: What a plan edited by hand (or damaged) makes the renderer trip over, reported as a PlanError.
_DAMAGED_PLAN_ERRORS = (KeyError, TypeError, AttributeError, ValueError, IndexError, RecursionError)


def _load_plan(path: str | os.PathLike) -> Plan:
    """:meth:`Plan.load` with one-line errors for a folder, an unreadable file or JSON nested too deep."""
    p = Path(path)
    if p.is_dir():
        raise PlanError(f"{p}: is a directory, not a plan file; give the PLAN.json that `melisma analyze` wrote")
    if p.exists() and not os.access(p, os.R_OK):
        raise PlanError(f"{p}: permission denied; this user may not read the plan (check its owner and mode)")
    try:
        return Plan.load(p)
    except RecursionError:
        raise PlanError(f"{p}: is not a Melisma plan (its JSON is nested too deep)") from None
    except OSError as exc:
        raise PlanError(f"{p}: the plan cannot be read ({exc.strerror}); run `melisma analyze` again") from None


def _damaged_plan(path: Any, exc: BaseException) -> PlanError:
    what = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
    return PlanError(f"{path}: the plan is damaged or was edited by hand ({what[:120]}); run `melisma analyze` again")


def _input_warnings(take_path: Any, backing_path: Any) -> list[str]:
    """Warnings for a take and backing that are one file, or that look the wrong way round."""
    if backing_path is None:
        return []
    try:
        if os.path.samefile(take_path, backing_path):
            return [f"take and backing are the same file ({take_path}); give the backing track as the second file"]
        take, backing = probe(take_path), probe(backing_path)
    except (OSError, MelismaError):
        return []
    if take.channels >= 2 and backing.channels == 1:
        return ["take and backing look swapped (the take is stereo, the backing mono); the singer's take comes first, "
                "then the backing track"]
    return []


def _check_cache_folder(plan_path: Any) -> None:
    """A plan keeps its audio in ``<plan>.cache``; a file of that name is refused before any analysis."""
    cache = Path(plan_path).with_name(Path(plan_path).name + ".cache")
    if (cache.exists() or cache.is_symlink()) and not cache.is_dir():
        raise AudioIOError(f"{cache}: is a file, but the plan keeps its cached audio in a folder of that name; "
                           f"move the file away or choose another -o")


def analyze_files(
    take_path: str | os.PathLike,
    backing_path: str | os.PathLike | None,
    plan_path: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> Plan:
    """Analyze and save the plan (JSON + cache folder) to ``plan_path``.

    ``options`` are :func:`analyze`'s: latency_ms, style, sliders, target_lufs, pitch, key,
    scale, melody_path, correction, ornaments.
    """
    check_writable(plan_path, overwrite=overwrite)
    refuse_inputs_as_outputs([Path(plan_path)], [take_path, backing_path, options.get("melody_path")])
    _check_cache_folder(plan_path)
    plan = analyze(take_path, backing_path, progress=progress, _work_parent=Path(plan_path).resolve().parent, **options)
    plan.record.setdefault("warnings", []).extend(_input_warnings(take_path, backing_path))
    plan.save(plan_path, overwrite=overwrite)
    prime_render(plan)  # filter designs kept beside the plan: a fresh-process re-render skips scipy.signal
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
    report_frames: bool = False,
) -> dict[str, Any]:
    """Render a saved plan to files; returns the report (headline first; the per-frame pitch
    curves only with ``report_frames``: they are in the plan).
    """
    paths = output_paths(out_path, report_path=report_path, stems_dir=stems_dir, plot_path=plot_path, overwrite=overwrite)
    plan = plan_path if isinstance(plan_path, Plan) else _load_plan(plan_path)
    if plan.path is not None:
        refuse_inputs_as_outputs(list(paths.values()), [plan.path])
    clock_start = time.perf_counter()
    report = _guarded_render(
        plan,
        paths,
        overwrite=overwrite,
        progress=progress,
        from_file=not isinstance(plan_path, Plan),
        report_frames=report_frames,
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


def render_preview(
    plan_path: str | os.PathLike | Plan,
    out_path: str | os.PathLike,
    *,
    start_s: float,
    duration_s: float,
    style: str | None = None,
    sliders: dict[str, float] | None = None,
    bit_rate: int | None = None,
    codec_options: dict[str, str] | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """A preview window of a saved plan, mastered straight into a (low-rate, lossy) file.

    The window is mastered as a lossless render of it would be (the lossless true-peak ceiling)
    and goes block by block into the encoder with ``bit_rate`` and ``codec_options``, with no
    intermediate WAV and no measuring of the encoded file afterwards: a preview's level is the
    window's own (its report says so) and it only has to sound like the render. This is the box's
    preview path (what the app hears after a slider move). Returns the report.
    """
    paths = output_paths(out_path, report_path=None, stems_dir=None, plot_path=None, overwrite=overwrite)
    plan = plan_path if isinstance(plan_path, Plan) else _load_plan(plan_path)
    if plan.path is not None:
        refuse_inputs_as_outputs(list(paths.values()), [plan.path])
    clock_start = time.perf_counter()
    writer_options: dict[str, Any] = {"bit_rate": bit_rate, "codec_options": codec_options}
    try:
        with staged_outputs([paths["mix"]], overwrite=overwrite) as tmp:
            _, _, report = render(plan, style=style, sliders=sliders, start_s=start_s, duration_s=duration_s,
                                  ceiling_dbtp=ceiling_for(None), progress=progress, mix_path=tmp[paths["mix"]],
                                  writer_options=writer_options, check_file=False)
    except _DAMAGED_PLAN_ERRORS as exc:
        if isinstance(exc, MelismaError) or isinstance(plan_path, Plan):
            raise
        raise _damaged_plan(plan.path, exc) from None
    report["outputs"] = {"mix": str(paths["mix"])}
    finish_report(report)
    report["timings_s"]["render_total"] = round(time.perf_counter() - clock_start, 4)
    if progress:
        progress("done", 1.0)
    return report


def _guarded_render(
    plan: Plan,
    paths: dict[str, Path],
    *,
    overwrite: bool,
    progress: ProgressCallback | None,
    from_file: bool,
    options: dict[str, Any],
    report_frames: bool = False,
) -> dict[str, Any]:
    """:func:`_render_files`, with what a damaged plan file trips over reported as a PlanError."""
    try:
        return _render_files(plan, paths, overwrite=overwrite, progress=progress, options=options, report_frames=report_frames)
    except _DAMAGED_PLAN_ERRORS as exc:
        if isinstance(exc, MelismaError) or not from_file:
            raise
        raise _damaged_plan(plan.path, exc) from None


def _render_files(
    plan: Plan,
    paths: dict[str, Path],
    *,
    overwrite: bool,
    progress: ProgressCallback | None,
    options: dict[str, Any],
    report_frames: bool = False,
) -> dict[str, Any]:
    """Render ``plan`` into the output files. Without stems or a plot (which need the placed
    signals and the mix as arrays) the mix is mastered block by block straight into its staged
    file; otherwise :func:`render` runs and :func:`write_outputs` writes the arrays.
    """
    ceiling = ceiling_for(paths.get("mix"))
    if "mix" in paths and "plot" not in paths and not any(k.startswith("stem_") for k in paths):
        report_key = paths.get("report")
        with staged_outputs(list(paths.values()), overwrite=overwrite) as tmp:
            _, _, report = render(plan, ceiling_dbtp=ceiling, progress=progress, mix_path=tmp[paths["mix"]], **options)
            report["outputs"] = {k: str(v) for k, v in paths.items()}
            finish_report(report, frames=report_frames)
            if report_key is not None:
                tmp[report_key].write_text(to_json(report), encoding="utf-8")
        return report
    mix, stems, report = render(plan, ceiling_dbtp=ceiling, progress=progress, **options)
    assert mix is not None and stems is not None  # the in-memory path returns both
    start = time.perf_counter()
    vocal_dry = None if "plot" not in paths else np.asarray(plan.array("vocal"))
    write_outputs(paths, mix, stems, report, overwrite=overwrite, vocal_dry=vocal_dry, report_frames=report_frames)
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
    report_frames: bool = False,
    **pitch_options: Any,
) -> dict[str, Any]:
    """One tap: analyze and render in one go; returns the report.

    ``pitch_options`` are :func:`analyze`'s pitch options: pitch (False skips correction), key,
    scale, melody_path, correction, ornaments.
    """
    paths = output_paths(out_path, report_path=report_path, stems_dir=stems_dir, plot_path=plot_path, overwrite=overwrite)
    refuse_inputs_as_outputs(list(paths.values()), [take_path, backing_path, pitch_options.get("melody_path")])
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
    try:
        plan.record.setdefault("warnings", []).extend(_input_warnings(take_path, backing_path))
        report = _render_files(plan, paths, overwrite=overwrite, progress=scaled(0.6, 0.95), options={},
                               report_frames=report_frames)
    finally:  # the plan is never saved: its work folder goes now, also when the render failed (a full disk)
        plan.release_work_dir()
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
    report_frames: bool = False,
) -> dict[str, Any]:
    """Pitch-correct a take and write the corrected vocal alone (no clean-up, chain or master).

    Without ``key`` or ``melody_path`` the key is estimated from the vocal itself.
    """
    from ..analysis.intonation import analyze_pitch, pitch_tracker_named
    from ..render.pitch import correct_vocal, correction_from_sliders

    paths = output_paths(out_path, report_path=report_path, stems_dir=None, plot_path=plot_path, overwrite=overwrite)
    refuse_inputs_as_outputs(list(paths.values()), [take_path, melody_path])
    settings = correction_from_sliders({}, correction=correction, ornaments=ornaments)
    if melody_path is not None and not Path(melody_path).is_file():
        raise ConfigError(f"--melody {melody_path}: no such file; give a standard MIDI file (.mid) of the song's melody")
    clock = StageClock({"decode": 10, "analyze_pitch": 40, "correct_pitch": 40, "write": 10}, progress)
    with clock.stage("decode"):
        take, info, warnings = load_take(take_path)
    with clock.stage("analyze_pitch"):
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
    with staged_outputs(list(paths.values()), overwrite=overwrite) as tmp:
        encode_audio(tmp[paths["mix"]], corrected, sr=ENGINE_SR)
        if "plot" in paths:
            from ..report_plot import plot_pitch_report

            plot_pitch_report(tmp[paths["plot"]], report)
        report["timings_s"] = {**clock.timings_s, "write": round(time.perf_counter() - start, 4)}
        finish_report(report, frames=report_frames)
        if "report" in paths:
            tmp[paths["report"]].write_text(to_json(report), encoding="utf-8")
    if progress:
        progress("done", 1.0)
    return report
