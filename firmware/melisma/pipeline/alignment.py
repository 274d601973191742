"""What the engine does with an alignment: mix it, or refuse an unknown offset unless told to guess.

A take whose lag behind the backing is unknown (no bleed of the backing in it, no calibrated
latency) must never be mixed as if the offset were known: 100-300 ms late is plainly audible.
:func:`decide_alignment` refuses it by default with an :class:`~melisma.errors.AlignmentUnknownError`
(exit code 5) that says why and what would work, and accepts the estimator's best guess only
when the user asked for that (``--accept-alignment-guess``, or the box's job option: the Mix/Analyse command's flag). The
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

from dataclasses import replace
from typing import TYPE_CHECKING

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
    if alignment.known:
        return alignment
    details = dict(alignment.details)
    reason = str(details.get("reason", "no bleed of the backing found in the take"))
    guess = details.get("best_guess_ms")
    if not accept_guess:
        where = f" (the best guess, {guess:.0f} ms, is not reliable)" if guess is not None else ""
        raise AlignmentUnknownError(
            f"the take's offset behind the backing is unknown: {reason.split(';')[0]}{where}; nothing was mixed. "
            "Give the phone's calibrated latency (--latency-ms MS, or run the app's latency calibration), "
            "or record again with the phone speaker on so the backing is heard in the take, "
            "or accept the best guess with --accept-alignment-guess"
        )
    offset = float(guess) if guess is not None else 0.0
    details["accepted_guess"] = True
    warnings.append(
        f"the take's offset is a guess ({offset:.0f} ms, accepted with --accept-alignment-guess): {reason.split(';')[0]}; "
        "if the vocal sounds early or late, give --latency-ms"
    )
    confidence = float(details.get("best_guess_confidence", 0.0))
    return replace(alignment, offset_ms=offset, method="guess", confidence=min(confidence, 0.5), details=details)


def alignment_decision(alignment: Alignment, *, backing: bool) -> str:
    """How the offset the mix uses was arrived at, for the report (one of :data:`DECISIONS`)."""
    if not backing:
        return "no backing"
    if alignment.method == "guess":
        return "accepted guess"
    if alignment.method == "calibrated":
        return "calibrated"
    return "measured"
