"""Note segmentation of an f0 track, and the target pitch of every note.

A note is a stretch of voiced f0 around one pitch *level*. Its ``midi`` is the level the singer
held (the centre), not the pitch of its first frame: grace notes, scoops (slide_in), falls
(slide_out), vibrato and trills are ornaments *of* the note (see :mod:`melisma.analysis.ornaments`),
so they neither split a note nor move its centre.

How it works:

1. Voiced regions: unvoiced gaps shorter than ``bridge_gap_ms`` are bridged (a consonant or a
   tracker drop-out inside a legato line); each region is segmented on its own; a region shorter
   than :data:`MIN_ISOLATED_S` alone between rests is a blip, no note. With the audio, two notes
   of one pitch either side of a longer gap (up to :data:`DROPOUT_MAX_S`) are one note when the
   energy does not dip through it (:data:`DROPOUT_DIP_DB`): the tracker lost the voice, the
   singer did not rest.
2. Level changes inside a region: ``D(t)`` = mean pitch over the ``window_ms`` after ``t`` minus the
   mean over the ``window_ms`` before it. A window of about one vibrato period averages vibrato and
   trills out, so peaks of ``|D|`` mark a new level (a legato step or a portamento). Fast passages
   (notes of 80-150 ms) get a second look with a :data:`FAST_WINDOW_S` window, except where the
   curve oscillates at 4-12 Hz (vibrato, trills: :func:`~melisma.analysis.contour.periodic_runs`).
   The boundary is put where the pitch crosses halfway between the two levels.
   Before that, the tracker's octave flips are folded back (:func:`_fold_octave_jumps`): the
   frames between an instant 12-semitone jump and the next jump too big to sing in one frame
   move to their longer neighbours' octave.
3. With the audio (``audio``/``sr``, as the engine gives it) the energy envelope decides too: a
   level change next to an articulation (an energy dip of :data:`DIP_DB` within
   :data:`DIP_SEARCH_S`: the voiced consonant between two syllables) is a new note from
   :data:`DIP_SPLIT_CENTS`, and starts where the energy is back half way up (the vowel), not
   before the crossing; without one it needs :data:`NODIP_SPLIT_CENTS` (amateur singers waver by
   more than ``split_cents`` inside one syllable) and starts :data:`ARRIVE` of the way from the
   crossing to where the pitch arrives, or, for a step down that falls past the new note and
   comes back up as the energy rises (:data:`UNDERSHOOT_SEMITONES`), at the bottom of that fall
   (the next syllable's vowel). A dip of :data:`REPEAT_DIP_DB` between two held stretches
   splits even notes of one pitch (a repeated note; the new one starts where the energy is back
   half way up), and no neighbour merges across it; inside a vibrato only a dip of
   :data:`TREMOLO_MAX_DB` or more does (a vibrato's loudness swings with it). Without the audio,
   ``split_cents`` alone.
4. Clean-up: a segment shorter than ``min_note_ms`` (a grace note, a mordent, a glitch) joins the
   neighbour it is connected to (the next one first: grace notes lead *into* their note), unless it
   is one of :data:`FAST_RUN_NOTES` or more short held notes in a row (a melisma); a segment that is
   only a ramp (no part of it holds still) joins the neighbour it glides to or from, and a note that
   holds still stays one when a scoop joins it; neighbours less than ``merge_cents`` apart are one
   note, unless an articulation splits them. Before that, a slow scoop from below (up to 300 ms
   rising steadily into a note, :func:`_is_scoop`) joins its note, and so, with the audio, does the
   first segment after a rest when it starts low and rises into the next one, or starts high and
   falls into it, without an articulation (:func:`_is_attack_scoop`): amateur singers find a note
   that way.
5. Centre: the median of the vibrato-smoothed pitch over the part of the note near its level
   (:func:`note_centre`: frames a semitone or more from the median dropped first, then iteratively,
   so a tracker glitch, a scoop or a fall does not pull it); for a trill, the level it starts on
   (the main note), since the upper note is the ornament.

With a reference melody, :func:`melisma.analysis.melody_align.align_melody` then cuts the notes
the melody says are several and gives each its melody note as target. Measured on real singing
against basic-pitch and a pYIN note tracker: ``tools/eval_notes.py`` and firmware/docs/notes.md.

Examples
--------
>>> import numpy as np
>>> from melisma.analysis.pitch import PitchTrack, midi_to_hz
>>> midi = np.r_[np.full(100, 60.2), np.full(100, 62.0), np.zeros(20)]
>>> hz = np.where(midi > 0, midi_to_hz(midi), 0.0)
>>> notes = segment_notes(PitchTrack(0.005, hz, np.ones_like(hz)))
>>> [(round(n.start_s, 2), round(n.midi, 1)) for n in notes]
[(0.0, 60.2), (0.5, 62.0)]
>>> [round(n.cents_error) for n in assign_targets(notes)]
[20, 0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from ..errors import AnalysisError
from .contour import fill_gaps, periodic_runs, smooth_midi, trill_levels, voiced_regions
from .pitch import PitchTrack

if TYPE_CHECKING:  # pragma: no cover
    from .key import Scale
    from .melody import MelodyNote

__all__ = ["Note", "assign_targets", "segment_notes", "smooth_midi", "stable_median", "voiced_regions"]


@dataclass
class Note:
    """One sung note.

    Attributes
    ----------
    start_s, end_s : float
        Span in seconds (its ornaments at the start and end included).
    midi : float
        Sung centre as a float MIDI number.
    target_midi : float or None
        Pitch it should have (set by :func:`assign_targets`).
    cents_error : float or None
        ``100 * (midi - target_midi)``.
    confidence : float
        Mean tracker confidence over the note, 0..1.
    """

    start_s: float
    end_s: float
    midi: float
    target_midi: float | None = None
    cents_error: float | None = None
    confidence: float = 1.0

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("start_s", "end_s"):
            d[k] = round(float(d[k]), 4)
        d["midi"] = round(float(d["midi"]), 3)
        d["confidence"] = round(float(d["confidence"]), 3)
        if d["target_midi"] is not None:
            d["target_midi"] = float(d["target_midi"])
        if d["cents_error"] is not None:
            d["cents_error"] = round(float(d["cents_error"]), 1)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Note:
        try:
            return cls(
                start_s=float(d["start_s"]),
                end_s=float(d["end_s"]),
                midi=float(d["midi"]),
                target_midi=None if d.get("target_midi") is None else float(d["target_midi"]),
                cents_error=None if d.get("cents_error") is None else float(d["cents_error"]),
                confidence=float(d.get("confidence", 1.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AnalysisError(f"not a note dict ({exc!r}); expected start_s, end_s, midi") from None


# --------------------------------------------------------------------------------------------
# curve helpers (shared with ornaments.py)


def _window_means(m: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the ``w`` frames before each frame and of the ``w`` frames from it (shrunk at edges)."""
    n = len(m)
    cs = np.r_[0.0, np.cumsum(m)]
    idx = np.arange(n)
    lo = np.maximum(idx - w, 0)
    hi = np.minimum(idx + w, n)
    before = np.where(idx > lo, (cs[idx] - cs[lo]) / np.maximum(idx - lo, 1), np.nan)
    after = (cs[hi] - cs[idx]) / np.maximum(hi - idx, 1)
    return before, after


def note_centre(midi: np.ndarray, *, hop_s: float, tolerance_cents: float = 150.0) -> float:
    """Robust centre of one note's pitch curve (float MIDI; NaN frames ignored).

    Frames more than :data:`CENTRE_OUTLIER_SEMITONES` from the frames' median are dropped first
    (tracker glitches and flips: smoothed with the rest, a 15-ms glitch 5 semitones low put a
    300-ms note's centre 33 cents flat). Then the median of the vibrato-smoothed curve (150 ms),
    again over the frames within ``tolerance_cents`` of it, twice, so a scoop or a fall at the
    edges does not pull it. Measured (session 18): SSVD v2's 126 recordings COnP 0.845 -> 0.847;
    30 generated takes with known notes, |error| p90 5.5 -> 4.4 cents and 16 -> 9 notes more than
    25 cents off.

    >>> import numpy as np
    >>> t = np.arange(100) * 0.01
    >>> vibrato = 60.0 + 0.8 * np.sin(2 * np.pi * 5.5 * t)
    >>> scoop = np.linspace(57.0, 60.0, 15)
    >>> round(note_centre(np.r_[scoop, vibrato], hop_s=0.01), 1)
    60.0
    """
    m = np.asarray(midi, dtype=np.float64)
    m = m[np.isfinite(m)]
    if m.size == 0:
        return float("nan")
    keep = np.abs(m - np.median(m)) < CENTRE_OUTLIER_SEMITONES
    if keep.sum() >= 3:
        m = m[keep]
    s = smooth_midi(m, frames=_odd(0.15 / hop_s))
    c = float(np.median(s))
    for _ in range(2):
        near = np.abs(s - c) < tolerance_cents / 100.0
        if near.sum() < max(3, 0.2 * len(s)):
            break
        c = float(np.median(s[near]))
    return c


#: Frames this far (semitones) from a note's median are no part of its level (glitches, flips).
CENTRE_OUTLIER_SEMITONES = 1.0


def _odd(x: float) -> int:
    return max(1, int(round(x)) | 1)


# --------------------------------------------------------------------------------------------
# segmentation


def segment_notes(
    track: PitchTrack,
    *,
    min_note_ms: float = 120.0,
    split_cents: float = 65.0,
    merge_cents: float = 40.0,
    window_ms: float = 150.0,
    bridge_gap_ms: float = 30.0,
    min_confidence: float = 0.0,
    audio: np.ndarray | None = None,
    sr: int | None = None,
) -> list[Note]:
    """Cut an f0 track into notes (see the module docstring for the method).

    Parameters
    ----------
    track : PitchTrack
    min_note_ms : float
        Shorter segments are ornaments of a neighbour (grace notes run 30-150 ms).
    split_cents : float
        Smallest level change between two legato notes.
    merge_cents : float
        Neighbours closer than this are one note.
    window_ms : float
        Averaging window either side of a candidate boundary (about one vibrato period).
    bridge_gap_ms : float
        Unvoiced gaps up to this long do not end a note.
    min_confidence : float
        Frames with lower tracker confidence count as unvoiced.
    audio, sr : np.ndarray and int, optional
        The audio the track was made from (mono). Its energy envelope places a legato boundary at
        the articulation (the dip of a voiced consonant) next to the pitch step, and splits repeated
        notes of one pitch at a clear dip; without it only the pitch curve is used.

    Returns
    -------
    list of Note, in time order, ``target_midi`` unset.
    """
    hop_s = track.hop_s
    voiced = (track.hz > 0) & (track.confidence >= min_confidence)
    midi_all = np.where(voiced, track.midi, np.nan)
    min_frames = max(2, int(round(min_note_ms / 1000.0 / hop_s)))
    w = max(2, int(round(window_ms / 1000.0 / hop_s)))
    env = energy_envelope(audio, sr=sr, hop_s=hop_s, n_frames=len(track.hz)) if audio is not None and sr else None
    pieces: list[Piece] = []
    for a, b in voiced_regions(voiced, bridge_frames=int(round(bridge_gap_ms / 1000.0 / hop_s))):
        if b - a < max(3, min_frames // 2, int(round(MIN_ISOLATED_S / hop_s))):
            continue  # a blip: too short to be a note
        region = _fold_octave_jumps(midi_all[a:b])
        m = fill_gaps(region)
        if DESPIKE_S:
            # a tracker glitch of a few frames that the octave fold left (no instant jump) is no level change
            from scipy.ndimage import median_filter

            med = median_filter(m, size=_odd(DESPIKE_S / hop_s), mode="nearest")
            m = np.where(np.abs(m - med) > GLITCH_SEMITONES, med, m)  # only outliers: vibrato keeps its shape
        for s0, s1 in _split_region(m, w=w, hop_s=hop_s, min_frames=min_frames, split=split_cents / 100.0,
                                    merge=merge_cents / 100.0, env=None if env is None else env[a:b]):
            seg = region[s0:s1]
            pieces.append((a + s0, a + s1, seg, _centre_with_trill(seg, hop_s)))
    if env is not None:
        pieces = _bridge_dropouts(pieces, env, hop_s=hop_s, merge=merge_cents / 100.0)
    return [Note(start_s=k0 * hop_s, end_s=k1 * hop_s, midi=centre, confidence=float(np.mean(track.confidence[k0:k1])))
            for k0, k1, _seg, centre in pieces if np.isfinite(centre)]


#: An unvoiced gap up to this long (s) between two notes of one pitch is the tracker losing the
#: voice, not a rest, when the energy holds through it ...
DROPOUT_MAX_S = 0.2
#: ... within this many dB of the quieter side's loudest frame (SSVD, tools/eval_notes.py: 37 gaps
#: inside annotated notes dipped 0-3 dB, the 259 rests between repeated notes 15-40 dB).
DROPOUT_DIP_DB = 6.0
#: How far either side of the gap its level is read (s).
DROPOUT_LEVEL_S = 0.1


#: A note before it is made one: (first frame, end frame, its pitch frames, its centre).
Piece = tuple[int, int, np.ndarray, float]


def _bridge_dropouts(pieces: list[Piece], env: np.ndarray, *, hop_s: float, merge: float) -> list[Piece]:
    """Neighbouring notes of one pitch (centres within ``merge`` semitones) joined across an
    unvoiced gap that the energy does not dip through: the voice went on and only its pitch was lost.
    """
    if not pieces:
        return pieces
    reach = max(1, int(round(DROPOUT_LEVEL_S / hop_s)))
    out = [pieces[0]]
    for k0, k1, seg, centre in pieces[1:]:
        p0, p1, pseg, pcentre = out[-1]
        gap = k0 - p1
        if 0 < gap <= DROPOUT_MAX_S / hop_s and abs(centre - pcentre) < merge:
            level = min(float(np.max(env[max(0, p1 - reach) : p1])), float(np.max(env[k0 : k0 + reach])))
            if level - float(np.min(env[p1:k0])) < DROPOUT_DIP_DB:
                joined = np.concatenate((pseg, np.full(gap, np.nan), seg))
                out[-1] = (p0, k1, joined, _centre_with_trill(joined, hop_s))
                continue
        out.append((k0, k1, seg, centre))
    return out


#: A jump this close to an octave (semitones) from one voiced frame to the next is the tracker
#: flipping octave, not the singer: no voice moves 12 semitones in one frame (a sung leap glides).
OCTAVE_JUMP_TOLERANCE = 0.6


def _fold_octave_jumps(midi: np.ndarray) -> np.ndarray:
    """A voiced stretch's pitch with the tracker's octave flips folded back: the frames between an
    instant octave jump and the next jump of :data:`GLITCH_SEMITONES` or more (or the stretch's
    end) that last less than the frames on the other side move by 12 semitones to their level
    (SSVD, tools/eval_notes.py: 41 such pieces had become notes of their own, an octave off; a flip
    back that lands on the next note, a semitone away, is no octave but ends the piece too).
    """
    ok = np.flatnonzero(np.isfinite(midi))
    if ok.size < 3:
        return midi
    x = midi[ok].astype(np.float64)
    step = np.abs(np.diff(x))
    octave = np.abs(step - 12.0) <= OCTAVE_JUMP_TOLERANCE
    if not octave.any():
        return midi
    # a piece ends at any jump too big to sing in one frame: a flip back can land on the next note
    jumps = np.flatnonzero(octave | (step >= GLITCH_SEMITONES)) + 1
    edges = np.r_[0, jumps, x.size]
    pieces = [(int(p0), int(p1)) for p0, p1 in pairwise(edges)]
    for i, (p0, p1) in enumerate(pieces):
        sides = pieces[max(0, i - 1) : i] + pieces[i + 1 : i + 2]
        if p1 - p0 >= max(q1 - q0 for q0, q1 in sides):
            continue  # the longer side is taken for the voice's own octave
        if not ((p0 > 0 and octave[p0 - 1]) or (p1 < x.size and octave[p1 - 1])):
            continue  # no octave flip at either end
        levels = ([x[p0 - 1]] if i > 0 else []) + ([x[p1]] if i + 1 < len(pieces) else [])
        shift = 12.0 * np.round((float(np.median(levels)) - x[p0]) / 12.0)
        if abs(shift) == 12.0:
            x[p0:p1] += shift
    out = midi.astype(np.float64, copy=True)
    out[ok] = x
    return out


def energy_envelope(audio: np.ndarray, *, sr: int, hop_s: float, n_frames: int, window_s: float = 0.025) -> np.ndarray:
    """Energy in dB of ``window_s`` windows centred on the frames of a track (hop ``hop_s``).

    >>> e = energy_envelope(np.r_[np.zeros(800), np.ones(800)], sr=8000, hop_s=0.05, n_frames=4)
    >>> (e[3] - e[0]) > 60
    True
    """
    y = np.asarray(audio)
    if y.ndim > 1:
        y = np.asarray(y, dtype=np.float64)
        y = y.mean(axis=0) if y.shape[0] < y.shape[-1] else y.mean(axis=1)
    win = max(1, int(round(window_s * sr)))
    # The running energy of the take padded by win // 2 zeros before and win // 2 + 1 after, taken
    # a block at a time (its running sum carried over: a cumulative sum is sequential, so the values
    # are the whole-array ones bit for bit) and kept only where a window starts or ends: no
    # take-length float64 array (a 3-minute take's took ~90 MB).
    pad = win // 2
    n_padded = y.shape[0] + 2 * pad + 1
    idx = np.clip(np.rint(np.arange(n_frames) * hop_s * sr).astype(np.int64), 0, n_padded - win)
    want = np.unique(np.concatenate((idx, idx + win)))  # positions j of cs[j] = sum of yp[:j] ** 2
    cs = np.zeros(want.size)
    k = int(np.searchsorted(want, 0, side="right"))  # cs[0] = 0
    carry = 0.0
    block = 1 << 16
    for p in range(0, n_padded, block):
        q = min(p + block, n_padded)
        seg = np.zeros(q - p)
        a, b = max(p - pad, 0), min(q - pad, y.shape[0])  # the take's samples inside yp[p:q]
        if b > a:
            seg[a + pad - p : b + pad - p] = y[a:b]
        run = np.cumsum(np.concatenate(([carry], seg * seg)))  # run[i] = cs[p + i]
        hi = int(np.searchsorted(want, q, side="right"))
        cs[k:hi] = run[want[k:hi] - p]
        k, carry = hi, float(run[-1])
    e = (cs[np.searchsorted(want, idx + win)] - cs[np.searchsorted(want, idx)]) / win
    return 10.0 * np.log10(e + 1e-12)


#: A dip of the energy this deep (dB, below the lower of the maxima either side) is an articulation.
DIP_DB = 3.0
#: How far from a pitch step its articulation is looked for (s).
DIP_SEARCH_S = 0.05
#: With an articulation (a dip of DIP_DB or more) a level change this small (cents) is a new note.
DIP_SPLIT_CENTS = 40.0
#: ... and without one, this large (cents): amateur singers waver by more than split_cents in one syllable.
NODIP_SPLIT_CENTS = 80.0


def _dip_near(env: np.ndarray, pos: int, *, lo: int, hi: int, reach: int) -> tuple[float, int]:
    """``(depth dB, end)`` of the deepest energy dip within ``reach`` of ``pos``: ``end`` is where the
    energy is back half way up (the vowel's onset after a voiced consonant); ``(0, pos)`` if none.
    """
    a, b = max(lo + 1, pos - reach), min(hi - 1, pos + reach)
    if b - a < 3:
        return 0.0, pos
    k = a + int(np.argmin(env[a:b]))
    left = float(np.max(env[max(lo, k - 2 * reach) : k + 1]))
    right = float(np.max(env[k : min(hi, k + 2 * reach)]))
    depth = min(left, right) - float(env[k])
    half = env[k] + 0.5 * (right - env[k])
    up = np.flatnonzero(env[k : min(hi, k + 2 * reach)] >= half)
    return depth, (k + int(up[0]) if up.size else k)


#: An unarticulated change starts this far from the halfway crossing towards where the pitch arrives
#: (within 30 cents of the new level): the real annotations put it there (tools/eval_notes.py).
ARRIVE = 0.5
#: Frames further than GLITCH_SEMITONES from the pitch's median over DESPIKE_S (s) are tracker glitches
#: (an octave jump for a few frames), no level change: they take that median before segmentation.
DESPIKE_S = 0.105
GLITCH_SEMITONES = 6.0
#: A voiced stretch shorter than this, alone between rests, is a blip (a breath, a click), no note (s).
MIN_ISOLATED_S = 0.09


#: A step down that falls past the new note and comes back up (an undershoot of at least
#: UNDERSHOOT_SEMITONES within UNDERSHOOT_SEARCH_S of the change) starts at the bottom of that fall
#: when the energy rises there by UNDERSHOOT_RISE_DB within VOWEL_RISE_S: the vowel comes in as the
#: pitch comes back (real sight-singing, tools/eval_notes.py: SSVD COnP +0.007; vocadito unchanged).
UNDERSHOOT_SEARCH_S = 0.15
UNDERSHOOT_SEMITONES = 0.3
UNDERSHOOT_RISE_DB = 1.5
VOWEL_RISE_S = 0.05


def _after_undershoot(m: np.ndarray, light: np.ndarray, env: np.ndarray, pos: int, *, kw: int, hop_s: float) -> int:
    """Where a step down that starts at ``pos`` really begins: the bottom of a fall past the new note
    when the vowel comes in there (see UNDERSHOOT_SEMITONES), else ``pos``.
    """
    n = len(m)
    seg = light[pos : min(n, pos + int(round(UNDERSHOOT_SEARCH_S / hop_s)))]
    if seg.size < 3 or not np.isfinite(seg).all():
        return pos
    x = int(np.argmin(seg))
    if not 0 < x < seg.size - 1:
        return pos  # still falling at the end of the look (a long slide), or no fall at all
    settled = float(np.median(m[pos + x : min(n, pos + x + kw)]))
    if not settled - float(seg[x]) > UNDERSHOOT_SEMITONES:
        return pos
    rise = env[pos + x : min(n, pos + x + int(round(VOWEL_RISE_S / hop_s)) + 1)]
    if not float(np.max(rise)) - float(np.min(env[pos : pos + x + 1])) >= UNDERSHOOT_RISE_DB:
        return pos  # no vowel coming in: the fall past the note and back is the singer's own line
    return pos + x


def _split_region(m: np.ndarray, *, w: int, hop_s: float, min_frames: int, split: float, merge: float,
                  env: np.ndarray | None = None) -> list[tuple[int, int]]:
    n = len(m)
    if n < 2 * min_frames:
        return [(0, n)]
    before, after = _window_means(m, w)
    d = after - before
    # both windows need real support: no boundary in the first/last few frames
    d[: max(3, w // 3)] = 0.0
    d[n - max(3, w // 3) :] = 0.0
    d = np.nan_to_num(d)
    ad = np.abs(d)
    peaks = []
    # local maxima of |D| above the threshold, at least w/2 apart (strongest first within a run)
    low = min(split, DIP_SPLIT_CENTS / 100.0) if env is not None else split
    above = ad > low
    for r0, r1 in voiced_regions(above):
        k = r0 + int(np.argmax(ad[r0:r1]))
        peaks.append((k, w))
    # fast passages: the same on a short window, where the curve does not oscillate (vibrato, trill)
    osc = _oscillating(m, hop_s)
    ws = max(2, int(round(FAST_WINDOW_S / hop_s)))
    if ws < w:
        bs, as_ = _window_means(m, ws)
        ds = np.nan_to_num(as_ - bs)
        ds[: max(3, ws // 2)] = 0.0
        ds[n - max(3, ws // 2) :] = 0.0
        ds[osc] = 0.0
        for r0, r1 in voiced_regions(np.abs(ds) > low):
            k = r0 + int(np.argmax(np.abs(ds[r0:r1])))
            if all(abs(k - p) > ws for p, _ in peaks):
                peaks.append((k, ws))
        peaks.sort()
        before_s, after_s = bs, as_
    bounds = [0]
    articulated: set[int] = set()
    light = smooth_midi(m, frames=3)
    for k, kw in peaks:
        lo_level, hi_level = (before[k], after[k]) if kw == w else (before_s[k], after_s[k])
        half = 0.5 * (lo_level + hi_level)
        # refine: the crossing of the halfway level nearest to the peak, within +-w frames
        j0, j1 = max(1, k - kw), min(n - 1, k + kw)
        sgn = np.sign(light[j0:j1] - half)
        cross = np.flatnonzero(sgn[1:] != sgn[:-1])
        pos = j0 + 1 + int(cross[np.argmin(np.abs(j0 + 1 + cross - k))]) if cross.size else k
        step = abs(hi_level - lo_level)
        if env is not None:
            depth, end = _dip_near(env, pos, lo=bounds[-1], hi=n, reach=max(2, int(round(DIP_SEARCH_S / hop_s))))
            if depth >= DIP_DB:
                pos = max(pos, end)  # an articulated change: it starts where the vowel does, not before the crossing
                articulated.add(pos)
            elif step < max(split, NODIP_SPLIT_CENTS / 100.0):
                continue  # small step and no articulation: the singer's pitch wavering in one note
            else:
                level = float(np.median(m[pos : min(n, pos + kw)]))
                near = np.flatnonzero(np.abs(light[pos : pos + kw] - level) < 0.3)
                if near.size:
                    pos += int(round(ARRIVE * near[0]))
                if hi_level < lo_level:
                    pos = _after_undershoot(m, light, env, pos, kw=kw, hop_s=hop_s)
        elif step < split:
            continue
        if pos - bounds[-1] >= 2:
            bounds.append(pos)
    hard: set[int] = set()
    if env is not None and REPEAT_DIP_DB:
        # repeated notes of one pitch: a deep dip of the energy between two held stretches
        for k, depth, right in _deep_dips(env, hop_s=hop_s, depth_db=REPEAT_DIP_DB, min_frames=min_frames):
            # not inside a vibrato or trill: its loudness swings with it (tremolo), though never by
            # TREMOLO_MAX_DB (a dip that deep is a break, and its pitch dip can read as a swing)
            if depth < TREMOLO_MAX_DB and osc[max(0, k - min_frames) : k + min_frames].any():
                continue
            close = [b for b in bounds[1:] if abs(k - b) < min_frames]
            if close:  # the pitch step already put a boundary at this articulation: it is a repeated note's too
                hard.add(min(close, key=lambda b: abs(k - b)))
            else:  # the new note starts where the energy is back half way up (its vowel), not at the dip
                up = np.flatnonzero(env[k : k + min_frames + 1] >= env[k] + 0.5 * (right - float(env[k])))
                k = k + int(up[0]) if up.size else k
                bounds.append(k)
                hard.add(k)
        bounds.sort()
    bounds.append(n)
    segs = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    return _merge_segments(m, segs, hop_s=hop_s, min_frames=min_frames, merge=merge, hard=hard,
                           articulated=articulated | hard if env is not None else None)


#: Window of the second, short look for level changes (s): notes of fast passages last 80-150 ms.
FAST_WINDOW_S = 0.05
#: A dip this deep (dB) between two held stretches splits even notes of the same pitch (0: never).
REPEAT_DIP_DB = 8.0
#: A vibrato's loudness swing (tremolo) stays under this (dB): a deeper dip splits even inside one.
TREMOLO_MAX_DB = 15.0


def _oscillating(m: np.ndarray, hop_s: float) -> np.ndarray:
    """Frames inside a vibrato or trill (a periodic swing of 4-12 Hz), where short-window steps are no notes."""
    out = np.zeros(len(m), dtype=bool)
    ok = np.isfinite(m)
    if ok.sum() < 10:
        return out
    base = float(np.median(m[ok]))
    for r in periodic_runs(100.0 * (m - base), hop_s, min_swing=25.0, min_half_cycles=3):
        out[r.i0 : r.i1] = True
    return out


def _deep_dips(env: np.ndarray, *, hop_s: float, depth_db: float,
               min_frames: int) -> list[tuple[int, float, float]]:
    """``(frame, depth dB, maximum after it)`` where the energy dips ``depth_db`` or more below the
    maxima of the ``min_frames`` either side.
    """
    n = len(env)
    out: list[tuple[int, float, float]] = []
    if n < 2 * min_frames + 1:
        return out
    r = min_frames
    k = r
    while k < n - r:
        left = float(np.max(env[k - r : k]))
        right = float(np.max(env[k + 1 : k + r + 1]))
        depth = min(left, right) - float(env[k])
        if depth >= depth_db and env[k] == np.min(env[max(0, k - r // 2) : k + r // 2 + 1]):
            out.append((k, depth, right))
            k += r
        else:
            k += 1
    return out


#: A segment that holds still (within 40 cents) for less than this is only a ramp between notes (s).
RAMP_HOLD_S = 0.06


def _is_ramp(m: np.ndarray, hop_s: float) -> bool:
    """True when a segment never holds still: its smoothed pitch stays within 40 cents of the
    median for less than 60 ms.
    """
    s = smooth_midi(m, frames=_odd(0.06 / hop_s))
    near = np.abs(s - np.median(s)) < 0.4
    return near.sum() * hop_s < RAMP_HOLD_S and (np.max(s) - np.min(s)) > 0.8


#: A segment up to this long (s) whose middle rises steadily ...
GLIDE_MAX_S = 0.3
#: ... at this rate or faster (semitones per second) into the note it runs into without a break, from
#: at most GLIDE_MAX_DEPTH below that note's level, is a slow scoop of that note, no note of its own (0: off).
GLIDE_MIN_ST_PER_S = 2.5
GLIDE_MAX_DEPTH = 1.3
#: The note a scoop leads into lasts at least this many times as long as the scoop.
GLIDE_NEXT_RATIO = 1.0
#: The glide's middle may wander this far (semitones, rms) from a straight line.
GLIDE_MAX_RESIDUAL = 0.12
#: The glide's last frames and the next note's first may be this far apart (semitones).
GLIDE_JOIN_SEMITONES = 0.6


def _is_scoop(m: np.ndarray, segs: list[tuple[int, int]], i: int, *, hop_s: float) -> bool:
    """Is segment ``i`` a slow scoop from below into the next segment (amateur singers' usual approach)?

    A segment of at most :data:`GLIDE_MAX_S` whose middle 60 % rises on a straight line (within
    :data:`GLIDE_MAX_RESIDUAL` rms) at :data:`GLIDE_MIN_ST_PER_S` or faster, whose median lies at
    most :data:`GLIDE_MAX_DEPTH` below the next note's level, and whose end runs into the next
    note's start without a jump; that note lasts at least :data:`GLIDE_NEXT_RATIO` times as long (a
    scoop leads into a note, not into the next short note of a run). A held note of a fast passage
    holds still in its middle, and a note a step of a tone or more below its neighbour is farther
    down, so neither is a scoop.
    Falls and approaches from above are left alone: on real singing they were as often notes.

    >>> import numpy as np
    >>> m = np.r_[np.linspace(57.0, 58.0, 32), np.full(100, 58.3)]  # 160 ms rising into a held note
    >>> _is_scoop(m, [(0, 32), (32, 132)], 0, hop_s=0.005)
    True
    >>> step = np.r_[np.full(32, 56.3), np.full(100, 58.3)]          # a held note a tone below
    >>> _is_scoop(step, [(0, 32), (32, 132)], 0, hop_s=0.005)
    False
    """
    s0, s1 = segs[i]
    n = s1 - s0
    if not GLIDE_MIN_ST_PER_S or n * hop_s > GLIDE_MAX_S or n < 8 or i + 1 >= len(segs) or segs[i + 1][0] != s1:
        return False
    s = smooth_midi(m[s0:s1], frames=_odd(0.03 / hop_s))
    a, b = int(0.2 * n), int(np.ceil(0.8 * n))
    t = np.arange(a, b) * hop_s
    slope, icpt = np.polyfit(t, s[a:b], 1)
    resid = float(np.sqrt(np.mean((s[a:b] - (slope * t + icpt)) ** 2)))
    if slope < GLIDE_MIN_ST_PER_S or resid > GLIDE_MAX_RESIDUAL:
        return False
    k = max(2, n // 8)
    nxt = segs[i + 1]
    if nxt[1] - nxt[0] < GLIDE_NEXT_RATIO * n:
        return False
    level = note_centre(m[nxt[0] : nxt[1]], hop_s=hop_s)
    start, end = float(np.median(m[s0 : s0 + k])), float(np.median(m[s1 - k : s1]))
    return (level > start and level - float(np.median(s)) <= GLIDE_MAX_DEPTH
            and abs(end - float(np.median(m[nxt[0] : nxt[0] + k]))) <= GLIDE_JOIN_SEMITONES)


#: The first segment after a rest, up to this long (s), ...
ATTACK_SCOOP_MAX_S = 0.25
#: ... that sits at most this far below the next one (semitones) and rises into it without a break or an
#: articulation, is the note's attack from below (the singer finding the pitch), no note of its own (0: off);
ATTACK_SCOOP_DEPTH = 2.5
#: ... and so is one at most this far above it that falls into it (0: off) ...
ATTACK_FALL_DEPTH = 2.0
#: ... when the next segment holds at least this many times as long.
ATTACK_NEXT_RATIO = 1.5


def _is_attack_scoop(m: np.ndarray, segs: list[tuple[int, int]], *, hop_s: float) -> bool:
    """Is the first segment of a voiced stretch the attack of the next one: a singer finding its pitch?

    It is at most :data:`ATTACK_SCOOP_MAX_S` long and either sits at most :data:`ATTACK_SCOOP_DEPTH`
    under the next segment's level and ends rising, or at most :data:`ATTACK_FALL_DEPTH` over it and
    ends falling; it ends within :data:`GLIDE_JOIN_SEMITONES` of the next segment's start, and the
    next segment holds at least :data:`ATTACK_NEXT_RATIO` times as long. (The caller checks that no
    articulation separates them.) On the SSVD sight-singing takes amateurs approach about as many
    notes from above as from below after a rest; kept apart, the approach became a wrong note.

    >>> import numpy as np
    >>> m = np.r_[np.full(16, 64.2), np.linspace(64.2, 66.0, 16), np.full(120, 66.2)]  # low, then up to the note
    >>> _is_attack_scoop(m, [(0, 32), (32, 152)], hop_s=0.005)
    True
    >>> fall = np.r_[np.full(16, 67.7), np.linspace(67.7, 66.4, 16), np.full(120, 66.2)]  # high, then down to it
    >>> _is_attack_scoop(fall, [(0, 32), (32, 152)], hop_s=0.005)
    True
    >>> step = np.r_[np.full(32, 64.2), np.full(120, 66.2)]  # a held note, then a step: a note of its own
    >>> _is_attack_scoop(step, [(0, 32), (32, 152)], hop_s=0.005)
    False
    """
    if len(segs) < 2 or segs[1][0] != segs[0][1]:
        return False
    (s0, s1), (t0, t1) = segs[0], segs[1]
    n = s1 - s0
    if n * hop_s > ATTACK_SCOOP_MAX_S or n < 8 or t1 - t0 < ATTACK_NEXT_RATIO * n:
        return False
    level = note_centre(m[t0:t1], hop_s=hop_s)
    below = level - float(np.median(m[s0:s1]))
    k = max(2, n // 8)
    end = float(np.median(m[s1 - k : s1]))
    if abs(end - float(np.median(m[t0 : t0 + k]))) > GLIDE_JOIN_SEMITONES:
        return False
    move = end - float(np.median(m[s1 - 3 * k : s1 - 2 * k]))
    return (0.0 < below <= ATTACK_SCOOP_DEPTH and move > 0.1) or (0.0 < -below <= ATTACK_FALL_DEPTH and move < -0.1)


def _merge_segments(m: np.ndarray, segs: list[tuple[int, int]], *, hop_s: float, min_frames: int, merge: float,
                    hard: set[int] | None = None, articulated: set[int] | None = None):
    segs = list(segs)
    hard = hard or set()
    # a segment that holds still somewhere stays a note when a scoop or grace note joins it
    held = [s1 - s0 >= min_frames and not _is_ramp(m[s0:s1], hop_s) for s0, s1 in segs]
    changed = True
    while changed and len(segs) > 1:
        changed = False
        # a slow scoop into a note is part of it, however long it holds the line (not across a repeated note's dip)
        for i in range(len(segs) - 1):
            if segs[i][1] in hard or (segs[i + 1][1] - segs[i][0]) * hop_s <= GLIDE_MAX_S:
                continue  # scoop and note together still short: the rules below decide
            attack = i == 0 and articulated is not None and segs[0][1] not in articulated
            if _is_scoop(m, segs, i, hop_s=hop_s) or (attack and _is_attack_scoop(m, segs, hop_s=hop_s)):
                segs[i : i + 2] = [(segs[i][0], segs[i + 1][1])]
                held[i : i + 2] = [held[i] or held[i + 1]]
                changed = True
                break
        if changed:
            continue
        # short or ramp-only segments join a neighbour
        for i, (s0, s1) in enumerate(segs):
            short = s1 - s0 < min_frames
            if not short and held[i]:
                continue
            if short and _in_run(m, segs, i, hop_s=hop_s, min_frames=min_frames):
                continue  # a note of a fast passage, not an ornament
            if i + 1 < len(segs) and (i == 0 or short):
                # grace notes and scoops lead into the next note
                j = i + 1 if (i == 0 or _closer_to_next(m, segs, i)) else i - 1
            elif i + 1 < len(segs):
                j = i + 1 if _closer_to_next(m, segs, i) else i - 1
            else:
                j = i - 1
            a, b = min(i, j), max(i, j)
            segs[a : b + 1] = [(segs[a][0], segs[b][1])]
            held[a : b + 1] = [any(held[a : b + 1])]
            changed = True
            break
        if changed:
            continue
        # neighbours at (almost) the same level are one note
        centres = [note_centre(m[s0:s1], hop_s=hop_s) for s0, s1 in segs]
        for i in range(len(segs) - 1):
            if abs(centres[i + 1] - centres[i]) < merge and segs[i][1] not in hard:
                segs[i : i + 2] = [(segs[i][0], segs[i + 1][1])]
                held[i : i + 2] = [held[i] or held[i + 1]]
                changed = True
                break
    return segs


#: Shortest note of a fast passage (s); a passage is at least this many short notes in a row.
FAST_NOTE_MIN_S = 0.06
FAST_RUN_NOTES = 4


def _in_run(m: np.ndarray, segs: list[tuple[int, int]], i: int, *, hop_s: float, min_frames: int) -> bool:
    """Is short segment ``i`` one of ``FAST_RUN_NOTES`` or more short held notes in a row (a melisma)?"""

    def held(j: int) -> bool:
        s0, s1 = segs[j]
        return (s1 - s0) * hop_s >= FAST_NOTE_MIN_S and s1 - s0 < 2 * min_frames and not _is_ramp(m[s0:s1], hop_s)

    if not held(i):
        return False
    lo = i
    while lo > 0 and held(lo - 1):
        lo -= 1
    hi = i
    while hi + 1 < len(segs) and held(hi + 1):
        hi += 1
    return hi - lo + 1 >= FAST_RUN_NOTES


def _closer_to_next(m: np.ndarray, segs: list[tuple[int, int]], i: int) -> bool:
    """Should segment ``i`` join the next segment (True) or the previous one?

    A segment leading into the next note (a grace note: short, then the main note) joins the next,
    unless its pitch at its end is far from the next note and its start is near the previous one.
    """
    s0, s1 = segs[i]
    nxt = segs[i + 1]
    prev = segs[i - 1]
    hop_frames = max(1, (s1 - s0) // 4)
    start_level = np.median(m[s0 : s0 + hop_frames])
    end_level = np.median(m[s1 - hop_frames : s1])
    next_level = np.median(m[nxt[0] : min(nxt[1], nxt[0] + 20)])
    prev_level = np.median(m[max(prev[0], prev[1] - 20) : prev[1]])
    # a fall-off: starts at the previous note's level and moves away
    return not (abs(start_level - prev_level) < 0.5 and abs(end_level - next_level) > abs(start_level - prev_level) + 0.5)


def _centre_with_trill(seg: np.ndarray, hop_s: float) -> float:
    """Centre of a note; for a trill (square-ish alternation between two levels) the level it starts on."""
    m = seg[np.isfinite(seg)]
    if m.size == 0:
        return float("nan")
    levels = trill_levels(m, hop_s=hop_s)
    if levels is not None:
        return levels[0]
    return note_centre(m, hop_s=hop_s)



# --------------------------------------------------------------------------------------------
# targets


def assign_targets(
    notes: Sequence[Note],
    *,
    scale: Scale | None = None,
    melody: Sequence[MelodyNote] | None = None,
    max_melody_distance_s: float = 0.3,
    key_confidence: float = 1.0,
    track: PitchTrack | None = None,
) -> list[Note]:
    """Give every note a target pitch and its ``cents_error``; returns new notes.

    Parameters
    ----------
    notes : sequence of Note
    scale : Scale, optional
        Snap to the nearest pitch of this scale (key, major/minor or pentatonic mode).
    melody : sequence of MelodyNote, optional
        A reference melody: each note takes the pitch of the melody note it overlaps most in time
        (or the nearest one within ``max_melody_distance_s``), moved by whole octaves to the
        register the singer sings in (one octave shift for the whole take, by the median). Notes
        with no melody note nearby fall back to ``scale`` or the nearest semitone.
    key_confidence : float
        How sure the key is, 0..1 (1 for a key the user gave). A note sung within
        :func:`in_tune_tolerance_cents` of a semitone keeps that semitone as its target even when it
        lies outside the scale (chromatic passing notes and blue notes are music, not mistakes); the
        tolerance grows as the key's confidence falls, so an unsure key moves fewer notes.
    track : PitchTrack, optional
        The f0 track the notes came from. A note's level centre (``midi``) leans toward where it
        holds still; the pitch a listener (or another tracker) hears over a wandering note is nearer
        the median of its middle (:func:`stable_median`, onset and offset transients left out). With
        the track, a note is in tune on a semitone when *either* centre lies within the tolerance of
        it, and that semitone is its target; a note whose two centres name different semitones and
        neither is in tune keeps the level centre's own semitone rather than being snapped farther by
        the key. So no note is moved to a semitone that neither view of it sang.
    With neither scale nor melody, the target is the nearest semitone (chromatic).

    Examples
    --------
    >>> from melisma.analysis.key import parse_key
    >>> n = assign_targets([Note(0.0, 0.5, 60.65)], scale=parse_key("C major"))[0]   # between C and C#
    >>> n.target_midi, round(n.cents_error)
    (60.0, 65)
    >>> blue = assign_targets([Note(0.0, 0.5, 63.1)], scale=parse_key("C major"))[0]   # an in-tune Eb
    >>> blue.target_midi, round(blue.cents_error)
    (63.0, 10)
    """
    tolerance = in_tune_tolerance_cents(key_confidence) / 100.0
    out: list[Note] = []
    mel_targets: list[float | None] = [None] * len(notes)
    if melody:
        mel_targets = _match_melody(notes, melody, max_distance_s=max_melody_distance_s)
    for note, mt in zip(notes, mel_targets, strict=False):
        if not np.isfinite(note.midi):
            out.append(replace(note, target_midi=None, cents_error=None))
            continue
        if mt is not None:
            target = float(mt)
        else:
            middle = None if track is None else stable_median(track, note)
            target, heard = _own_target(note.midi, middle, scale=scale, tolerance=tolerance)
            # in tune by its middle: the middle is the pitch it is heard at, and what correction moves
            note = replace(note, midi=heard)
        out.append(replace(note, target_midi=target, cents_error=100.0 * (note.midi - target)))
    return out


def _own_target(centre: float, middle: float | None, *, scale: Scale | None, tolerance: float) -> tuple[float, float]:
    """``(target, centre)`` of a note without a melody note: its own semitone when it is in tune on one, else the key's.

    ``centre`` is the note's level centre, ``middle`` the median of its middle (or None). A note
    whose middle is in tune on the target gets the middle as its centre (what the correction moves
    onto the target). Never a semitone that neither centre is nearest to: with the key's nearest pitch
    farther than that, the note keeps the level centre's own semitone.
    """
    views = [centre] if middle is None or not np.isfinite(middle) else [centre, float(middle)]
    in_tune = [(abs(v - round(v)), float(round(v)), v) for v in views if abs(v - round(v)) <= tolerance]
    if in_tune:
        # in tune on a semitone (outside the key or not): keep it; never turn an in-tune note into a wrong one
        _, own, _ = min(in_tune)
        # moved from the middle when that is in tune on the target: the pitch the note is heard at
        heard = views[-1] if round(views[-1]) == own and abs(views[-1] - own) <= tolerance else centre
        return own, heard
    own = float(round(centre))
    if scale is None:
        return own, centre
    key_target = float(scale.nearest_midi(centre))
    if len(views) > 1 and key_target not in {float(round(v)) for v in views}:
        # the two views of a wandering note disagree and the key names a third semitone: too unsure to snap
        return own, centre
    return key_target, centre


def stable_median(track: PitchTrack, note: Note, *, trim: float = 0.2) -> float:
    """Median pitch (float MIDI) of a note's voiced frames in the middle of its span, NaN without any.

    The first and last ``trim`` of the span are left out: the onset (a scoop, a grace note, the
    consonant) and the offset (a fall, the start of the slide to the next note) are transients,
    not the pitch the note is heard at.

    >>> import numpy as np
    >>> from melisma.analysis.pitch import midi_to_hz
    >>> m = np.r_[np.linspace(57.0, 61.8, 12), np.full(48, 61.8)]   # a 60 ms scoop into a note at 61.8
    >>> tr = PitchTrack(0.005, midi_to_hz(m), np.ones(60))
    >>> round(stable_median(tr, Note(0.0, 0.3, 61.0)), 2)
    61.8
    """
    hop = float(track.hop_s)
    a, b = float(note.start_s), float(note.end_s)
    d = b - a
    i0 = max(0, int(np.ceil((a + trim * d) / hop - 1e-9)))
    i1 = min(len(track.hz), int(np.floor((b - trim * d) / hop + 1e-9)) + 1)
    hz = np.asarray(track.hz[i0:i1], dtype=np.float64)
    hz = hz[hz > 0]
    if hz.size < 2:
        return float("nan")
    return float(np.median(12.0 * np.log2(hz / 440.0) + 69.0))


#: A note within this of a semitone is in tune on it (cents), with a key of confidence 1 ...
IN_TUNE_CENTS = 25.0
#: ... and within this with a key of confidence 0 (then only notes sung between semitones follow the key).
IN_TUNE_CENTS_UNSURE_KEY = 45.0


def in_tune_tolerance_cents(key_confidence: float) -> float:
    """How close to a semitone a note must be to keep it as its target when it lies outside the key.

    >>> in_tune_tolerance_cents(1.0), in_tune_tolerance_cents(0.0)
    (25.0, 45.0)
    """
    c = min(1.0, max(0.0, float(key_confidence))) if np.isfinite(key_confidence) else 0.0
    return IN_TUNE_CENTS + (IN_TUNE_CENTS_UNSURE_KEY - IN_TUNE_CENTS) * (1.0 - c)


def _match_melody(notes: Sequence[Note], melody: Sequence[MelodyNote], *, max_distance_s: float) -> list[float | None]:
    if not notes:
        return []
    ms = np.array([m.start_s for m in melody])
    me = np.array([m.end_s for m in melody])
    mm = np.array([m.midi for m in melody], dtype=np.float64)
    picks: list[int | None] = []
    for n in notes:
        overlap = np.minimum(me, n.end_s) - np.maximum(ms, n.start_s)
        k = int(np.argmax(overlap))
        if overlap[k] > 0:
            picks.append(k)
            continue
        dist = np.maximum(ms - n.end_s, n.start_s - me)
        k = int(np.argmin(dist))
        picks.append(k if dist[k] <= max_distance_s else None)
    # one octave shift for the whole take (a man singing a woman's melody an octave down)
    diffs = [n.midi - mm[k] for n, k in zip(notes, picks, strict=False) if k is not None]
    shift = 12.0 * round(float(np.median(diffs)) / 12.0) if diffs else 0.0
    return [None if k is None else float(mm[k] + shift) for k in picks]
