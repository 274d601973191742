"""The engine: analyze a take against a backing once, render the mix as often as wanted.

``analyze`` does the expensive work (decode, resample, align, clean, analyze) and returns a
:class:`~melisma.plan.Plan`; ``render`` reads only the plan and its cached audio, applies the
style preset and sliders, and returns the mix with its report. ``mix_files``,
``analyze_files``, ``render_plan`` and ``correct_file`` are the file-level entry points the CLI
and the device service call.

The package, one module a concern, each importing only those before it:

- :mod:`~melisma.pipeline.options`: the engine's rates and limits, and the options each verb
  takes, checked once (:class:`AnalysisOptions`, :class:`RenderOptions`);
- :mod:`~melisma.pipeline.inputs`: decoding the take and the backing, one take validator;
- :mod:`~melisma.pipeline.clock`: timed stages that report progress;
- :mod:`~melisma.pipeline.analyze`: analyze once → a plan;
- :mod:`~melisma.pipeline.outputs`: staged, atomic outputs and the check of an encoded mix;
- :mod:`~melisma.pipeline.render`: render many — prepare once, finish in memory or into a file;
- :mod:`~melisma.pipeline.files`: files in, files out.

Examples
--------
>>> from melisma import pipeline, examples  # doctest: +SKIP
>>> report = pipeline.mix_files(examples.TAKE, examples.BACKING, "mix.m4a", style="cpop")  # doctest: +SKIP
>>> round(report["loudness"]["integrated_lufs"])  # doctest: +SKIP
-14
"""

from __future__ import annotations

from ..errors import MelismaError, PlanError
from ..plan import Plan
from .analyze import analyze
from .files import analyze_files, correct_file, mix_files, render_plan, render_preview
from .inputs import load_take
from .options import (
    ANALYSIS_SR,
    CEILING_DBTP,
    DEFAULT_TARGET_LUFS,
    ENGINE_SR,
    LOSSY_CEILING_DBTP,
    LOSSY_EXTENSIONS,
    AnalysisOptions,
    RenderOptions,
    ceiling_for,
)
from .outputs import write_outputs
from .render import render

__all__ = [
    "ANALYSIS_SR",
    "CEILING_DBTP",
    "DEFAULT_TARGET_LUFS",
    "ENGINE_SR",
    "LOSSY_CEILING_DBTP",
    "LOSSY_EXTENSIONS",
    "AnalysisOptions",
    "MelismaError",
    "Plan",
    "PlanError",
    "RenderOptions",
    "analyze",
    "analyze_files",
    "ceiling_for",
    "correct_file",
    "load_take",
    "mix_files",
    "render",
    "render_plan",
    "render_preview",
    "write_outputs",
]
