"""Line a take up with its backing from the music itself, when the take carries no bleed.

A take sung on headphones holds none of the backing, so :func:`melisma.analysis.align.estimate_offset`
cannot measure its lag. When the user gives the song's reference melody (``--melody``, a MIDI
file whose times are the backing's), the sung pitch curve can be lined up with it:
:func:`offset_from_melody` does that in two steps.

1. **Coarse: the pitch curves.** For every lag in the search range (frame steps), every voiced
   frame of the sung f0 is compared with the melody note sounding at that frame minus the lag:
   the octave-folded distance in semitones scores +1 at the same pitch class, falling to -1 a
   semitone and more away (an off-key singer still scores, a wrong note costs); singing over a
   melody rest costs a little. The best lag is the one with the highest mean score.
2. **Fine: the note starts and changes.** Around the coarse lag, every melody note change (one
   note to the next of another pitch, no rest between) is looked for in the sung curve: where the
   sung pitch crosses the midpoint between the two notes, interpolated between frames; every note
   after a rest, where the sung pitch first holds that note. The offset is the coarse lag plus the
   median of those residuals (twice, the second round around the first's answer); their spread
   gives its standard error.

What it measures is the singer's own timing against the melody, as the pitch tracker sees it,
*plus* the phone's latency. The two cannot be told apart: a singer who is systematically 20 ms
behind the beat gives an offset 20 ms too late, and in noise the tracker's voicing starts tens of
ms after a soft onset. The confidence therefore folds that timing spread (:data:`SINGER_TIMING_MS`,
measured) into the standard error, and is the probability of being within :data:`TOLERANCE_MS`
under that model (``details['confidence_within_tolerance']`` for :data:`MELODY_TOLERANCE_MS`);
tools/eval_align.py --melody measures how well both are calibrated. On real phone takes the
answer is good to tens of ms, not to ±5 ms: :func:`melisma.pipeline.alignment.align_from_melody`
offers it as the best guess of an unknown offset, which the user may accept.

Without a melody, the sung onsets against the backing's beat grid say the offset only modulo a
beat (and singers place syllables tens of ms around the beat): no way to ±5 ms, so the engine
keeps refusing such a take (see :mod:`melisma.pipeline.alignment`).

Examples
--------
>>> import numpy as np
>>> from melisma.analysis.melody import MelodyNote
>>> from melisma.analysis.pitch import PitchTrack, midi_to_hz
>>> notes = [MelodyNote(0.5 * i, 0.5 * i + 0.45, 60 + (0, 4, 7, 5, 2, 9)[i % 6]) for i in range(24)]
>>> hop = 0.005
>>> t = np.arange(int(13 / hop)) * hop
>>> sung = np.zeros(t.size)
>>> for n in notes:                                  # sung 180 ms late
...     sung[(t >= n.start_s + 0.18) & (t < n.end_s + 0.18)] = n.midi
>>> track = PitchTrack(hop, np.where(sung > 0, midi_to_hz(sung), 0.0), (sung > 0).astype(float), "test")
>>> m = offset_from_melody(track, notes)
>>> m.method, round(m.offset_ms)
('melody', 180)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import AlignmentError
from .melody import MelodyNote
from .pitch import PitchTrack, hz_to_midi

__all__ = ["MELODY_KNOWN_CONFIDENCE", "MELODY_TOLERANCE_MS", "MusicAlignment", "offset_from_melody"]

#: The result is within this of the truth with probability :attr:`MusicAlignment.confidence`.
TOLERANCE_MS = 5.0
#: Spread of a take's timing against its melody as the f0 sees it (ms): not observable from the
#: take, it bounds how sure a melody alignment can be. On the dry real voices with their own note
#: annotations (vocadito 1, SSVD clips; no delay, no noise) the offset found lay within -12.5..+10.6 ms
#: of 0; on the same voices as phone takes (measured room, real noise 10-20 dB SNR, AAC) the
#: tracker's voicing starts 40-60 ms after weak note onsets and reverberation stretches the ends,
#: and the error spread to ~30 ms (tools/eval_align.py --melody). The larger figure is used.
SINGER_TIMING_MS = 30.0
#: The second tolerance the confidence is given for (an offset 20 ms off is at the edge of audible
#: for a vocal): ``details['confidence_within_tolerance']``.
MELODY_TOLERANCE_MS = 20.0
#: Frames whose tracker confidence is below this count as unvoiced.
VOICED_CONFIDENCE = 0.5
#: A sung frame this close to the melody note (semitones, any octave) scores +1 (vibrato and
#: detuning stay inside), this far or further -1, linearly between.
NEAR_SEMITONES = 0.6
FAR_SEMITONES = 1.2
#: Score of a voiced frame over a melody rest (singing where the melody rests costs a little).
REST_SCORE = -0.2
#: A note change is looked for within this of where the coarse lag puts it (ms).
CHANGE_WINDOW_MS = 80.0
#: Competing lags closer than this to the best one are part of its peak (ms): further away, the
#: melody lines up a note or a phrase off.
PEAK_GUARD_MS = 150.0
#: Fewest note changes found for the fine step (fewer: the coarse lag, with a larger error).
MIN_CHANGES = 4
#: A melody alignment would count as known (mixed without asking) when its probability of being
#: within :data:`MELODY_TOLERANCE_MS` reached this; with the timing spread measured on real phone
#: takes (:data:`SINGER_TIMING_MS`) it cannot, so the melody's offset is always offered as the
#: best guess, never mixed unasked.
MELODY_KNOWN_CONFIDENCE = 0.9


@dataclass(frozen=True)
class MusicAlignment:
    """The offset found from the music, and how sure it is.

    Attributes
    ----------
    offset_ms : float
        How much the take lags the backing (positive: late).
    method : str
        ``'melody'``: the sung pitch against the reference melody.
    confidence : float
        Probability that ``offset_ms`` is within :data:`TOLERANCE_MS` of the truth (calibrated
        in tools/eval_align.py --melody).
    details : dict
        Evidence: coarse lag, score and its competitor, note changes used, standard error.
    """

    offset_ms: float
    method: str
    confidence: float
    details: dict = field(default_factory=dict)


def _melody_grid(notes: Sequence[MelodyNote], hop_s: float, n: int) -> np.ndarray:
    """Melody pitch (MIDI) at frame times ``k * hop_s`` for k in [0, n), NaN over rests."""
    grid = np.full(n, np.nan)
    for note in notes:
        a = max(0, int(math.ceil(note.start_s / hop_s)))
        b = min(n, int(math.ceil(note.end_s / hop_s)))
        if b > a:
            grid[a:b] = note.midi
    return grid


def _folded(d: np.ndarray) -> np.ndarray:
    """Distance in semitones folded to one octave: 0..6."""
    return np.abs((d + 6.0) % 12.0 - 6.0)


def _scores(sung: np.ndarray, grid: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Mean score of the sung curve against the melody shifted by each lag (frames)."""
    voiced = np.flatnonzero(np.isfinite(sung))
    out = np.full(lags.size, -np.inf)
    if voiced.size == 0:
        return out
    s = sung[voiced]
    for j, lag in enumerate(lags):
        idx = voiced - int(lag)
        ok = (idx >= 0) & (idx < grid.size)
        m = np.full(voiced.size, np.nan)
        m[ok] = grid[idx[ok]]
        on = np.isfinite(m)
        sc = np.full(voiced.size, REST_SCORE)
        sc[on] = 1.0 - 2.0 * np.clip((_folded(s[on] - m[on]) - NEAR_SEMITONES) / (FAR_SEMITONES - NEAR_SEMITONES), 0.0, 1.0)
        out[j] = float(np.mean(sc))
    return out


def _crossing(t: np.ndarray, sung: np.ndarray, a: float, b: float, centre: float, half: float) -> float | None:
    """Time where the sung curve goes from note ``a`` to note ``b`` near ``centre`` (interpolated)."""
    sel = np.flatnonzero(np.abs(t - centre) <= half)
    if sel.size < 4:
        return None
    x = sung[sel]
    # fold each frame's pitch to the octave nearest the two notes
    mid = 0.5 * (a + b)
    x = x - 12.0 * np.round((x - mid) / 12.0)
    sign = 1.0 if b > a else -1.0
    y = sign * (x - mid)  # < 0 on the first note, > 0 on the second
    best = None
    for i in range(sel.size - 1):
        y0, y1 = y[i], y[i + 1]
        if not (np.isfinite(y0) and np.isfinite(y1)) or sel[i + 1] != sel[i] + 1:
            continue
        if y0 < 0 <= y1:
            tc = t[sel[i]] + (t[sel[i + 1]] - t[sel[i]]) * (-y0) / (y1 - y0)
            # the near side must really be on the notes (not a slide through from elsewhere)
            if best is None or abs(tc - centre) < abs(best - centre):
                best = float(tc)
    return best


def _matches(x: np.ndarray, midi: float) -> np.ndarray:
    """Frames whose sung pitch is within a semitone of ``midi`` (any octave)."""
    out = np.zeros(x.size, bool)
    ok = np.isfinite(x)
    out[ok] = _folded(x[ok] - midi) <= 1.0
    return out


#: Frames a sung note must hold its pitch for a start or end to count.
STABLE_FRAMES = 4


def _event_residuals(t: np.ndarray, sung: np.ndarray, order: Sequence[MelodyNote], offset_ms: float,
                     hop: float, sung_any: np.ndarray | None = None) -> list[tuple[str, float]]:
    """Sung time minus melody time minus ``offset_ms`` (ms) of every note start and change.

    Note ends are not used: a sung note's end is blurred by the room's reverberation and by how
    the singer lets it go (ends came out tens of ms early or late where starts were within a few).

    Each is looked for within :data:`CHANGE_WINDOW_MS` of where ``offset_ms`` puts it.
    """
    out = []
    lag = offset_ms / 1000.0
    half = CHANGE_WINDOW_MS / 1000.0
    n = sung.size
    for i, note in enumerate(order):
        prev = order[i - 1] if i > 0 else None
        legato_in = (prev is not None and note.start_s - prev.end_s <= 0.05
                     and _folded(np.array([note.midi - prev.midi]))[0] >= 0.5)
        if legato_in:
            assert prev is not None
            h = min(half, 0.5 * (prev.end_s - prev.start_s) + 0.02, 0.5 * (note.end_s - note.start_s) + 0.02)
            # the tracker's confidence dips where the pitch moves: every pitched frame counts here
            tc = _crossing(t, sung if sung_any is None else sung_any, float(prev.midi), float(note.midi), note.start_s + lag, h)
            if tc is not None:
                out.append(("change", (tc - note.start_s - lag) * 1000.0))
            continue
        rest_in = prev is None or note.start_s - prev.end_s >= 0.08
        dur = note.end_s - note.start_s
        if dur < STABLE_FRAMES * hop * 2:
            continue
        h = min(half, 0.5 * dur)
        if rest_in:
            a = max(1, int(math.floor((note.start_s + lag - h) / hop)))
            b = min(n - STABLE_FRAMES, int(math.ceil((note.start_s + lag + h) / hop)))
            if b > a:
                m = _matches(sung[a - 1 : b + STABLE_FRAMES], float(note.midi))
                for k in range(1, b - a + 1):
                    if not m[k - 1] and m[k : k + STABLE_FRAMES].all():
                        out.append(("start", (t[a - 1 + k] - 0.5 * hop - note.start_s - lag) * 1000.0))
                        break
    return out


def offset_from_melody(
    track: PitchTrack,
    melody: Sequence[MelodyNote],
    *,
    min_offset_ms: float = 0.0,
    max_offset_ms: float = 1000.0,
) -> MusicAlignment:
    """The take's lag behind the backing from its sung pitch against the reference melody.

    Parameters
    ----------
    track : PitchTrack
        f0 of the *unaligned* take (its own time axis).
    melody : sequence of MelodyNote
        The reference melody, in the backing's time.
    min_offset_ms, max_offset_ms : float
        Lags searched. A phone take is always late (its latency is positive), so the default
        search is 0..1000 ms.

    Returns
    -------
    MusicAlignment
        ``method='melody'``; ``confidence`` ~0 when the sung notes do not follow the melody.

    Raises
    ------
    AlignmentError
        An empty melody or a search range that is empty or not finite.
    """
    if not melody:
        raise AlignmentError("the reference melody has no notes; give a MIDI file with the song's melody (--melody)")
    if not (math.isfinite(min_offset_ms) and math.isfinite(max_offset_ms) and min_offset_ms < max_offset_ms):
        raise AlignmentError(
            f"melody alignment search range {min_offset_ms!r}..{max_offset_ms!r} ms is empty; give min < max (e.g. 0..1000)"
        )
    hop = float(track.hop_s)
    hz = np.asarray(track.hz, dtype=np.float64)
    conf = np.asarray(track.confidence, dtype=np.float64)
    voiced = (hz > 0) & (conf >= VOICED_CONFIDENCE)
    sung = np.full(hz.size, np.nan)
    sung[voiced] = hz_to_midi(hz[voiced])
    sung_any = np.full(hz.size, np.nan)
    sung_any[hz > 0] = hz_to_midi(hz[hz > 0])
    t = np.arange(hz.size) * hop
    details: dict[str, Any] = {"search_range_ms": [min_offset_ms, max_offset_ms], "voiced_s": round(float(voiced.sum()) * hop, 2),
                               "melody_notes": len(melody)}
    end_s = max(n.end_s for n in melody)
    grid = _melody_grid(melody, hop, int(math.ceil(end_s / hop)) + 1)
    lags = np.arange(int(math.floor(min_offset_ms / 1000.0 / hop)), int(math.ceil(max_offset_ms / 1000.0 / hop)) + 1)
    scores = _scores(sung, grid, lags)
    if not np.isfinite(scores).any() or voiced.sum() * hop < 1.0:
        details["reason"] = "too little singing in the take to follow the melody"
        return MusicAlignment(0.0, "melody", 0.0, details)
    j = int(np.argmax(scores))
    coarse_ms = float(lags[j]) * hop * 1000.0
    guard = int(round(PEAK_GUARD_MS / 1000.0 / hop))
    away = np.abs(np.arange(lags.size) - j) > guard
    competitor = float(np.max(scores[away])) if away.any() else -1.0
    details.update(coarse_offset_ms=coarse_ms, score=float(scores[j]), competitor_score=competitor)

    # Fine step: the note changes, starts and ends, twice (the second around the first's answer).
    order = sorted(melody, key=lambda n: n.start_s)
    offset = coarse_ms
    res = np.zeros(0)
    for _ in range(2):
        events = _event_residuals(t, sung, order, offset, hop, sung_any)
        kinds = [k for k, _ in events]
        res = np.asarray([v for _, v in events if True], dtype=np.float64)
        if res.size < MIN_CHANGES:
            break
        offset = offset + float(np.median(res))
    if res.size >= MIN_CHANGES:
        res = res - float(np.median(res))
        spread = 1.4826 * float(np.median(np.abs(res)))
        se = max(spread, 5.0) * 1.25 / math.sqrt(res.size)
    else:
        # the coarse lag alone: a frame's resolution and the notes' own blur
        se = max(hop * 1000.0, 10.0)
        offset = coarse_ms
        spread = float("nan")
    agree = float(np.mean(np.abs(res) <= 40.0)) if res.size else 0.0
    if res.size >= MIN_CHANGES:
        details["event_median_ms"] = {k: float(np.median(res[[j for j, x in enumerate(kinds) if x == k]]))
                                      for k in sorted(set(kinds))}
    details.update(note_events=int(res.size), event_spread_ms=spread, event_agreement=agree, standard_error_ms=se)
    # Probability of being within a tolerance: Gaussian error of the estimate and of the take's
    # systematic timing, times the chance that the coarse peak is the right one at all.
    sigma = math.hypot(se, SINGER_TIMING_MS)
    rel = (scores[j] - competitor) / max(float(scores[j]), 1e-3)
    p_peak = 1.0 / (1.0 + math.exp(-(rel - 0.1) / 0.04))
    p_sung = min(1.0, max(0.0, (scores[j] - 0.1) / 0.2))  # the singing follows the melody at all
    p_events = min(1.0, max(0.0, (agree - 0.3) / 0.3)) if res.size >= MIN_CHANGES else 0.3
    p_right = p_peak * p_sung * p_events
    confidence = float(min(0.99, max(0.0, math.erf(TOLERANCE_MS / (math.sqrt(2.0) * sigma)) * p_right)))
    details["confidence_within_tolerance_ms"] = MELODY_TOLERANCE_MS
    p20 = math.erf(MELODY_TOLERANCE_MS / (math.sqrt(2.0) * sigma)) * p_right
    details["confidence_within_tolerance"] = float(min(0.99, max(0.0, p20)))
    details["p_right_peak"] = p_right
    return MusicAlignment(float(offset), "melody", confidence, details)
