"""Ornament-aware pitch correction: the target f0 curve (what the voice should sing).

Each note's f0 (in MIDI) is split into a slowly varying **centre** and an **ornament residual**::

    f0_midi(t) = centre(t) + residual(t)

The centre is the note's pitch smoothed over about one vibrato cycle, estimated only on the
note's steady frames (slides, portamento, grace notes and mordents are excursions, so the
centre is held across them). Correction moves the centre by a constant per-note shift
``correction * (target_midi - midi)`` (clipped to ``max_shift_cents``) and rebuilds::

    target_midi(t) = centre(t) + shift(t) + k_type(t) * residual(t)

where ``k_type`` is the ornament policy for the ornament covering frame ``t`` (1 = keep,
0.5 = soften, 0 = flatten), eased in and out over :data:`POLICY_RAMP_S`. Because the shift is
constant over a note, ``keep`` moves vibrato, slides and grace notes rigidly with the note: the
vibrato keeps its rate and swing around the corrected centre, a slide keeps its path and timing,
a bend toward the next note is not pulled back. Across a portamento the shift glides linearly
from one note's shift to the next so the glide still joins the two corrected notes; between
other adjacent voiced notes it changes over :data:`SHIFT_RAMP_S`. A ``drift`` policy scales how
far the centre wanders from the note's ``midi`` (flatten = hold the note steady).

Frame ``k`` of an f0 curve is at time ``k * hop_s``; 0 Hz means unvoiced and stays 0.

Examples
--------
>>> import numpy as np
>>> from melisma.render.correct import CorrectionSettings, target_f0
>>> hop_s = 0.01
>>> t = np.arange(100) * hop_s
>>> f0 = 440.0 * 2 ** ((0.3 + 0.5 * np.sin(2 * np.pi * 6 * t)) / 12)   # 30 cents sharp, vibrato
>>> notes = [{"start_s": 0.0, "end_s": 1.0, "midi": 69.3, "target_midi": 69}]
>>> out, report = target_f0(f0, hop_s=hop_s, notes=notes, ornaments=[], settings=CorrectionSettings())
>>> round(report[0]["shift_cents"])
-30
>>> bool(np.allclose(12 * np.log2(out / f0), -0.3))   # every frame moved by the same amount
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, PlanError

#: Ornament types the analysis emits.
ORNAMENT_TYPES = ("vibrato", "slide_in", "slide_out", "portamento", "grace", "trill", "mordent", "drift")
#: Policy names and the factor each applies to the ornament residual.
POLICY_SCALES = {"keep": 1.0, "soften": 0.5, "flatten": 0.0}
#: Per-type keys a policy dict may use; 'slide' stands for slide_in, slide_out and portamento.
POLICY_ALIASES = {"slide": ("slide_in", "slide_out", "portamento")}
#: Ornaments that are excursions away from the note: the centre is held across them.
EXCURSION_TYPES = frozenset({"slide_in", "slide_out", "portamento", "grace", "mordent"})
#: Smoothing window of the centre (s): one cycle of a 5 Hz vibrato, so a box filter of this
#: length cancels the swing; two passes also cancel its harmonics well enough.
CENTRE_WINDOW_S = 0.2
#: How long a policy factor takes to ease in/out at an ornament's edges (s).
POLICY_RAMP_S = 0.03
#: How long the shift takes to change between two adjacent voiced notes (s).
SHIFT_RAMP_S = 0.03


@dataclass
class CorrectionSettings:
    """How far to move note centres and what to do with ornaments.

    Parameters
    ----------
    correction : float
        0..1, the fraction of each note's error to remove (0 = untouched, 1 = on target).
    ornaments : str or dict
        ``'keep'``, ``'soften'`` or ``'flatten'`` for every ornament, or a dict per type, e.g.
        ``{'vibrato': 'keep', 'slide': 'soften'}`` (types: vibrato, slide_in, slide_out,
        portamento, grace, trill, mordent, drift; 'slide' covers slide_in/slide_out/portamento;
        a missing type is kept). A number 0..1 may stand for a policy (the residual factor).
    max_shift_cents : float
        Largest shift applied to one note centre; larger corrections are clipped (and reported).
    """

    correction: float = 1.0
    ornaments: str | dict = "keep"
    max_shift_cents: float = 300.0

    def validate(self) -> CorrectionSettings:
        if not isinstance(self.correction, (int, float)) or not 0.0 <= float(self.correction) <= 1.0:
            raise ConfigError(f"correction must be a number from 0 (untouched) to 1 (on target), got {self.correction!r}")
        if not isinstance(self.max_shift_cents, (int, float)) or not float(self.max_shift_cents) >= 0.0:
            raise ConfigError(f"max_shift_cents must be a number >= 0 (e.g. 300), got {self.max_shift_cents!r}")
        self.policy_scales()
        return self

    def policy_scales(self) -> dict[str, float]:
        """Residual factor for every ornament type (1 keep, 0.5 soften, 0 flatten)."""
        if isinstance(self.ornaments, Mapping):
            scales = {t: 1.0 for t in ORNAMENT_TYPES}
            # Aliases first so an explicit type ('slide_out') overrides its group ('slide').
            items = sorted(self.ornaments.items(), key=lambda kv: kv[0] not in POLICY_ALIASES)
            for key, policy in items:
                types: tuple[str, ...]
                if key in POLICY_ALIASES:
                    types = POLICY_ALIASES[key]
                elif key in ORNAMENT_TYPES:
                    types = (key,)
                else:
                    valid = ", ".join(sorted((*ORNAMENT_TYPES, *POLICY_ALIASES)))
                    raise ConfigError(f"unknown ornament type {key!r} in the ornament policy; valid types: {valid}")
                scale = _policy_scale(policy, where=f"ornaments[{key!r}]")
                for t in types:
                    scales[t] = scale
            return scales
        scale = _policy_scale(self.ornaments, where="ornaments")
        return {t: scale for t in ORNAMENT_TYPES}


def _policy_scale(policy: Any, *, where: str) -> float:
    if isinstance(policy, str) and policy in POLICY_SCALES:
        return POLICY_SCALES[policy]
    if isinstance(policy, (int, float)) and not isinstance(policy, bool) and 0.0 <= float(policy) <= 1.0:
        return float(policy)
    raise ConfigError(
        f"{where} must be 'keep', 'soften' or 'flatten' (or a factor 0..1), or a dict of those per ornament type; got {policy!r}"
    )


# ---------------------------------------------------------------------------------------------
# Small helpers


def hz_to_midi(f0_hz: np.ndarray) -> np.ndarray:
    """MIDI number per frame; NaN where unvoiced (<= 0 Hz)."""
    f0_hz = np.asarray(f0_hz, dtype=np.float64)
    out = np.full(f0_hz.shape, np.nan)
    voiced = f0_hz > 0
    out[voiced] = 69.0 + 12.0 * np.log2(f0_hz[voiced] / 440.0)
    return out


def midi_to_hz(midi: np.ndarray) -> np.ndarray:
    """Hz per frame; 0 where the MIDI value is NaN (unvoiced)."""
    midi = np.asarray(midi, dtype=np.float64)
    out = 440.0 * 2.0 ** ((np.nan_to_num(midi, nan=-1e9) - 69.0) / 12.0)
    out[~np.isfinite(midi)] = 0.0
    return out


def _span_frames(start_s: float, end_s: float, hop_s: float, n: int) -> slice:
    """Frames whose time ``k * hop_s`` lies in [start_s, end_s)."""
    a = int(np.clip(np.ceil(start_s / hop_s - 1e-9), 0, n))
    b = int(np.clip(np.ceil(end_s / hop_s - 1e-9), a, n))
    return slice(a, b)


def _masked_box_mean(x: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    """Moving mean of ``x`` over frames where ``mask`` is true (normalised convolution);
    NaN where the window holds no masked frame.
    """
    # np.convolve(mode="same") returns the longer of its inputs: keep the window inside a short note
    width = min(width, x.size)
    if width <= 1:
        return np.where(mask, x, np.nan)
    kernel = np.ones(width)
    num = np.convolve(np.where(mask, x, 0.0), kernel, mode="same")
    den = np.convolve(mask.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0.5, num / np.maximum(den, 1e-12), np.nan)


def _fill_nearest(x: np.ndarray) -> np.ndarray:
    """Replace NaNs by the nearest finite value (held at the ends)."""
    finite = np.isfinite(x)
    if finite.all() or not finite.any():
        return x
    idx = np.arange(x.size)
    good = idx[finite]
    pos = np.clip(np.searchsorted(good, idx), 1, good.size - 1) if good.size > 1 else np.zeros(x.size, int)
    if good.size == 1:
        return np.full_like(x, x[good[0]])
    left, right = good[pos - 1], good[pos]
    nearest = np.where(idx - left <= right - idx, left, right)
    nearest = np.where(idx < good[0], good[0], np.where(idx > good[-1], good[-1], nearest))
    return x[nearest]


def _ease(n: int) -> np.ndarray:
    """Raised-cosine ramp 0 -> 1 over ``n`` frames (excluding both ends)."""
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(1, n + 1) / (n + 1)))


def _validate_inputs(f0_hz: Any, hop_s: float) -> np.ndarray:
    f0 = np.asarray(f0_hz, dtype=np.float64)
    if f0.ndim != 1:
        raise ConfigError(f"f0_hz must be a 1-D array of Hz per frame (0 = unvoiced), got shape {f0.shape}")
    if not (isinstance(hop_s, (int, float)) and 0 < hop_s <= 0.05):
        raise ConfigError(f"hop_s must be a frame hop in seconds in (0, 0.05] (e.g. 0.01), got {hop_s!r}")
    if not np.all(np.isfinite(f0)) or np.any(f0 < 0):
        raise ConfigError("f0_hz must be finite and >= 0 Hz (0 = unvoiced)")
    return f0


def _check_plan_items(notes: Sequence[Mapping], ornaments: Sequence[Mapping]) -> None:
    """Notes and ornaments must carry finite times (and a finite ``midi``), or the plan is broken."""
    for kind, items, keys in (("note", notes, ("start_s", "end_s", "midi")), ("ornament", ornaments, ("start_s", "end_s"))):
        for i, item in enumerate(items):
            try:
                values = [float(item[k]) for k in keys]
            except (KeyError, TypeError, ValueError):
                raise PlanError(f"{kind} {i} ({item!r}) needs numeric {', '.join(keys)}") from None
            if not all(np.isfinite(values)) or values[1] < values[0]:
                raise PlanError(f"{kind} {i} has non-finite values or end_s < start_s: {item!r}")
            if kind == "note" and item.get("target_midi") is not None and not np.isfinite(float(item["target_midi"])):
                raise PlanError(f"note {i} has a non-finite target_midi {item['target_midi']!r}; use a number or None")


def _note_frames(notes: Sequence[Mapping], hop_s: float, n: int) -> tuple[np.ndarray, list[slice]]:
    """Owner note index per frame (-1 = none) and each note's frame slice."""
    owner = np.full(n, -1, dtype=np.int64)
    spans = []
    for i, note in enumerate(notes):
        span = _span_frames(float(note["start_s"]), float(note["end_s"]), hop_s, n)
        spans.append(span)
        owner[span] = i
    return owner, spans


# ---------------------------------------------------------------------------------------------
# Public API


def note_centre_curve(
    f0_hz: np.ndarray, *, hop_s: float, notes: Sequence[Mapping], ornaments: Sequence[Mapping] = ()
) -> np.ndarray:
    """The slowly varying centre of each note, in MIDI, per frame (NaN outside notes/unvoiced).

    The residual ``hz_to_midi(f0_hz) - centre`` holds the ornaments. Inside a note the centre is
    a two-pass moving mean (:data:`CENTRE_WINDOW_S`) of the note's steady frames; across slides,
    portamento, grace notes and mordents it is held at the nearest steady value; a note with
    no steady frame gets its ``midi`` value.

    Parameters
    ----------
    f0_hz : ndarray
        f0 per frame in Hz, 0 = unvoiced; frame ``k`` is at ``k * hop_s`` seconds.
    hop_s : float
        Frame hop in seconds.
    notes, ornaments : sequence of dict
        As in the plan: notes with ``start_s, end_s, midi``; ornaments with ``type, start_s, end_s``.

    Returns
    -------
    ndarray
        Centre in MIDI per frame.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(200) * 0.01
    >>> f0 = 440 * 2 ** (0.5 * np.sin(2 * np.pi * 5.0 * t) / 12)
    >>> c = note_centre_curve(f0, hop_s=0.01, notes=[{"start_s": 0, "end_s": 2, "midi": 69.0}])
    >>> bool(np.nanmax(np.abs(c[30:170] - 69.0)) < 0.02)   # the vibrato swing is not in the centre
    True
    """
    f0 = _validate_inputs(f0_hz, hop_s)
    _check_plan_items(notes, ornaments)
    n = f0.size
    midi = hz_to_midi(f0)
    voiced = np.isfinite(midi)
    excursion = np.zeros(n, dtype=bool)
    for orn in ornaments:
        if orn.get("type") in EXCURSION_TYPES:
            excursion[_span_frames(float(orn["start_s"]), float(orn["end_s"]), hop_s, n)] = True
    width = max(1, int(round(CENTRE_WINDOW_S / hop_s)))
    centre = np.full(n, np.nan)
    for note in notes:
        span = _span_frames(float(note["start_s"]), float(note["end_s"]), hop_s, n)
        if span.stop <= span.start:
            continue
        seg = midi[span]
        seg_voiced = voiced[span]
        steady = seg_voiced & ~excursion[span]
        if not steady.any():
            centre[span] = np.where(seg_voiced, float(note["midi"]), np.nan)
            continue
        first = _masked_box_mean(seg, steady, width)
        first = _fill_nearest(first)
        second = _masked_box_mean(first, np.isfinite(first), width)
        second = _fill_nearest(second)
        # Excursion frames hold the nearest steady centre rather than following the excursion.
        held = _fill_nearest(np.where(steady, second, np.nan))
        centre[span] = np.where(seg_voiced, held, np.nan)
    return centre


def _note_shift_semitones(note: Mapping, settings: CorrectionSettings) -> tuple[float, bool]:
    target = note.get("target_midi")
    if target is None or settings.correction == 0.0:
        return 0.0, False
    wanted = float(settings.correction) * (float(target) - float(note["midi"]))
    limit = float(settings.max_shift_cents) / 100.0
    clipped = abs(wanted) > limit + 1e-12
    return float(np.clip(wanted, -limit, limit)), bool(clipped)


def _shift_curve(
    n: int, hop_s: float, voiced: np.ndarray, owner: np.ndarray, shifts: np.ndarray, ornaments: Sequence[Mapping]
) -> np.ndarray:
    """Shift in semitones per voiced frame: each note's constant shift, glided across portamento,
    eased between adjacent voiced notes, extended to voiced frames outside notes within the same
    voiced run (so a breathy onset moves with its note), 0 elsewhere.
    """
    shift = np.full(n, np.nan)
    inside = owner >= 0
    shift[inside] = shifts[owner[inside]]
    # Voiced frames outside any note take the nearest note's shift within their voiced run.
    run_id = np.cumsum(np.r_[True, voiced[1:] != voiced[:-1]])
    for rid in np.unique(run_id[voiced]):
        run = np.flatnonzero(run_id == rid)
        seg = shift[run]
        if np.isfinite(seg).any():
            shift[run] = _fill_nearest(seg)
        else:
            shift[run] = 0.0
    shift[~voiced] = 0.0
    # Ease between adjacent notes inside a voiced run (not across a portamento: glided below).
    ramp = max(1, int(round(SHIFT_RAMP_S / hop_s)))
    changes = np.flatnonzero((np.diff(shift) != 0) & voiced[1:] & voiced[:-1])
    base = shift.copy()
    for k in changes:  # boundary between frame k and k+1
        a, b = max(0, k + 1 - ramp // 2 - 1), min(n, k + 1 + (ramp - ramp // 2))
        left, right = base[k], base[k + 1]
        m = b - a
        if m >= 2 and voiced[a:b].all():
            shift[a:b] = left + (right - left) * np.linspace(0.0, 1.0, m)
    for orn in ornaments:
        if orn.get("type") != "portamento":
            continue
        span = _span_frames(float(orn["start_s"]), float(orn["end_s"]), hop_s, n)
        a, b = span.start, span.stop
        if b - a < 2:
            continue
        before = base[a - 1] if a > 0 and voiced[a - 1] else base[a]
        after = base[b] if b < n and voiced[b] else base[b - 1]
        shift[a:b] = before + (after - before) * np.linspace(0.0, 1.0, b - a)
    shift[~voiced] = 0.0
    return shift


def _policy_curve(n: int, hop_s: float, ornaments: Sequence[Mapping], scales: Mapping[str, float], kinds: set[str]) -> np.ndarray:
    """Residual factor per frame from the ornaments of the given kinds (1 where none applies),
    eased in and out over :data:`POLICY_RAMP_S`; overlapping ornaments take the smallest.
    """
    k = np.ones(n)
    ramp = max(0, int(round(POLICY_RAMP_S / hop_s)))
    for orn in ornaments:
        kind = orn.get("type")
        if kind not in kinds or scales.get(kind, 1.0) == 1.0:
            continue
        span = _span_frames(float(orn["start_s"]), float(orn["end_s"]), hop_s, n)
        if span.stop <= span.start:
            continue
        scale = scales[kind]
        curve = np.ones(n)
        curve[span] = scale
        if ramp:
            r = _ease(ramp)
            a0 = max(0, span.start - ramp)
            curve[a0 : span.start] = 1.0 + (scale - 1.0) * r[ramp - (span.start - a0) :]
            b1 = min(n, span.stop + ramp)
            curve[span.stop : b1] = scale + (1.0 - scale) * r[: b1 - span.stop]
        k = np.minimum(k, curve)
    return k


def target_f0(
    f0_hz: np.ndarray,
    *,
    hop_s: float,
    notes: Sequence[Mapping],
    ornaments: Sequence[Mapping] = (),
    settings: CorrectionSettings | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """The corrected f0 curve and what was done to each note.

    Parameters
    ----------
    f0_hz : ndarray
        Source f0 per frame in Hz (0 = unvoiced); frame ``k`` is at ``k * hop_s`` s.
    hop_s : float
        Frame hop in seconds.
    notes : sequence of dict
        ``{start_s, end_s, midi, target_midi}`` (``target_midi`` None = leave the note alone).
    ornaments : sequence of dict
        ``{type, start_s, end_s, note, params}``.
    settings : CorrectionSettings
        Correction amount, ornament policy, shift limit.

    Returns
    -------
    target_hz : ndarray
        Same length as ``f0_hz``; 0 where unvoiced; equal to ``f0_hz`` (bit-exact) wherever no
        shift and no ornament policy applies.
    corrections : list of dict
        Per note: ``note, midi, target_midi, shift_cents, clipped, cents_error_before,
        cents_error_after, ornaments`` (types and the residual factor applied).

    Examples
    --------
    >>> import numpy as np
    >>> f0 = np.full(50, 220.0); f0[:5] = 0
    >>> out, rep = target_f0(f0, hop_s=0.01, notes=[{"start_s": 0, "end_s": .5, "midi": 57.0, "target_midi": 58}],
    ...                      settings=CorrectionSettings(correction=0.5))
    >>> float(out[0]), round(float(out[-1]), 2), rep[0]["shift_cents"]
    (0.0, 226.45, 50.0)
    """
    settings = (settings or CorrectionSettings()).validate()
    f0 = _validate_inputs(f0_hz, hop_s)
    _check_plan_items(notes, ornaments)
    n = f0.size
    midi = hz_to_midi(f0)
    voiced = np.isfinite(midi)
    scales = settings.policy_scales()

    owner, _spans = _note_frames(notes, hop_s, n)
    shifts = np.zeros(len(notes))
    report: list[dict] = []
    for i, note in enumerate(notes):
        shift, clipped = _note_shift_semitones(note, settings)
        shifts[i] = shift
        target = note.get("target_midi")
        error_before = None if target is None else 100.0 * (float(note["midi"]) - float(target))
        report.append(
            {
                "note": i,
                "midi": float(note["midi"]),
                "target_midi": None if target is None else float(target),
                "shift_cents": round(100.0 * shift, 2),
                "clipped": clipped,
                "cents_error_before": None if error_before is None else round(error_before, 2),
                "cents_error_after": None if error_before is None else round(error_before + 100.0 * shift, 2),
                "ornaments": [],
            }
        )
    for orn in ornaments:
        idx = orn.get("note")
        if isinstance(idx, int) and 0 <= idx < len(report):
            kind = str(orn.get("type"))
            report[idx]["ornaments"].append({"type": kind, "residual_scale": scales.get(kind, 1.0)})

    shift_curve = _shift_curve(n, hop_s, voiced, owner, shifts, ornaments)
    residual_k = _policy_curve(n, hop_s, ornaments, scales, set(ORNAMENT_TYPES) - {"drift"})
    drift_k = _policy_curve(n, hop_s, ornaments, scales, {"drift"})

    out_midi = midi + shift_curve
    touched_by_policy = voiced & ((residual_k != 1.0) | (drift_k != 1.0))
    if touched_by_policy.any():
        centre = note_centre_curve(f0, hop_s=hop_s, notes=notes, ornaments=ornaments)
        note_midi = np.full(n, np.nan)
        inside = owner >= 0
        note_midi[inside] = np.array([float(nt["midi"]) for nt in notes] or [0.0])[owner[inside]]
        has_centre = touched_by_policy & np.isfinite(centre)
        c = centre[has_centre]
        corrected_centre = note_midi[has_centre] + drift_k[has_centre] * (c - note_midi[has_centre])
        out_midi[has_centre] = corrected_centre + shift_curve[has_centre] + residual_k[has_centre] * (midi[has_centre] - c)

    out = np.zeros(n)
    changed = voiced & (out_midi != midi)
    out[voiced] = f0[voiced]
    out[changed] = midi_to_hz(out_midi[changed])
    return out, report


def hard_tune(f0_hz: np.ndarray, *, hop_s: float, scale_pitch_classes: Sequence[int]) -> np.ndarray:
    """Baseline hard-tune at retune speed 0: every voiced frame snapped to the nearest scale note.

    This is what Melisma exists to avoid: it removes vibrato and turns slides into steps.

    Parameters
    ----------
    f0_hz : ndarray
        f0 per frame in Hz (0 = unvoiced).
    hop_s : float
        Frame hop in seconds (checked only; snapping is per frame).
    scale_pitch_classes : sequence of int
        Pitch classes of the scale, 0 = C ... 11 = B (e.g. C major ``[0, 2, 4, 5, 7, 9, 11]``).

    Returns
    -------
    ndarray
        Snapped f0 in Hz, 0 where unvoiced.

    Examples
    --------
    >>> import numpy as np
    >>> hard_tune(np.array([0.0, 445.0, 430.0]), hop_s=0.01, scale_pitch_classes=[9]).round(1).tolist()
    [0.0, 440.0, 440.0]
    """
    f0 = _validate_inputs(f0_hz, hop_s)
    classes = sorted({int(p) % 12 for p in scale_pitch_classes})
    if not classes:
        raise ConfigError(
            "scale_pitch_classes must hold at least one pitch class 0..11 (e.g. [0, 2, 4, 5, 7, 9, 11] for C major)"
        )
    midi = hz_to_midi(f0)
    voiced = np.isfinite(midi)
    m = midi[voiced]
    octave = np.floor(m / 12.0) * 12.0
    candidates = octave[:, None] + np.array([c + 12 * o for o in (-1, 0, 1) for c in classes], dtype=np.float64)[None, :]
    nearest = candidates[np.arange(m.size), np.argmin(np.abs(candidates - m[:, None]), axis=1)]
    out = np.zeros_like(f0)
    out[voiced] = midi_to_hz(nearest)
    return out
