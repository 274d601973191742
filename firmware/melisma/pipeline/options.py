"""What every verb of the engine shares: its rates and limits, and the options it is given, checked once.

:class:`AnalysisOptions` and :class:`RenderOptions` hold what a caller may ask for; their
``resolve`` methods check every value (a bad one raises :class:`~melisma.errors.ConfigError`
naming it and what would work) before any work starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

#: Sample rate of everything inside the engine.
ENGINE_SR = 48000
#: A take quieter than this everywhere is treated as silent (dBFS, peak).
SILENCE_PEAK_DBFS = -60.0
#: Shortest take worth mixing, in seconds.
MIN_TAKE_S = 1.0
#: Reverb/compressor run-in before a preview window, in seconds (so the window sounds as in the full mix).
PREVIEW_PREROLL_S = 1.0
#: A preview corrects pitch only from this long before its window (the pre-roll before that only
#: primes the compressor and reverb, whose state hardly depends on a few cents of pitch).
PREVIEW_CORRECTION_MARGIN_S = 0.1
DEFAULT_TARGET_LUFS = -14.0
#: Rate of the mono copies made while decoding, for alignment and pitch/key analysis.
ANALYSIS_SR = 16000
#: True-peak ceiling of the master. Lossy encoders (AAC, MP3, Opus) add 0.2-0.5 dB of true peak
#: on real mixes (measured on the real-recording evaluation), so lossy outputs are limited lower
#: and checked again after encoding.
CEILING_DBTP = -1.0
LOSSY_CEILING_DBTP = -1.5
LOSSY_EXTENSIONS = (".m4a", ".mp3", ".ogg", ".opus")

#: Progress weights of the analysis and render stages (what share of the bar each one moves).
ANALYSIS_WEIGHTS = {
    "decode": 10,
    "align": 8,
    "cleanup": 25,
    "analyze_voice": 6,
    "analyze_backing": 6,
    "analyze_pitch": 25,
    "cache": 5,
}
RENDER_WEIGHTS = {"correct_pitch": 25, "vocal_chain": 25, "balance": 10, "master": 30, "write": 10}


def ceiling_for(out_path: str | os.PathLike | None) -> float:
    """The master's true-peak ceiling for an output file (lower for lossy formats)."""
    if out_path is not None and Path(out_path).suffix.lower() in LOSSY_EXTENSIONS:
        return LOSSY_CEILING_DBTP
    return CEILING_DBTP


def check_target_lufs(target_lufs: float) -> float:
    """``target_lufs`` as a float, or :class:`ConfigError` when it is outside −30…−6 LUFS."""
    if not (np.isfinite(target_lufs) and -30.0 <= target_lufs <= -6.0):
        raise ConfigError(
            f"target_lufs={target_lufs} is out of range; use −30…−6 LUFS (−14 suits phones and streaming, −16 for Apple Music)"
        )
    return float(target_lufs)


@dataclass(frozen=True)
class AnalysisOptions:
    """What :func:`~melisma.pipeline.analyze` is asked to do (see its docstring for each field)."""

    latency_ms: float | None = None
    style: str = "neutral"
    sliders: dict[str, float] | None = None
    target_lufs: float = DEFAULT_TARGET_LUFS
    pitch: bool = True
    key: str | None = None
    scale: str | None = None
    melody_path: str | os.PathLike | None = None
    pitch_tracker: str | None = None
    correction: float | None = None
    ornaments: str | dict | None = None
    accept_alignment_guess: bool = False

    def check(self) -> Any:
        """Refuse bad options before any work; returns the resolved mix settings."""
        from ..analysis.intonation import resolve_scale
        from ..render.pitch import correction_from_sliders
        from ..semantic import resolve_settings

        settings = resolve_settings(self.style, self.sliders)
        check_target_lufs(self.target_lufs)
        correction_from_sliders(settings.sliders, correction=self.correction, ornaments=self.ornaments)
        resolve_scale(self.key, self.scale)
        if self.melody_path is not None and not Path(self.melody_path).is_file():
            raise ConfigError(
                f"--melody {self.melody_path}: no such file; give a standard MIDI file (.mid) of the song's melody"
            )
        if self.latency_ms is not None and not (np.isfinite(self.latency_ms) and -2000 <= self.latency_ms <= 2000):
            raise ConfigError(f"latency_ms={self.latency_ms} is out of range; give the calibrated latency in −2000…2000 ms")
        return settings


@dataclass(frozen=True)
class RenderOptions:
    """What a render is asked to change from the plan's own settings; ``None`` keeps the plan's."""

    style: str | None = None
    sliders: dict[str, float] | None = None
    target_lufs: float | None = None
    correction: float | None = None
    ornaments: str | dict | None = None
    start_s: float | None = None
    duration_s: float | None = None

    def resolve(self, base: dict[str, Any]) -> ResolvedRender:
        """Merge with the plan's settings ``base`` and check everything, once."""
        from ..render.pitch import correction_from_sliders
        from ..semantic import resolve_settings

        merged_sliders = dict(base.get("sliders", {}))
        merged_sliders.update(self.sliders or {})
        settings = resolve_settings(self.style or base.get("style", "neutral"), merged_sliders)
        target = float(base.get("target_lufs", DEFAULT_TARGET_LUFS) if self.target_lufs is None else self.target_lufs)
        check_target_lufs(target)
        # An explicit correction/policy (now or at analysis) wins over the tuning/ornaments sliders,
        # unless those sliders are being moved now.
        correction, ornaments = self.correction, self.ornaments
        if correction is None and "tuning" not in (self.sliders or {}):
            correction = base.get("correction")
        if ornaments is None and "ornaments" not in (self.sliders or {}):
            ornaments = base.get("ornaments")
        tuning = correction_from_sliders(settings.sliders, correction=correction, ornaments=ornaments)
        return ResolvedRender(settings=settings, target_lufs=target, tuning=tuning)


@dataclass(frozen=True)
class ResolvedRender:
    """A render's options after checking: mix settings, loudness target, pitch correction."""

    settings: Any  # melisma.semantic.MixSettings
    target_lufs: float
    tuning: Any  # melisma.render.correct.CorrectionSettings


def preview_window(n_total: int, start_s: float | None, duration_s: float | None) -> dict[str, Any]:
    """The samples a render covers: the whole take, or a preview window with its pre-roll.

    ``lo:hi`` are rendered; the first ``cut`` of them are the pre-roll, dropped from the output.
    """
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
    if stop - start <= 0.5 * ENGINE_SR:
        raise ConfigError(f"--start {start_s:g} --duration {duration_s:g} runs past the end of the take ({total_s:.1f} s) "
                          f"and keeps only {(stop - start) / ENGINE_SR:.2f} s; previews need at least 0.5 s: use "
                          f"--start {max(total_s - 0.6, 0):.1f} or earlier")
    lo = max(0, start - int(PREVIEW_PREROLL_S * ENGINE_SR))
    return {
        "lo": lo,
        "hi": stop,
        "cut": start - lo,
        "preview": True,
        "start_s": start_s,
        "duration_s": (stop - start) / ENGINE_SR,
    }
