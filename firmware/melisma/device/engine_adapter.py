"""The engine as the job queue sees it: four blocking calls that take paths and a progress callback.

The queue receives an engine object by injection, so its mechanics can be tested with any object
that has these methods. :class:`PipelineEngine` is the real one; it imports
:mod:`melisma.pipeline` only when a job first runs, so the BLE service starts fast (and on a box
whose engine fails to import, the link still works and jobs fail with a clear message).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..errors import DeviceError

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]

#: Bit rate of Opus previews (``.ogg``/``.opus`` preview outputs): 2.5 s is ~16 kB, a fraction of a
#: second on a phone link; other preview formats are written as the engine writes mixes.
PREVIEW_BIT_RATE = 48_000
PREVIEW_LOW_RATE_EXTENSIONS = (".ogg", ".opus")
#: Opus encoder effort for previews (libopus complexity 0-10, FFmpeg's default 10): 5 encodes a
#: 10 s preview about 3x faster (~25 ms instead of ~90 ms here) at no audible cost at 48 kbit/s.
PREVIEW_CODEC_OPTIONS = {"compression_level": "5"}
#: Loaded plans kept in memory (a slider move re-renders the same plan; loading it each time
#: also makes every per-plan memo of the engine miss).
PLANS_KEPT = 4


class Engine(Protocol):
    """What the job queue calls; every method blocks and may raise MelismaError subclasses."""

    def mix(self, take: Path, backing: Path, out: Path, *, style: str, sliders: dict, progress: Progress) -> dict: ...

    def analyze(self, take: Path, backing: Path, plan: Path, *, style: str, sliders: dict, progress: Progress) -> Any: ...

    def render(self, plan: Path, out: Path, *, style: str, sliders: dict, progress: Progress) -> dict: ...

    def preview(self, plan: Path, out: Path, *, style: str, sliders: dict, start_s: float, duration_s: float,
                progress: Progress) -> dict: ...


class PipelineEngine:
    """The real engine (:mod:`melisma.pipeline`), imported lazily."""

    def __init__(self):
        self._pipeline = None
        self._plans: dict[Path, tuple[tuple[int, int], Any]] = {}

    @property
    def pipeline(self):
        if self._pipeline is None:
            try:
                from .. import pipeline
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise DeviceError(f"the mixing engine cannot be loaded ({exc}); reinstall the firmware bundle") from exc
            self._pipeline = pipeline
        return self._pipeline

    def known_sliders(self, sliders: dict) -> dict:
        """Drop sliders this engine version does not know yet (newer apps may send more)."""
        try:
            from ..semantic import SLIDERS
        except ImportError:  # pragma: no cover
            return dict(sliders)
        unknown = set(sliders) - set(SLIDERS)
        if unknown:
            logger.warning("engine ignores sliders it does not know: %s", sorted(unknown))
        return {k: v for k, v in sliders.items() if k in SLIDERS}

    def mix(self, take, backing, out, *, style, sliders, progress, accept_alignment_guess=False):
        return self.pipeline.mix_files(take, backing, out, style=style, sliders=self.known_sliders(sliders),
                                       overwrite=True, progress=progress, accept_alignment_guess=accept_alignment_guess)

    def analyze(self, take, backing, plan, *, style, sliders, progress, accept_alignment_guess=False):
        result = self.pipeline.analyze_files(take, backing, plan, style=style, sliders=self.known_sliders(sliders),
                                             overwrite=True, progress=progress,
                                             accept_alignment_guess=accept_alignment_guess)
        # Previews follow: correct the whole take and run the dry chain now, once, so each
        # preview reads its window from the kept files (render/pitch work is not repeated per slider move).
        from ..pipeline.render import warm_render_caches

        warm_render_caches(result, style=style, sliders=self.known_sliders(sliders))
        return result

    def plan(self, path: Path) -> Any:
        """The plan at ``path``, loaded once and kept while its file is unchanged (or the path
        itself when it cannot be read: the engine then reports why).
        """
        path = Path(path)
        try:
            st = path.stat()
        except OSError:
            return path
        stamp = (st.st_mtime_ns, st.st_size)
        found = self._plans.get(path)
        if found is not None and found[0] == stamp:
            self._plans[path] = self._plans.pop(path)  # most recently used last
            return found[1]
        try:
            plan = self.pipeline.Plan.load(path)
        except self.pipeline.MelismaError:
            return path  # render_plan raises the same error with its message
        self._plans[path] = (stamp, plan)
        while len(self._plans) > PLANS_KEPT:
            del self._plans[next(iter(self._plans))]
        return plan

    def render(self, plan, out, *, style, sliders, progress):
        report = self.pipeline.render_plan(self.plan(plan), out, style=style, sliders=self.known_sliders(sliders),
                                           overwrite=True, progress=progress)
        # kept beside the plan: the app shows the written file's own loudness from it (render_reports.py)
        from .render_reports import store_render_report

        store_render_report(plan, report)
        return report

    def preview(self, plan, out, *, style, sliders, start_s, duration_s, progress):
        out = Path(out)
        plan = self.plan(plan)
        if out.suffix.lower() not in PREVIEW_LOW_RATE_EXTENSIONS:
            return self.pipeline.render_plan(plan, out, style=style, sliders=self.known_sliders(sliders),
                                             start_s=start_s, duration_s=duration_s, overwrite=True,
                                             progress=progress)
        # A preview crosses the phone link while the singer waits: it is mastered straight into a low
        # Opus rate (PREVIEW_BIT_RATE) so it arrives in a fraction of a second (tools/bench_preview.py).
        report = self.pipeline.render_preview(plan, out, style=style, sliders=self.known_sliders(sliders),
                                              start_s=start_s, duration_s=duration_s, bit_rate=PREVIEW_BIT_RATE,
                                              codec_options=PREVIEW_CODEC_OPTIONS, overwrite=True, progress=progress)
        report["outputs"] = {"mix": str(out)}
        report["preview_bit_rate"] = PREVIEW_BIT_RATE
        return report
