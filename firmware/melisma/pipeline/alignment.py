"""What the engine does with an alignment: mix it, or refuse an unknown offset unless told to guess.

A take whose lag behind the backing is unknown (no bleed of the backing in it, no calibrated
latency) must never be mixed as if the offset were known: 100-300 ms late is plainly audible.
:func:`decide_alignment` refuses it by default with an :class:`~melisma.errors.AlignmentUnknownError`
(exit code 5) that says why and what would work, and accepts the estimator's best guess only
when the user asked for that (``--accept-alignment-guess``, or the box's job option: the Mix/Analyze command's flag). The
report's ``alignment.decision`` says which happened (:func:`alignment_decision`).

Examples
--------
>>> from melisma.analysis.align import Alignment
>>> measured = Alignment(offset_ms=182.0, method="bleed", confidence=0.97)
>>> decide_alignment(measured, accept_guess=False, warnings=[]) is measured
True
>>> unknown = Alignment(offset_ms=0.0, method="none", confidence=0.0,
...                     details={"reason": "no bleed of the backing found in the take", "best_guess_ms": 205.0})
>>> decide_alignment(unknown, accept_guess=False, warnings=[])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
melisma.errors.AlignmentUnknownError: the take's offset behind the backing is unknown: no bleed ... nothing was mixed. ...
>>> guessed = decide_alignment(unknown, accept_guess=True, warnings=[])
>>> guessed.method, guessed.offset_ms, alignment_decision(guessed, backing=True)
('guess', 205.0, 'accepted guess')
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import AlignmentUnknownError

if TYPE_CHECKING:  # a render never aligns: analysis.align (scipy.fft, scipy.ndimage) loads only for analysis
    from ..analysis.align import Alignment

#: The values of the report's ``alignment.decision``.
DECISIONS = ("measured", "calibrated", "accepted guess", "no backing")


def decide_alignment(alignment: Alignment, *, accept_guess: bool, warnings: list[str]) -> Alignment:
    """The alignment to mix with: ``alignment`` itself when its offset is known, else the best
    guess when ``accept_guess``, else :class:`AlignmentError`.

    Parameters
    ----------
    alignment : Alignment
        What :func:`~melisma.analysis.align.estimate_offset` found.
    accept_guess : bool
        The user accepted the best guess for an unknown offset.
    warnings : list of str
        A warning is appended when a guess is used.

    Returns
    -------
    Alignment
        ``alignment``, or a copy with ``method='guess'`` at the best guess.

    Raises
    ------
    AlignmentUnknownError
        The offset is unknown and the guess was not accepted (an AlignmentError: exit code 5).
    """
    if alignment.known and not _too_unsure(alignment):
        return alignment
    details = dict(alignment.details)
    if alignment.known:  # a bleed found, but too faintly to be trusted: its offset becomes the guess
        details["reason"] = (f"the backing's bleed points at {alignment.offset_ms:.0f} ms, but with confidence "
                             f"{alignment.confidence:.2f} only (below {MIN_MEASURED_CONFIDENCE})")
        details["best_guess_ms"] = alignment.offset_ms
        details["best_guess_confidence"] = alignment.confidence
        details["measured_method"] = alignment.method
    reason = str(details.get("reason", "no bleed of the backing found in the take"))
    guess = details.get("best_guess_ms")
    if not accept_guess:
        source = " from the sung notes against the melody" if details.get("best_guess_method") == "melody" else ""
        where = f" (the best guess, {guess:.0f} ms{source}, is not reliable)" if guess is not None else ""
        raise AlignmentUnknownError(
            f"the take's offset behind the backing is unknown: {reason.split(';')[0]}{where}; nothing was mixed. "
            "Give the phone's calibrated latency (--latency-ms MS, or run the app's latency calibration), "
            "or record again with the phone speaker on so the backing is heard in the take, "
            + ("" if "melody" in details else "or give the song's melody (--melody M.mid) for a guess from the sung notes, ")
            + "or accept the best guess with --accept-alignment-guess"
        )
    offset = float(guess) if guess is not None else 0.0
    details["accepted_guess"] = True
    source = ", from the sung notes against the melody" if details.get("best_guess_method") == "melody" else ""
    warnings.append(
        f"the take's offset is a guess ({offset:.0f} ms{source}, accepted with --accept-alignment-guess): "
        f"{reason.split(';')[0]}; "
        "if the vocal sounds early or late, give --latency-ms"
    )
    confidence = float(details.get("best_guess_confidence", 0.0))
    return replace(alignment, offset_ms=offset, method="guess", confidence=min(confidence, 0.5), details=details)


#: A measured (bleed) offset less sure than this is not mixed unasked: it is refused like an unknown
#: one, with itself as the best guess (the analysis warned below this before; on the real phone
#: takes of tools/eval_align.py --real the one bleed take below it was 5.5 ms off).
MIN_MEASURED_CONFIDENCE = 0.3


def _too_unsure(alignment: Alignment) -> bool:
    return alignment.method == "bleed" and alignment.confidence < MIN_MEASURED_CONFIDENCE


def alignment_decision(alignment: Alignment, *, backing: bool) -> str:
    """How the offset the mix uses was arrived at, for the report (one of :data:`DECISIONS`)."""
    if not backing:
        return "no backing"
    if alignment.method == "guess":
        return "accepted guess"
    if alignment.method == "calibrated":
        return "calibrated"
    return "measured"


def align_from_melody(alignment: Alignment, take: np.ndarray, *, sr: int, melody_path: str | os.PathLike | None,
                      tracker: Any = None) -> Alignment:
    """When the bleed left the offset unknown and a reference melody is given, the offset from the
    sung pitch against the melody (:func:`~melisma.analysis.music_align.offset_from_melody`) as
    the best guess.

    On real phone takes that offset is good to tens of ms, not to the ±5 ms a measured one is
    (tools/eval_align.py --melody), so it never makes the offset known: it becomes the guess
    :func:`decide_alignment` offers (``--accept-alignment-guess``), with its method and its
    calibrated confidence, whenever it is surer than the bleed's own best guess.

    Parameters
    ----------
    alignment : Alignment
        What :func:`~melisma.analysis.align.estimate_offset` found; returned as it is unless its
        method is ``'none'`` and ``melody_path`` is given.
    take : np.ndarray
        The unaligned take, mono, at ``sr``.
    sr : int
        Its sample rate (the engine passes its 16 kHz analysis copy).
    melody_path : path-like or None
        The reference melody (``--melody``, a MIDI file in the backing's time).
    tracker : PitchTracker, optional
        The f0 tracker (default: the engine's DSP tracker).

    Returns
    -------
    Alignment
        ``alignment``, still unknown; its ``details['melody']`` holds the melody's evidence and,
        when it is the better guess, ``best_guess_ms``, ``best_guess_confidence`` (probability of
        being within ±5 ms) and ``best_guess_method='melody'``.
    """
    if alignment.method != "none" or melody_path is None:
        return alignment
    from ..analysis.melody import load_melody
    from ..analysis.music_align import MELODY_TOLERANCE_MS, offset_from_melody
    from ..analysis.pitch import track_pitch

    found = offset_from_melody(track_pitch(take, sr=sr, tracker=tracker), load_melody(melody_path))
    within = float(found.details.get("confidence_within_tolerance", 0.0))
    out = dict(alignment.details)
    out["melody"] = {**found.details, "offset_ms": found.offset_ms, "confidence": found.confidence}
    # Without any bleed evidence the melody's guess is the better one; when the bleed was heard
    # but its offset is ambiguous (the music repeats), the surer of the two.
    if (out.get("bleed_evidence") != "ambiguous" or out.get("best_guess_ms") is None
            or found.confidence >= float(out.get("best_guess_confidence", 0.0))):
        out["best_guess_ms"] = found.offset_ms
        out["best_guess_confidence"] = found.confidence
        out["best_guess_method"] = "melody"
    head, _, tail = str(out.get("reason", "no bleed of the backing found in the take")).partition(";")
    out["reason"] = (f"{head}, and the sung notes against the melody place it at {found.offset_ms:.0f} ms only to within "
                     f"±{MELODY_TOLERANCE_MS:.0f} ms with probability {within:.2f}" + (f";{tail}" if tail else ""))
    return replace(alignment, details=out)
