"""The engine as the job queue sees it: four blocking calls that take paths and a progress callback.

The queue receives an engine object by injection, so its mechanics can be tested with any object
that has these methods. :class:`PipelineEngine` is the real one; it imports
:mod:`melisma.pipeline` only when a job first runs, so the BLE service starts fast (and on a box
whose engine fails to import, the link still works and jobs fail with a clear message).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Protocol

from ..errors import DeviceError

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]

#: Bit rate of Opus previews (``.ogg``/``.opus`` preview outputs): 2.5 s is ~16 kB, a fraction of a
#: second on a phone link; other preview formats are written as the engine writes mixes.
PREVIEW_BIT_RATE = 48_000
PREVIEW_LOW_RATE_EXTENSIONS = (".ogg", ".opus")


class Engine(Protocol):
    """What the job queue calls; every method blocks and may raise MelismaError subclasses."""

    def mix(self, take: Path, backing: Path, out: Path, *, style: str, sliders: dict, progress: Progress) -> dict: ...

    def analyse(self, take: Path, backing: Path, plan: Path, *, style: str, sliders: dict, progress: Progress) -> Any: ...

    def render(self, plan: Path, out: Path, *, style: str, sliders: dict, progress: Progress) -> dict: ...

    def preview(self, plan: Path, out: Path, *, style: str, sliders: dict, start_s: float, duration_s: float,
                progress: Progress) -> dict: ...


class PipelineEngine:
    """The real engine (:mod:`melisma.pipeline`), imported lazily."""

    def __init__(self):
        self._pipeline = None

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

    def analyse(self, take, backing, plan, *, style, sliders, progress, accept_alignment_guess=False):
        return self.pipeline.analyze_files(take, backing, plan, style=style, sliders=self.known_sliders(sliders),
                                           overwrite=True, progress=progress, accept_alignment_guess=accept_alignment_guess)

    def render(self, plan, out, *, style, sliders, progress):
        return self.pipeline.render_plan(plan, out, style=style, sliders=self.known_sliders(sliders),
                                         overwrite=True, progress=progress)

    def preview(self, plan, out, *, style, sliders, start_s, duration_s, progress):
        out = Path(out)
        if out.suffix.lower() not in PREVIEW_LOW_RATE_EXTENSIONS:
            return self.pipeline.render_plan(plan, out, style=style, sliders=self.known_sliders(sliders),
                                             start_s=start_s, duration_s=duration_s, overwrite=True,
                                             progress=progress)
        # A preview crosses the phone link while the singer waits: render it, then encode it at a low
        # Opus rate (PREVIEW_BIT_RATE) so it arrives in a fraction of a second (tools/bench_preview.py).
        from ..audio_io import load_audio, write_audio

        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".preview-") as tmp:
            wav = Path(tmp) / "preview.wav"
            report = self.pipeline.render_plan(plan, wav, style=style, sliders=self.known_sliders(sliders),
                                               start_s=start_s, duration_s=duration_s, overwrite=True,
                                               progress=progress)
            y, sr = load_audio(wav)
            write_audio(out, y, sr=sr, overwrite=True, bit_rate=PREVIEW_BIT_RATE)
        report["outputs"] = {"mix": str(out)}
        report["preview_bit_rate"] = PREVIEW_BIT_RATE
        return report
