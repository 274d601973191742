"""Ornament detection and classification on an f0 track split into notes.

Every ornament is read from the note's pitch *relative to its centre* (``d(t)`` in cents):

* **vibrato** / **trill**: a run of at least ``min_half_cycles`` alternating turning points
  (zig-zag with hysteresis) spaced like a 4-12 Hz oscillation, swinging at least
  ``min_vibrato_cents`` peak to peak. A trill alternates between two *held* levels: its curve
  spends most of the time near the extremes (``squareness``: share of frames beyond 70 % of the
  half-swing; a sine gives 0.5, a trill 0.75-0.85), and swings at least ``min_trill_cents``.
  ``rate_hz`` is cycles per second, ``extent_cents`` the peak-to-peak swing (for a trill the interval
  between its two notes, ``interval_cents``, signed: upper minus main).
* **mordent**: one excursion away from the main pitch and back (main-upper-main) at the note start,
  lasting 60-220 ms.
* **grace** / **slide_in**: the note starts at least ``min_onset_cents`` off its centre and settles
  within ``max_onset_ms``. A grace note *holds* a pitch and then moves quickly (10-90 % of the move
  within ``max_grace_move_ms``); a slide moves gradually. ``interval_cents`` is start pitch minus
  centre (negative: from below); the smaller natural rise most notes start with stays below
  ``min_onset_cents`` and is no ornament.
* **slide_out**: the note ends at least ``min_onset_cents`` off its centre, having moved there
  gradually, with no legato note after it.
* **portamento**: a legato change to the next note whose glide, fitted with a linear and a
  sigmoid transition, lasts at least ``min_portamento_ms`` (a plain step takes one or two frames).
  It belongs to the note it leaves (``note``) and names the one it reaches (``to_note``).
* **drift**: the vibrato-smoothed centre moves steadily (a straight-line fit) by at least
  ``min_drift_cents`` over the note's held part.

Slide and portamento durations come from a least-squares fit of a linear and a sigmoid transition
over a grid of durations; ``shape`` is the better-fitting one.

Examples
--------
>>> import numpy as np
>>> from melisma.analysis.pitch import PitchTrack, midi_to_hz
>>> from melisma.analysis.notes import segment_notes
>>> t = np.arange(200) * 0.005
>>> midi = 64 + 0.5 * np.sin(2 * np.pi * 6.0 * t)  # 6 Hz, 100 cents peak to peak
>>> hz = midi_to_hz(midi)
>>> track = PitchTrack(0.005, hz, np.ones_like(hz))
>>> o = detect_ornaments(track, segment_notes(track))[0]
>>> o.type, round(o.params["rate_hz"]), round(o.params["extent_cents"], -1)
('vibrato', 6, 100.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import AnalysisError
from .contour import fill_gaps, fit_transition, periodic_runs, shape_curve, smooth_midi, trill_levels
from .notes import Note
from .pitch import PitchTrack

__all__ = [
    "ORNAMENT_CODES",
    "ORNAMENT_TYPES",
    "DspOrnamentDetector",
    "Ornament",
    "OrnamentDetector",
    "detect_ornaments",
    "match_spans",
    "ornament_frames",
    "trill_levels",
]

#: Ornament types; their codes in :func:`ornament_frames` are the index + 1 (0 = none).
ORNAMENT_TYPES = ("vibrato", "slide_in", "slide_out", "portamento", "grace", "trill", "mordent", "drift")
ORNAMENT_CODES = {name: i + 1 for i, name in enumerate(ORNAMENT_TYPES)}


@dataclass
class Ornament:
    """One ornament: its type, span in seconds, the index of its note and its parameters."""

    type: str
    start_s: float
    end_s: float
    note: int
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in ORNAMENT_CODES:
            raise AnalysisError(f"ornament type {self.type!r} unknown; use one of {', '.join(ORNAMENT_TYPES)}")

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict:
        params = {}
        for k, v in self.params.items():
            if isinstance(v, (float, np.floating)):
                v = round(float(v), 2)
            elif isinstance(v, np.integer):
                v = int(v)
            params[k] = v
        return {"type": self.type, "start_s": round(float(self.start_s), 4), "end_s": round(float(self.end_s), 4),
                "note": int(self.note), "params": params}

    @classmethod
    def from_dict(cls, d: dict) -> Ornament:
        try:
            return cls(type=str(d["type"]), start_s=float(d["start_s"]), end_s=float(d["end_s"]),
                       note=int(d["note"]), params=dict(d.get("params", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise AnalysisError(f"not an ornament dict ({exc!r}); expected type, start_s, end_s, note") from None


@runtime_checkable
class OrnamentDetector(Protocol):
    """What every ornament detector offers (a TFLite classifier can replace the DSP one)."""

    name: str

    def detect(self, track: PitchTrack, notes: Sequence[Note]) -> list[Ornament]: ...


# --------------------------------------------------------------------------------------------
# curve primitives


# --------------------------------------------------------------------------------------------
# the detector


@dataclass
class DspOrnamentDetector:
    """Rule-based ornament detector on the f0 curve (thresholds in cents and ms; see the module docstring)."""

    min_vibrato_cents: float = 30.0
    min_trill_cents: float = 80.0
    min_trill_squareness: float = 0.66
    min_half_cycles: int = 3
    min_onset_cents: float = 70.0
    max_onset_cents: float = 600.0
    max_offset_cents: float = 1000.0
    max_onset_ms: float = 320.0
    max_grace_move_ms: float = 45.0
    min_portamento_ms: float = 45.0
    min_portamento_cents: float = 50.0
    min_glide_ms: float = 17.0
    legato_gap_ms: float = 30.0
    min_drift_cents: float = 20.0
    min_drift_note_ms: float = 300.0
    name: str = field(default="dsp-rules", init=False)

    def detect(self, track: PitchTrack, notes: Sequence[Note]) -> list[Ornament]:
        hop_s = track.hop_s
        midi_all = track.midi
        n_frames = len(midi_all)
        out: list[Ornament] = []
        gap = self.legato_gap_ms / 1000.0
        legato = [k + 1 < len(notes) and notes[k + 1].start_s - notes[k].end_s <= gap for k in range(len(notes))]
        # portamento first: a glide into a note replaces that note's own onset ornament
        porta: dict[int, Ornament] = {}
        for k in range(len(notes) - 1):
            if legato[k] and np.isfinite(notes[k].midi) and np.isfinite(notes[k + 1].midi):
                o = self._portamento(midi_all, hop_s, k, notes[k], notes[k + 1])
                if o:
                    porta[k] = o
        for k, note in enumerate(notes):
            a = max(0, int(round(note.start_s / hop_s)))
            b = min(n_frames, int(round(note.end_s / hop_s)))
            if b - a < 4 or not np.isfinite(note.midi):
                continue
            m = midi_all[a:b]
            if np.isfinite(m).sum() < 4:
                continue
            d = 100.0 * (fill_gaps(m) - note.midi)  # cents from the centre
            onset = None if (k - 1) in porta else self._onset(d, hop_s, a, k)
            offset = None if legato[k] else self._offset(d, hop_s, a, k)
            held0 = onset.end_s if onset else (porta[k - 1].end_s if (k - 1) in porta else note.start_s)
            held1 = offset.start_s if offset else (porta[k].start_s if k in porta else note.end_s)
            out.extend(o for o in (onset, offset) if o)
            i0 = min(b - a, max(0, int(round(held0 / hop_s)) - a))
            i1 = max(i0, min(b - a, int(round(held1 / hop_s)) - a))
            periodic = self._periodic(d, hop_s, a, k, i0, i1)
            out.extend(periodic)
            if not periodic:
                drift = self._drift(d, hop_s, a, k, i0, i1)
                if drift:
                    out.append(drift)
            if k in porta:
                out.append(porta[k])
        out.sort(key=lambda o: (o.start_s, o.note))
        return out

    # -- onsets: grace, slide_in, mordent ------------------------------------------------------

    def _onset(self, d: np.ndarray, hop_s: float, a: int, k: int) -> Ornament | None:
        n = len(d)
        look = min(n, int(round(self.max_onset_ms / 1000.0 / hop_s)))
        if look < 4:
            return None
        head = d[:look]
        start_dev = float(np.median(d[: min(3, n)]))
        t0 = a * hop_s
        tol = max(0.3 * abs(start_dev), 35.0)
        if abs(start_dev) > self.max_onset_cents:
            return None  # further off than any grace or scoop: a tracker glitch at the voice onset
        if abs(start_dev) >= self.min_onset_cents:
            # settle: first frame from which the curve stays within tol of the centre for 30 ms
            near = np.abs(smooth_midi(head, frames=3)) < tol
            settle = _first_sustained(near, max(2, int(round(0.03 / hop_s))))
            if settle is None:
                return None
            # one transition from the start level to the centre, free start (hold) and duration (move)
            t = np.arange(min(n, settle + int(round(0.05 / hop_s)))) * hop_s
            hold, move, shape, _ = fit_transition(
                t, d[: t.size], start_dev, 0.0, t_start=np.arange(0.0, min(0.2, t[-1]) + 1e-9, hop_s)
            )
            # a grace note holds its pitch, then moves quickly; a slide moves from the start
            if move * 1000.0 <= self.max_grace_move_ms and hold >= 0.6 * move and hold >= 0.01:
                dur = hold + move
                return Ornament(
                    "grace", t0, t0 + dur, k, {"duration_ms": 1000.0 * dur, "interval_cents": start_dev, "main_note": k}
                )
            dur = hold + move
            return Ornament(
                "slide_in", t0, t0 + dur, k, {"duration_ms": 1000.0 * dur, "interval_cents": start_dev, "shape": shape}
            )
        # mordent: starts near the centre, one excursion of a grace-like size, back to the centre
        look_m = min(n, int(round(0.25 / hop_s)))
        if look_m < 8:
            return None
        sm = smooth_midi(d[:look_m], frames=3)
        j = int(np.argmax(np.abs(sm)))
        peak = float(sm[j])
        if abs(peak) < self.min_onset_cents or abs(start_dev) > 0.5 * abs(peak):
            return None
        back = _first_index(np.abs(sm[j:]) < 0.3 * abs(peak))
        if back is None:
            return None
        lead = _last_index(np.abs(sm[:j]) < 0.3 * abs(peak))
        lead = 0 if lead is None else lead
        dur = (j + back - lead) * hop_s
        if not 0.05 <= dur <= 0.22:
            return None
        # one excursion only: not the start of a trill or vibrato
        rest = sm[j + back :]
        if rest.size and np.max(np.abs(rest)) > 0.6 * abs(peak):
            return None
        return Ornament(
            "mordent", t0 + lead * hop_s, t0 + (j + back) * hop_s, k, {"rate_hz": 1.0 / max(dur, 1e-3), "interval_cents": peak}
        )

    # -- slide_out ----------------------------------------------------------------------------

    def _offset(self, d: np.ndarray, hop_s: float, a: int, k: int) -> Ornament | None:
        n = len(d)
        end_dev = float(np.median(d[max(0, n - 3) :]))
        if not self.min_onset_cents <= abs(end_dev) <= self.max_offset_cents:
            return None
        look = min(n, int(round(0.4 / hop_s)))
        tail = d[n - look :]
        tol = max(0.3 * abs(end_dev), 35.0)
        near = np.abs(smooth_midi(tail, frames=3)) < tol
        last_near = _last_index(near)
        if last_near is None:
            return None
        t = np.arange(look) * hop_s
        starts = t[max(0, last_near - int(round(0.3 / hop_s))) : last_near + 1]
        if starts.size == 0:
            return None
        start, _dur, shape, _ = fit_transition(t, tail, 0.0, end_dev, t_start=starts)
        end_t = (a + n) * hop_s
        s0 = max(a * hop_s, (a + n - look) * hop_s + start)
        return Ornament(
            "slide_out", s0, end_t, k, {"duration_ms": 1000.0 * (end_t - s0), "interval_cents": end_dev, "shape": shape}
        )

    # -- vibrato / trill ----------------------------------------------------------------------

    def _periodic(self, d: np.ndarray, hop_s: float, a: int, k: int, i0: int, i1: int) -> list[Ornament]:
        out: list[Ornament] = []
        seg = d[i0:i1]
        if len(seg) < int(0.2 / hop_s):
            return out
        runs = periodic_runs(seg, hop_s, min_swing=self.min_vibrato_cents, min_half_cycles=self.min_half_cycles)
        for r in runs:
            s0 = (a + i0 + r.i0) * hop_s
            s1 = (a + i0 + r.i1) * hop_s
            is_trill = r.squareness >= self.min_trill_squareness and r.extent_cents >= self.min_trill_cents
            if is_trill:
                out.append(Ornament("trill", s0, s1, k, {"rate_hz": r.rate_hz, "interval_cents": r.other_level - r.first_level}))
            else:
                out.append(Ornament("vibrato", s0, s1, k, {"rate_hz": r.rate_hz, "extent_cents": r.extent_cents}))
        return out

    # -- drift --------------------------------------------------------------------------------

    def _drift(self, d: np.ndarray, hop_s: float, a: int, k: int, i0: int, i1: int) -> Ornament | None:
        if (i1 - i0) * hop_s * 1000.0 < self.min_drift_note_ms:
            return None
        s = smooth_midi(d[i0:i1], frames=max(1, int(round(0.15 / hop_s)) | 1))
        t = np.arange(len(s)) * hop_s
        slope, icpt = np.polyfit(t, s, 1)
        total = slope * (t[-1] - t[0])
        resid = s - (slope * t + icpt)
        if abs(total) < self.min_drift_cents or np.std(resid) > 0.5 * abs(total):
            return None
        params = {"drift_cents": float(total), "cents_per_s": float(slope)}
        return Ornament("drift", (a + i0) * hop_s, (a + i1) * hop_s, k, params)

    # -- portamento ---------------------------------------------------------------------------

    def _portamento(self, midi_all: np.ndarray, hop_s: float, k: int, note: Note, nxt: Note) -> Ornament | None:
        interval = 100.0 * (nxt.midi - note.midi)
        if abs(interval) < self.min_portamento_cents:
            return None
        boundary = 0.5 * (note.end_s + nxt.start_s)
        reach = 0.2
        a = max(int(round(max(note.start_s, boundary - reach) / hop_s)), 0)
        b = min(int(round(min(nxt.end_s, boundary + reach) / hop_s)), len(midi_all))
        y = 100.0 * (midi_all[a:b] - note.midi)
        t = np.arange(a, b) * hop_s
        if np.isfinite(y).sum() < 6:
            return None
        # how fast is the change? |interval| / steepest slope: a step (even smeared by the tracker over
        # two frames) gives ~10 ms, a 60 ms sigmoid glide ~24 ms, a 60 ms linear one 60 ms
        yf = fill_gaps(y)
        near = np.abs(t - boundary) <= 0.06
        slope = np.abs(yf[2:] - yf[:-2]) / (2.0 * hop_s)
        slope = slope[near[1:-1]] if near[1:-1].any() else slope
        if slope.size == 0:
            return None
        eff_ms = 1000.0 * abs(interval) / max(float(slope.max()), 1e-9)
        if eff_ms < self.min_glide_ms:
            return None
        starts = np.arange(boundary - reach, boundary + 0.02, 0.005)
        start, dur, shape, _err = fit_transition(t, y, 0.0, interval, t_start=starts)
        if dur * 1000.0 < self.min_portamento_ms:
            return None
        # a step followed by a scoop (slide_in) is not a glide: compare with that model
        jump = yf[2:] - yf[:-2]
        jump = np.where(near[1:-1], jump * np.sign(interval), -np.inf)
        j = int(np.argmax(jump))
        if jump[j] >= max(60.0, 0.25 * abs(interval)):
            lvl = yf[j + 2]
            _, d2, _, _ = fit_transition(t[j + 2 :], yf[j + 2 :], lvl, interval, t_start=np.array([t[j + 2]]))
            u = np.clip((t - t[j + 2]) / d2, 0.0, 1.0)
            pred = np.where(t < t[j + 1], 0.0, lvl + (interval - lvl) * shape_curve(u, "sigmoid"))
            u_p = np.clip((t - start) / dur, 0.0, 1.0)
            pred_p = interval * shape_curve(u_p, shape)
            # compare where the two models differ: around the step and the scoop after it
            zone = (t >= t[max(j - 4, 0)]) & (t <= t[j + 2] + d2 + 0.02)
            err_step = float(np.sqrt(np.mean((pred - yf)[zone] ** 2)))
            err_glide = float(np.sqrt(np.mean((pred_p - yf)[zone] ** 2)))
            if err_step < 0.7 * err_glide:
                return None
        return Ornament(
            "portamento",
            start,
            start + dur,
            k,
            {"duration_ms": 1000.0 * dur, "interval_cents": interval, "shape": shape, "to_note": k + 1},
        )


def _first_sustained(mask: np.ndarray, run: int) -> int | None:
    if mask.size < run:
        return None
    c = np.convolve(mask.astype(np.int32), np.ones(run, dtype=np.int32), mode="valid")
    idx = np.flatnonzero(c == run)
    return int(idx[0]) if idx.size else None


def _first_index(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


def _last_index(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[-1]) if idx.size else None


def detect_ornaments(track: PitchTrack, notes: Sequence[Note], *, detector: OrnamentDetector | None = None) -> list[Ornament]:
    """Find the ornaments of every note (see the module docstring for the rules).

    Parameters
    ----------
    track : PitchTrack
    notes : sequence of Note
        From :func:`~melisma.analysis.notes.segment_notes` on the same track.
    detector : OrnamentDetector, optional
        :class:`DspOrnamentDetector` by default.

    Returns
    -------
    list of Ornament, sorted by start time.
    """
    return (detector or DspOrnamentDetector()).detect(track, notes)


def ornament_frames(ornaments: Sequence[Ornament], *, n_frames: int, hop_s: float) -> np.ndarray:
    """Per-frame ornament code (``ORNAMENT_CODES``; 0 = none), e.g. for coverage statistics.

    Where ornaments overlap, the more specific one wins (drift < vibrato < trill < ... < grace).

    >>> codes = ornament_frames([Ornament("vibrato", 0.1, 0.2, 0)], n_frames=50, hop_s=0.01)
    >>> int((codes == ORNAMENT_CODES["vibrato"]).sum())
    10
    """
    codes = np.zeros(int(n_frames), dtype=np.int8)
    order = ("drift", "vibrato", "trill", "mordent", "portamento", "slide_out", "slide_in", "grace")
    for kind in order:
        for o in ornaments:
            if o.type != kind:
                continue
            i0 = max(0, int(round(o.start_s / hop_s)))
            i1 = min(int(n_frames), int(round(o.end_s / hop_s)))
            codes[i0:i1] = ORNAMENT_CODES[kind]
    return codes


def match_spans(found: Sequence[tuple[float, float]], truth: Sequence[tuple[float, float]], *, min_overlap: float = 0.3) -> int:
    """How many ``truth`` spans a ``found`` span matches, each found span used once (event scoring).

    A found span ``(start_s, end_s)`` matches a truth span when they overlap by at least
    ``min_overlap`` of the shorter one's length; truth spans are taken in order and each takes the
    first unused found span that matches. Precision is ``matches / len(found)``, recall
    ``matches / len(truth)``.

    >>> match_spans([(0.0, 0.2), (1.0, 1.1)], [(0.1, 0.3), (0.5, 0.6)])
    1
    """
    used: set[int] = set()
    matches = 0
    for r0, r1 in truth:
        for j, (d0, d1) in enumerate(found):
            if j not in used and min(r1, d1) - max(r0, d0) >= min_overlap * min(r1 - r0, d1 - d0):
                used.add(j)
                matches += 1
                break
    return matches
