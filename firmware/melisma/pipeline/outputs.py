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

from ..audio_io import AudioWriter, atomic_path, check_output_location, check_writable, encode_audio, output_format
from ..errors import AudioIOError, ConfigError, RenderError
from ..plan import to_json
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
    with staged_outputs(list(paths.values()), overwrite=overwrite) as tmp:
        if "mix" in paths:
            mix_tmp = tmp[paths["mix"]]
            encode_audio(mix_tmp, mix, sr=ENGINE_SR)
            if paths["mix"].suffix.lower() in LOSSY_EXTENSIONS:

                def rewrite(gain: float) -> None:
                    encode_audio(mix_tmp, mix * np.float32(gain), sr=ENGINE_SR)

                report.setdefault("loudness", {}).update(check_encoded_file(mix_tmp, rewrite=rewrite))
        for name in ("vocal", "backing"):
            key = f"stem_{name}"
            if key in paths:
                encode_audio(tmp[paths[key]], stems[name], sr=ENGINE_SR, float_wav=True)
        if "plot" in paths:
            from ..report_plot import plot_report

            plot_report(tmp[paths["plot"]], report, mix=mix, stems=stems, vocal_dry=vocal_dry, sr=ENGINE_SR)
        if "report" in paths:
            tmp[paths["report"]].write_text(to_json(report), encoding="utf-8")


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


class ScaledWriter:
    """Passes blocks on to ``writer`` times ``gain`` (a trimmed re-encode of a mastered stream)."""

    def __init__(self, writer: AudioWriter, gain: float):
        self.writer, self.gain = writer, np.float32(gain)

    def write(self, block: np.ndarray) -> None:
        """Write ``block`` scaled by the gain."""
        self.writer.write(block * self.gain)

    def restart(self) -> None:
        """Start the file again (the master's second pass)."""
        self.writer.restart()


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


def check_encoded_file(path: Path, *, rewrite: Callable[[float], Any]) -> dict[str, float]:
    """The one check of an encoded (lossy) mix: measure the file; if the codec pushed the true peak
    over −1 dBTP, ``rewrite(gain)`` writes it again trimmed and it is measured again. Returns the
    file's own figures for the report.
    """
    tp, lufs = measure_file(path)
    trim_db = 0.0
    if tp > CEILING_DBTP:
        trim_db = CEILING_DBTP - tp - 0.1
        rewrite(10 ** (trim_db / 20))
        tp, lufs = measure_file(path)
    return {"file_true_peak_dbtp": round(tp, 3), "file_integrated_lufs": round(lufs, 3), "file_trim_db": round(float(trim_db), 3)}
