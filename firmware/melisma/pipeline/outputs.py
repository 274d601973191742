"""Writing outputs: every file is staged under a temporary name and moved into place at the end,
and a lossy mix is measured again after encoding (its own loudness and true peak are what count).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..audio_io import atomic_path, check_output_location, check_writable, encode_audio, output_format
from ..errors import AudioIOError, ConfigError, RenderError
from ..plan import to_json
from ..report_headline import finish_report
from .options import CEILING_DBTP, ENGINE_SR, LOSSY_EXTENSIONS


@contextlib.contextmanager
def staged_outputs(paths: list[Path], *, overwrite: bool) -> Iterator[dict[Path, Path]]:
    """Temporary paths for ``paths``, moved into place together when the block succeeds."""
    with contextlib.ExitStack() as stack:
        yield {p: stack.enter_context(atomic_path(p, overwrite=overwrite)) for p in paths}


def output_paths(
    out_path: Any,
    *,
    report_path: Any,
    stems_dir: Any,
    plot_path: Any,
    overwrite: bool,
) -> dict[str, Path]:
    """The output files by role (mix, report, stem_vocal, stem_backing, plot), all checked writable first."""
    paths: dict[str, Path] = {}
    if out_path is not None:
        check_output_location(Path(out_path))
        if Path(out_path).is_dir():
            raise AudioIOError(f"{out_path}: is a directory; give a file name such as {Path(out_path) / 'mix.m4a'}")
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
    for p in paths.values():
        check_output_location(p)
    resolved = [p.resolve() for p in paths.values()]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("two outputs share one file name; give the mix, report, stems and plot different names")
    for key, p in paths.items():
        if key.startswith("stem_") and not p.parent.exists():
            continue  # the stems folder is created when writing
        check_writable(p, overwrite=overwrite)
    return paths


def _check_lossy_mix(path: Path, mix: np.ndarray, stems: dict[str, np.ndarray], report: dict[str, Any]) -> np.ndarray:
    """:func:`check_encoded_file` for a mix mastered in memory: the stems are what the master bus
    got, so a remaster starts from their sum. Returns the mix as finally written.
    """
    from ..render.master import master

    loud = report.get("loudness") or {}
    target = float(loud.get("target_lufs", (report.get("settings") or {}).get("target_lufs", -14.0)))
    written = [mix]

    def remaster(aim: float, ceiling: float) -> dict[str, Any]:
        mastered, master_report = master(stems["vocal"] + stems["backing"], sr=ENGINE_SR, target_lufs=aim, ceiling_dbtp=ceiling)
        encode_audio(path, mastered, sr=ENGINE_SR)
        written[0] = mastered
        return master_report

    check = check_encoded_file(path, target_lufs=target, master_report=report["master"], remaster=remaster)
    apply_file_check(report, check, target_lufs=target)
    return written[0]


def apply_file_check(report: dict[str, Any], check: dict[str, Any], *, target_lufs: float) -> None:
    """Put a lossy file's check into the report: its ``loudness`` and, after a remaster, its ``master``."""
    if check["master"] is not None:
        report["master"] = check["master"]
    report["loudness"] = loudness_section(report["master"], target_lufs=target_lufs,
                                          ceiling_dbtp=report["loudness"]["ceiling_dbtp"], file_check=check)
    if check["warning"]:
        report.setdefault("warnings", []).append(check["warning"])


def write_outputs(
    paths: dict[str, Path],
    mix: np.ndarray,
    stems: dict[str, np.ndarray],
    report: dict[str, Any],
    *,
    overwrite: bool,
    vocal_dry: np.ndarray | None = None,
    report_frames: bool = False,
) -> None:
    """Write the mix, stems, plot and report; all or nothing as far as the file system allows.

    The report gets its headline and loses its per-frame arrays (unless ``report_frames``) after
    the plot has drawn them.
    """
    if "stem_vocal" in paths:
        paths["stem_vocal"].parent.mkdir(parents=True, exist_ok=True)
    report["outputs"] = {k: str(v) for k, v in paths.items()}
    with staged_outputs(list(paths.values()), overwrite=overwrite) as tmp:
        if "mix" in paths:
            mix_tmp = tmp[paths["mix"]]
            encode_audio(mix_tmp, mix, sr=ENGINE_SR)
            if paths["mix"].suffix.lower() in LOSSY_EXTENSIONS:
                mix = _check_lossy_mix(mix_tmp, mix, stems, report)
        for name in ("vocal", "backing"):
            key = f"stem_{name}"
            if key in paths:
                encode_audio(tmp[paths[key]], stems[name], sr=ENGINE_SR, float_wav=True)
        if "plot" in paths:
            from ..report_plot import plot_report

            plot_report(tmp[paths["plot"]], report, mix=mix, stems=stems, vocal_dry=vocal_dry, sr=ENGINE_SR)
        finish_report(report, frames=report_frames)
        if "report" in paths:
            tmp[paths["report"]].write_text(to_json(report), encoding="utf-8")


#: How far a lossy file's own loudness may land from the target before it is mastered and encoded
#: again (the master's own tolerance when streaming; the promise is ±0.5 LU).
FILE_TOLERANCE_LU = 0.3
#: Most extra master-and-encode passes spent on one lossy file.
MAX_REENCODES = 4
#: How much quieter a mix is made at a time when the limiter cannot make room for a codec's peaks.
QUIETER_STEP_LU = 0.5
#: The limiter's ceiling is never pushed below this to make room for a codec's overshoot, dBTP.
LOWEST_MASTER_CEILING_DBTP = -6.0


def refuse_inputs_as_outputs(outputs: list[Path], inputs: list[Any]) -> None:
    """An output that is one of the inputs is refused, even with ``--force`` (it would destroy the take)."""
    for out in outputs:
        for inp in inputs:
            if inp is None:
                continue
            try:
                same = os.path.samefile(out, inp) if out.exists() else out.resolve() == Path(inp).resolve()
            except (OSError, RuntimeError):
                same = False
            if same:
                raise ConfigError(f"{out}: is the input {inp}; writing there would destroy it (even with --force): "
                                  f"choose another output name")


def measure_file(path: Path) -> tuple[float, float]:
    """(true peak dBTP, integrated LUFS) of an audio file, measured while it decodes (the decoded
    mix is never held whole).
    """
    from ..analysis.loudness import KWeightedHops, TruePeakMeter
    from ..audio_io import iter_decoded

    hops: KWeightedHops | None = None
    meter: TruePeakMeter | None = None
    for block, sr in iter_decoded(path):
        if hops is None or meter is None:
            hops = KWeightedHops(sr, channels=block.shape[0])
            meter = TruePeakMeter(channels=block.shape[0])
        hops.add(block)
        meter.add(block)
    if hops is None or meter is None:
        raise RenderError(f"{path}: the encoded mix holds no audio; this is a bug — please report it")
    return float(meter.dbtp), float(hops.integrated_lufs())


def check_encoded_file(
    path: Path,
    *,
    target_lufs: float,
    master_report: dict[str, Any],
    remaster: Callable[[float, float], dict[str, Any]],
) -> dict[str, Any]:
    """The one check of an encoded (lossy) mix, used by both ways of writing one.

    The file is measured. If the codec pushed its true peak over :data:`CEILING_DBTP`, or its
    loudness landed more than :data:`FILE_TOLERANCE_LU` from ``target_lufs``, the level is fixed
    where it is made: ``remaster(aim, ceiling)`` masters the mix again, with the limiter's ceiling
    lowered by the codec's overshoot and the loudness aim moved by what the codec did to the
    loudness, and encodes it again; the file is measured again, at most :data:`MAX_REENCODES`
    times. So the file lands on the target with its peaks under the ceiling, instead of being
    turned down below the target. Only where the limiter cannot make that room (it would squash
    more than the master allows) is the mix made quieter, with a warning.

    Parameters
    ----------
    path : Path
        The encoded file.
    target_lufs : float
        The loudness the file should have.
    master_report : dict
        The report of the master that made the file (``ceiling_dbtp``, ``integrated_lufs``).
    remaster : callable
        ``remaster(aim_lufs, ceiling_dbtp)`` masters and writes the file again and returns the
        master's report; it raises :class:`~melisma.errors.RenderError` when the ceiling would
        need too much limiting at that loudness.

    Returns
    -------
    dict
        ``file_integrated_lufs``, ``file_true_peak_dbtp`` (the file's own figures),
        ``reencodes`` (how many extra passes), ``master_target_lufs`` and
        ``master_ceiling_dbtp`` (what the last master aimed at), ``master`` (the last
        remaster's report, or ``None``) and ``warning`` (``None`` unless the mix had to be made
        quieter or still misses).
    """
    tp, lufs = measure_file(path)
    report = master_report
    aim, ceiling = float(target_lufs), float(master_report["ceiling_dbtp"])
    result: dict[str, Any] = {"reencodes": 0, "master": None, "warning": None}
    quieter = False
    while result["reencodes"] < MAX_REENCODES:
        over = tp - CEILING_DBTP
        if over <= 0.0 and (quieter or abs(lufs - target_lufs) <= FILE_TOLERANCE_LU):
            break
        if over > 0.0:  # the limiter's ceiling comes down by the codec's overshoot (never back up)
            ceiling = max(LOWEST_MASTER_CEILING_DBTP, ceiling - over - 0.1)
        if not quieter:  # aim past what the codec does to the loudness
            aim = float(target_lufs) - (lufs - float(report["integrated_lufs"]))
        elif over > 0.0 and ceiling <= LOWEST_MASTER_CEILING_DBTP:
            aim -= over + 0.1
        for _ in range(16):
            try:
                report = remaster(aim, ceiling)
                break
            except RenderError:
                # The limiter cannot make room for the codec's peaks at this loudness: a little quieter.
                quieter = True
                aim -= QUIETER_STEP_LU
        else:
            raise RenderError(f"{path.name}: the master could not be made to fit the encoder at any loudness down to "
                              f"{aim:.0f} LUFS; this is a bug — please report it with the plan file")
        result["master"] = report
        result["reencodes"] += 1
        tp, lufs = measure_file(path)
    result.update(file_true_peak_dbtp=round(tp, 3), file_integrated_lufs=round(lufs, 3),
                  master_target_lufs=round(aim, 3), master_ceiling_dbtp=round(ceiling, 3))
    kind = path.suffix.lstrip(".")
    if quieter:
        result["warning"] = (f"the {kind} encoder's peaks left no room at {target_lufs:g} LUFS without heavy "
                             f"limiting, so the mix is {lufs:.1f} LUFS; choose a lower --target-lufs or a lossless "
                             "format (wav, flac)")
    elif tp > CEILING_DBTP or abs(lufs - target_lufs) > 0.5:
        result["warning"] = (f"the {kind} file measures {lufs:.1f} LUFS and {tp:.1f} dBTP "
                             f"(target {target_lufs:g} LUFS, ceiling {CEILING_DBTP:g} dBTP)")
    return result


def loudness_section(master_report: dict[str, Any], *, target_lufs: float, ceiling_dbtp: float,
                     file_check: dict[str, Any] | None) -> dict[str, Any]:
    """The report's ``loudness``: the written file's own figures first.

    ``integrated_lufs`` and ``true_peak_dbtp`` are the file's, measured after encoding for a
    lossy file (``measured: "file"``); a lossless file holds the master's samples to 24 bits, so
    there they are the master's (``measured: "master"``). ``master_*`` are always the master's
    output before any encoder; ``file_*`` and ``reencodes`` come with a lossy file.
    """
    section: dict[str, Any] = {
        "integrated_lufs": master_report["integrated_lufs"],
        "true_peak_dbtp": master_report["true_peak_dbtp"],
        "target_lufs": target_lufs,
        "ceiling_dbtp": CEILING_DBTP if file_check is not None else ceiling_dbtp,
        "measured": "master",
        "master_integrated_lufs": master_report["integrated_lufs"],
        "master_true_peak_dbtp": master_report["true_peak_dbtp"],
        "master_ceiling_dbtp": master_report.get("ceiling_dbtp", ceiling_dbtp),
    }
    if file_check is not None:
        section.update(
            integrated_lufs=file_check["file_integrated_lufs"],
            true_peak_dbtp=file_check["file_true_peak_dbtp"],
            measured="file",
            file_integrated_lufs=file_check["file_integrated_lufs"],
            file_true_peak_dbtp=file_check["file_true_peak_dbtp"],
            reencodes=file_check["reencodes"],
        )
    return section
