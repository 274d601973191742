"""Aligning a reference melody to the sung pitch, and notes segmented by it.

A singer follows the melody loosely: notes come a few hundred milliseconds early or late, some are
left out, some are added, and ornaments (scoops, vibrato, grace notes) surround them. Matching each
detected note to the melody note it overlaps most in time fails as soon as one detected note spans
several melody notes (a fast passage sung legato) or the timing drifts: one target for four sung
notes. Here the melody is aligned to the pitch curve itself, frame by frame, and the notes are cut
where the alignment moves from one melody note to the next.

How it works (:func:`align_melody`):

1. Register: one octave shift for the whole take (a man singing a woman's melody an octave down),
   the median difference of the sung notes and the melody notes they overlap, in whole octaves.
2. Alignment: a left-to-right path through the melody notes over 10 ms frames (Viterbi). Each
   frame sits in one melody note; from one frame to the next the path stays, moves to the next
   note, or skips one (a note the singer left out, at a cost). A voiced frame costs the squared
   distance in semitones of its pitch to the melody note, capped (a wrong or added note, an
   ornament, costs no more than the cap), plus a timing cost growing with the distance in time
   past :data:`TIME_TOLERANCE_S` outside the melody note's span, steeply beyond
   :data:`MAX_DEVIATION_S`. Unvoiced frames cost nothing, so the path crosses rests
   and skipped notes freely there.
3. Segmentation: a detected note whose frames the path gives to several melody notes is cut at the
   changes; pieces shorter than :data:`MIN_PIECE_S` join their neighbour. Every piece takes its
   melody note as target, unless its sung centre is more than :data:`ADDED_NOTE_CENTS` away from it:
   then it is a note the singer added (or an ornament's own note) and keeps the key's (or the
   nearest semitone's) target, as without a melody. So does a piece that shares its melody note
   with a piece sung nearer to it, when it is :data:`SHARED_NOTE_CENTS` away from both (an added
   note next to a melody note: the path gives both to the one melody note).

Examples
--------
>>> import numpy as np
>>> from melisma.analysis.melody import MelodyNote
>>> from melisma.analysis.notes import Note
>>> from melisma.analysis.pitch import PitchTrack, midi_to_hz
>>> midi = np.r_[np.full(60, 60.3), np.full(60, 62.2), np.full(60, 64.1)]      # three notes sung legato
>>> track = PitchTrack(0.005, midi_to_hz(midi), np.ones(180))
>>> one = [Note(0.0, 0.9, 62.0)]                                                # ... detected as one
>>> melody = [MelodyNote(0.05, 0.35, 60), MelodyNote(0.35, 0.65, 62), MelodyNote(0.65, 0.95, 64)]
>>> [(round(n.start_s, 2), n.target_midi) for n in align_melody(track, one, melody)]
[(0.0, 60.0), (0.3, 62.0), (0.6, 64.0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .notes import Note, assign_targets, note_centre
from .pitch import PitchTrack

if TYPE_CHECKING:  # pragma: no cover
    from .key import Scale
    from .melody import MelodyNote

__all__ = ["MelodyAlignment", "align_melody", "melody_path"]

#: Frame hop of the alignment (s).
ALIGN_HOP_S = 0.01
#: A sung note may sit this far outside its melody note's span at no timing cost (s) ...
TIME_TOLERANCE_S = 0.15
#: ... and costs this much per frame and second beyond it ...
TIME_COST_PER_S = 8.0
#: ... and much more beyond this (s).
MAX_DEVIATION_S = 1.5
FAR_COST_PER_S = 200.0
#: Cost cap of one voiced frame (semitones squared): a wrong note costs no more than 2 semitones.
PITCH_COST_CAP = 4.0
#: Cost of leaving a melody note out (in frame costs).
SKIP_COST = 6.0
#: Shortest piece a note is cut into (s).
MIN_PIECE_S = 0.06
#: A piece sung further than this from its melody note (cents) is a note the singer added ...
ADDED_NOTE_CENTS = 250.0
#: ... and so is one that shares its melody note with a nearer one, if this far from both (cents).
SHARED_NOTE_CENTS = 60.0


@dataclass
class MelodyAlignment:
    """The path of :func:`melody_path`: for every frame the melody note it belongs to.

    Attributes
    ----------
    hop_s : float
        Frame hop in seconds.
    state : np.ndarray
        Index of the melody note per frame (int).
    octave_shift : float
        Semitones added to the melody to reach the singer's register (a multiple of 12).
    cost : float
        Mean cost per voiced frame of the path (0 = every voiced frame on its melody note).
    """

    hop_s: float
    state: np.ndarray
    octave_shift: float
    cost: float


def _octave_shift(notes: Sequence[Note], melody: Sequence[MelodyNote]) -> float:
    ms = np.array([m.start_s for m in melody])
    me = np.array([m.end_s for m in melody])
    mm = np.array([m.midi for m in melody], dtype=np.float64)
    diffs = []
    for n in notes:
        ov = np.minimum(me, n.end_s) - np.maximum(ms, n.start_s)
        k = int(np.argmax(ov))
        if ov[k] > 0 and np.isfinite(n.midi):
            diffs.append(n.midi - mm[k])
    return 12.0 * round(float(np.median(diffs)) / 12.0) if diffs else 0.0


def melody_path(track: PitchTrack, melody: Sequence[MelodyNote], *, octave_shift: float = 0.0,
                hop_s: float = ALIGN_HOP_S) -> MelodyAlignment:
    """Viterbi path of the melody notes over the frames of ``track`` (see the module docstring).

    Parameters
    ----------
    track : PitchTrack
        The sung pitch.
    melody : sequence of MelodyNote
        The reference melody, in the take's time, sorted by start.
    octave_shift : float
        Semitones added to every melody note (the singer's register).
    hop_s : float
        Frame hop of the alignment.

    Returns
    -------
    MelodyAlignment
    """
    n_frames = max(1, int(np.ceil(len(track.hz) * track.hop_s / hop_s)))
    t = np.arange(n_frames) * hop_s
    idx = np.clip(np.rint(t / track.hop_s).astype(np.int64), 0, len(track.hz) - 1)
    hz = np.asarray(track.hz, dtype=np.float64)[idx]
    voiced = hz > 0
    p = np.where(voiced, 69.0 + 12.0 * np.log2(np.maximum(hz, 1e-9) / 440.0), 0.0)
    ms = np.array([m.start_s for m in melody], dtype=np.float64)
    me = np.array([m.end_s for m in melody], dtype=np.float64)
    q = np.array([m.midi for m in melody], dtype=np.float64) + octave_shift
    n_states = len(q)
    big = 1e9

    block = 256

    def cost_block(k0: int) -> np.ndarray:
        # frames k0.. : the distance in time outside every melody note's span, then the pitch distance
        tk = t[k0 : k0 + block, None]
        out_s = np.maximum(np.maximum(ms[None, :] - tk, tk - me[None, :]), 0.0)
        c = TIME_COST_PER_S * np.maximum(out_s - TIME_TOLERANCE_S, 0.0)
        c += FAR_COST_PER_S * np.maximum(out_s - MAX_DEVIATION_S, 0.0)  # steep, not a wall: an intro still aligns
        v = voiced[k0 : k0 + block]
        c[v] += np.minimum((p[k0 : k0 + block][v, None] - q[None, :]) ** 2, PITCH_COST_CAP)
        return c

    costs = cost_block(0)

    def cost(k: int) -> np.ndarray:
        nonlocal costs
        if k % block == 0 and k:
            costs = cost_block(k)
        return costs[k % block]

    acc = cost(0).copy()
    back = np.zeros((n_frames, n_states), dtype=np.int8)  # 0 stay, 1 from previous note, 2 skipped one
    adv = np.full(n_states, big)
    skip = np.full(n_states, big)
    for k in range(1, n_frames):
        adv[1:] = acc[:-1]
        skip[2:] = acc[:-2]
        skip[2:] += SKIP_COST
        b = back[k]
        moved = adv < acc
        best = np.where(moved, adv, acc)
        b[moved] = 1
        skipped = skip < best
        best[skipped] = skip[skipped]
        b[skipped] = 2
        best += cost(k)
        acc = np.minimum(best, big, out=best)
    state = np.empty(n_frames, dtype=np.int64)
    j = int(np.argmin(acc))
    total = float(acc[j])
    for k in range(n_frames - 1, -1, -1):
        state[k] = j
        j -= int(back[k, j])
    nv = int(voiced.sum())
    return MelodyAlignment(hop_s=hop_s, state=state, octave_shift=octave_shift, cost=total / max(nv, 1))


def align_melody(
    track: PitchTrack,
    notes: Sequence[Note],
    melody: Sequence[MelodyNote],
    *,
    scale: Scale | None = None,
    key_confidence: float = 1.0,
) -> list[Note]:
    """Notes cut by the aligned melody, each with its melody note as target (see the module docstring).

    Parameters
    ----------
    track : PitchTrack
        The sung pitch the notes were segmented from.
    notes : sequence of Note
        The detected notes (:func:`~melisma.analysis.notes.segment_notes`).
    melody : sequence of MelodyNote
        The reference melody in the take's time.
    scale, key_confidence
        The target of notes the singer added (not in the melody), as in
        :func:`~melisma.analysis.notes.assign_targets`.

    Returns
    -------
    list of Note, in time order, with ``target_midi`` and ``cents_error`` set.
    """
    notes = [n for n in notes if np.isfinite(n.midi)]
    if not notes or not melody:
        return assign_targets(notes, scale=scale, key_confidence=key_confidence, track=track)
    melody = sorted(melody, key=lambda m: (m.start_s, m.midi))
    shift = _octave_shift(notes, melody)
    path = melody_path(track, melody, octave_shift=shift)
    q = np.array([m.midi for m in melody], dtype=np.float64) + shift
    midi = track.midi
    hop = track.hop_s
    min_piece = max(1, int(round(MIN_PIECE_S / path.hop_s)))
    out: list[Note] = []
    fallback: list[int] = []
    assigned: list[int] = []  # melody note of every piece (-1: added)
    for note in notes:
        a = int(np.floor(note.start_s / path.hop_s + 1e-9))
        b = max(a + 1, int(np.ceil(note.end_s / path.hop_s - 1e-9)))
        states = path.state[a:b]
        pieces = _pieces(states, min_piece, pitch=q)
        if len(pieces) > 1:
            pieces = _absorb_stray_pieces(pieces, midi, q, note_start=note.start_s, a=a, hop=hop, align_hop=path.hop_s)
        for s0, s1, j in pieces:
            t0 = note.start_s if s0 == 0 else (a + s0) * path.hop_s
            t1 = note.end_s if s1 == len(states) else (a + s1) * path.hop_s
            if len(pieces) == 1:
                centre = note.midi
            else:
                seg = midi[int(round(t0 / hop)) : max(int(round(t0 / hop)) + 1, int(round(t1 / hop)))]
                centre = note_centre(seg, hop_s=hop)
                if not np.isfinite(centre):
                    centre = note.midi
            piece = replace(note, start_s=t0, end_s=t1, midi=float(centre))
            if abs(100.0 * (centre - q[j])) > ADDED_NOTE_CENTS:
                fallback.append(len(out))
                assigned.append(-1)
                out.append(piece)
                continue
            assigned.append(j)
            target = float(q[j])
            out.append(replace(piece, target_midi=target, cents_error=100.0 * (piece.midi - target)))
    # one melody note sung as two notes of different pitch: the nearer keeps it, the other was added
    by_note: dict[int, list[int]] = {}
    for i, j in enumerate(assigned):
        if j >= 0:
            by_note.setdefault(j, []).append(i)
    for j, members in by_note.items():
        if len(members) < 2:
            continue
        best = min(members, key=lambda i: abs(out[i].midi - q[j]))
        for i in members:
            if i != best and abs(100.0 * (out[i].midi - q[j])) > SHARED_NOTE_CENTS and \
                    abs(out[i].midi - out[best].midi) > SHARED_NOTE_CENTS / 100.0:
                fallback.append(i)
    if fallback:
        fixed = assign_targets([out[i] for i in fallback], scale=scale, key_confidence=key_confidence, track=track)
        for i, n in zip(fallback, fixed, strict=True):
            out[i] = n
    return out


#: A piece of a cut note shorter than this (s), sung far from its melody note, is the note's own
#: ornament (a fall, a scoop): it stays with the piece next to it instead of becoming an added note.
MIN_ADDED_S = 0.12


def _absorb_stray_pieces(pieces: list[tuple[int, int, int]], midi: np.ndarray, q: np.ndarray, *, note_start: float,
                         a: int, hop: float, align_hop: float) -> list[tuple[int, int, int]]:
    out = list(pieces)
    i = 0
    while len(out) > 1 and i < len(out):
        s0, s1, j = out[i]
        seg = midi[int(round((a + s0) * align_hop / hop)) : max(int(round((a + s0) * align_hop / hop)) + 1,
                                                                int(round((a + s1) * align_hop / hop)))]
        c = note_centre(seg, hop_s=hop)
        if (s1 - s0) * align_hop < MIN_ADDED_S and (not np.isfinite(c) or abs(100.0 * (c - q[j])) > ADDED_NOTE_CENTS):
            k = i - 1 if i > 0 else i + 1
            lo, hi = min(i, k), max(i, k)
            out[lo : hi + 1] = [(out[lo][0], out[hi][1], out[k][2])]
            i = 0
            continue
        i += 1
    return out


def _pieces(states: np.ndarray, min_piece: int, *, pitch: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs ``(start, stop, melody note)`` of ``states``; runs shorter than ``min_piece`` join a neighbour.

    Melody notes of one pitch in a row are one run (where the path moves between them inside one
    sung note is arbitrary: nothing to cut at).
    """
    if len(states) == 0:
        return []
    same = np.r_[False, pitch[states[1:]] == pitch[states[:-1]]]
    states = states.copy()
    for k in np.flatnonzero(same):
        states[k] = states[k - 1]
    change = np.flatnonzero(np.diff(states)) + 1
    starts = np.r_[0, change]
    stops = np.r_[change, len(states)]
    runs = [[int(s0), int(s1), int(states[s0])] for s0, s1 in zip(starts, stops, strict=True)]
    while len(runs) > 1:
        lengths = [r[1] - r[0] for r in runs]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_piece:
            break
        if i == 0:
            j = 1
        elif i == len(runs) - 1:
            j = i - 1
        else:
            j = i - 1 if lengths[i - 1] >= lengths[i + 1] else i + 1
        lo, hi = min(i, j), max(i, j)
        keep = runs[j][2]
        runs[lo : hi + 1] = [[runs[lo][0], runs[hi][1], keep]]
    return [(r[0], r[1], r[2]) for r in runs]
