"""The report a singer and an engineer can read: the headline facts first, the frame arrays left out.

A mix report (``--report``) used to be 95 % per-frame pitch arrays. Now it opens with a
``headline``: how the take was lined up and how sure that is (an unaligned take says so), what
was cleaned and by how much, how many notes moved and by how many cents, which ornaments were
kept (named as a singer names them: vibrato, slide, grace note, trill), and the loudness of the
written file. The per-frame curves (``pitch.f0``, ``pitch.target_f0``) stay in the plan, where the
app reads them; ``--report-frames`` keeps them in the report too. Every other section keeps its
keys, so what reads them (the app's plan summary, the device) goes on working.

Examples
--------
>>> report = {"alignment": {"offset_ms": 180.0, "method": "bleed", "confidence": 0.99},
...           "pitch": {"f0": {"hop_s": 0.01, "hz": [0.0, 440.0]}, "notes": [{"midi": 69.3, "target_midi": 69.0,
...                     "start_s": 0.0, "end_s": 1.0}], "corrections": [{"note": 0, "shift_cents": -24.0}],
...                     "ornaments": [{"type": "portamento", "note": 0}, {"type": "drift", "note": 0}]},
...           "loudness": {"integrated_lufs": -14.04, "true_peak_dbtp": -1.6, "target_lufs": -14.0, "measured": "file"}}
>>> finish_report(report)
>>> list(report)[0], "f0" in report["pitch"]
('headline', False)
>>> report["headline"]["ornaments_kept"], report["headline"]["notes"]["moved"]
({'slide': 1}, 1)
>>> note_name(69.0), note_name(61.2)
('A4', 'C#4')
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

#: Per-frame arrays of the report's pitch section, kept only in the plan (or with ``frames=True``).
FRAME_KEYS = ("f0", "target_f0")

#: The plan's ornament classes as a singer names them; classes not listed (drift) are not ornaments.
SINGER_ORNAMENTS = {
    "vibrato": "vibrato",
    "slide_in": "slide",
    "slide_out": "slide",
    "portamento": "slide",
    "grace": "grace note",
    "trill": "trill",
    "mordent": "trill",
}

#: A note counts as moved when its centre shifted by at least this many cents.
MOVED_CENTS = 5.0
#: Below this alignment confidence a bleed or refined offset is called uncertain.
UNCERTAIN_ALIGNMENT = 0.3

_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def note_name(midi: float) -> str:
    """The nearest note's name with its octave (MIDI 69 is A4)."""
    n = round(float(midi))
    return f"{_NAMES[n % 12]}{n // 12 - 1}"


def _alignment(al: dict[str, Any]) -> tuple[dict[str, Any], str]:
    method = al.get("method", "none")
    confidence = float(al.get("confidence", 0.0) or 0.0)
    offset = float(al.get("offset_ms", 0.0) or 0.0)
    reason = str((al.get("details") or {}).get("reason", "no way to measure the offset"))
    aligned = method not in ("none", "guess")
    uncertain = method == "guess" or (aligned and method != "calibrated" and confidence < UNCERTAIN_ALIGNMENT)
    fact = {"aligned": aligned, "uncertain": uncertain, "offset_ms": round(offset, 1), "method": method,
            "confidence": round(confidence, 2)}
    if method == "guess":
        fact["reason"] = reason
        return fact, (f"NOT measured: the take was placed {abs(offset):.0f} ms {'late' if offset >= 0 else 'early'} "
                      f"by a guess you accepted ({reason.split(';')[0]}); listen to the timing.")
    if not aligned:
        fact["reason"] = reason
        if "no backing" in reason:
            return fact, "No backing track: nothing to line up."
        return fact, f"NOT lined up: {reason}."
    how = {"bleed": "from the backing heard in the take", "calibrated": "from the latency calibration",
           "calibrated+refined": "from the calibration, refined by the backing in the take"}.get(method, method)
    late = f"{abs(offset):.0f} ms {'late' if offset >= 0 else 'early'}"
    line = f"Lined up: the take was {late} ({how}, confidence {confidence:.2f})"
    return fact, line + (" — uncertain, listen to the timing." if uncertain else ".")


def _cleanup(cleanup: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    analysis = cleanup.get("analysis") or {}
    facts: list[dict[str, Any]] = []
    words: list[str] = []
    for a in cleanup.get("actions") or []:
        kind = a.get("action")
        if kind == "hum_notch":
            hum = analysis.get("hum") or {}
            prominence = (hum.get("prominence_db") or [None])[0]
            facts.append({"what": "mains hum", "hz": a.get("fundamental_hz"), "harmonics": a.get("harmonics"),
                          "stood_out_db": prominence})
            words.append(f"{float(a.get('fundamental_hz', 50.0)):.0f} Hz hum ({a.get('harmonics')} harmonics"
                         + (f", standing {prominence:.0f} dB out of the spectrum)" if prominence is not None else ")"))
        elif kind == "denoise":
            facts.append({"what": "steady background noise", "snr_db": a.get("snr_db"), "reduced_by_db": a.get("reduction_db"),
                          "noise_floor_dbfs": a.get("noise_floor_dbfs")})
            snr = a.get("snr_db")
            words.append(f"steady noise reduced by up to {float(a.get('reduction_db', 0.0)):.0f} dB"
                         + (f" (the voice was {snr:.0f} dB above it)" if snr is not None else ""))
        elif kind == "gate":
            facts.append({"what": "noise between phrases", "quieted_by_db": -float(a.get("floor_db", 0.0)),
                          "below_dbfs": a.get("threshold_db")})
            words.append(f"gaps between phrases {-float(a.get('floor_db', 0.0)):.0f} dB quieter")
        elif kind == "highpass":
            facts.append({"what": "low rumble", "below_hz": a.get("cutoff_hz")})
            words.append(f"rumble below {float(a.get('cutoff_hz', 0.0)):.0f} Hz")
        elif kind == "declip":
            soft = a.get("found") == "soft rail"  # a rail a codec (or noise) smeared, found by the peaks' shape
            facts.append({"what": "clipped peaks", "runs": a.get("regions"), "fraction": a.get("fraction")}
                         | ({"found": "by their shape (the codec smeared the rail)"} if soft else {}))
            words.append(f"repaired {a.get('regions')} clipped runs ({100 * float(a.get('fraction', 0.0)):.1f} % of samples"
                         + ("; found by their shape under the codec" if soft else "") + ")")
        elif kind == "pause_levels":
            before, after = a.get("pauses_before_dbfs"), a.get("pauses_after_dbfs")
            if before is not None and after is not None:
                facts.append({"what": "the singer's pauses", "before_dbfs": before, "after_dbfs": after})
                words.append(f"the pauses went from {before:.0f} to {after:.0f} dBFS")
        elif kind:  # a stage this module does not know yet: its name and its figures in dB
            figures = {k: v for k, v in a.items() if k != "action" and isinstance(v, (int, float))}
            facts.append({"what": str(kind).replace("_", " "), **figures})
            words.append(str(kind).replace("_", " "))
    line = ("Cleaned: " + "; ".join(words) + ".") if words else "Cleaned: nothing needed removing."
    return facts, line


def _notes(pitch: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    notes = pitch.get("notes")
    if notes is None:
        return None, None
    corrections = pitch.get("corrections") or []
    shifts = [abs(float(c.get("shift_cents") or 0.0)) for c in corrections]
    moved = [s for s in shifts if s >= MOVED_CENTS]
    key = pitch.get("key") or {}
    fact = {
        "count": len(notes),
        "moved": len(moved),
        "mean_moved_cents": round(sum(moved) / len(moved), 1) if moved else 0.0,
        "max_moved_cents": round(max(moved), 1) if moved else 0.0,
        "key": key.get("name") or key.get("key"),
        "median_cents_off_after": pitch.get("median_abs_cents_error_after"),
    }
    if not notes:
        return fact, "Pitch: no sung notes found."
    if moved:
        line = (f"Pitch: {len(moved)} of {len(notes)} notes moved toward the key of {fact['key']}, by "
                f"{fact['mean_moved_cents']:.0f} cents on average (at most {fact['max_moved_cents']:.0f}).")
    elif corrections:
        line = f"Pitch: all {len(notes)} notes were already in tune (key {fact['key']}); none moved."
    else:
        line = f"Pitch: {len(notes)} notes (key {fact['key']}); no correction in this render."
    return fact, line


def _ornaments(pitch: dict[str, Any]) -> tuple[dict[str, int], dict[str, int], str | None]:
    ornaments = pitch.get("ornaments")
    if not ornaments:
        return {}, {}, None
    scale: dict[tuple[int, str], float] = {}
    for c in pitch.get("corrections") or []:
        for o in c.get("ornaments") or []:
            scale[(int(c.get("note", -1)), str(o.get("type")))] = float(o.get("residual_scale", 1.0))
    kept: Counter[str] = Counter()
    softened: Counter[str] = Counter()
    for o in ornaments:
        name = SINGER_ORNAMENTS.get(str(o.get("type")))
        if name is None:
            continue
        factor = scale.get((int(o.get("note", -1)), str(o.get("type"))), 1.0)
        (kept if factor >= 0.999 else softened)[name] += 1
    parts = [f"{name} ×{n}" for name, n in kept.most_common()]
    line = ("Ornaments kept as sung: " + ", ".join(parts) + ".") if parts else "Ornaments: none kept as sung."
    if softened:
        line += " Softened: " + ", ".join(f"{name} ×{n}" for name, n in softened.most_common()) + "."
    return dict(kept.most_common()), dict(softened.most_common()), line


def _loudness(loud: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    if not loud:
        return None, None
    lufs, tp = loud.get("integrated_lufs"), loud.get("true_peak_dbtp")
    fact = {k: loud.get(k) for k in ("integrated_lufs", "true_peak_dbtp", "target_lufs", "measured")}
    if lufs is None or not math.isfinite(float(lufs)) or tp is None:
        return fact, None
    where = " (measured on the written file)" if loud.get("measured") == "file" else ""
    return fact, (f"Loudness: {float(lufs):.1f} LUFS (target {loud.get('target_lufs')}), true peak {float(tp):.1f} dBTP"
                  f"{where}.")


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The headline facts of a mix (or pitch-correction) report, with one plain sentence each in ``lines``."""
    lines: list[str] = []
    head: dict[str, Any] = {}
    if report.get("alignment"):
        head["alignment"], line = _alignment(report["alignment"])
        lines.append(line)
    if report.get("cleanup"):
        head["cleaned"], line = _cleanup(report["cleanup"])
        lines.append(line)
    bal = report.get("balance") or {}
    if bal.get("vocal_to_backing_lu") is not None:
        head["balance"] = {"vocal_over_backing_lu": round(float(bal["vocal_to_backing_lu"]), 2),
                           "target_lu": bal.get("target_lu")}
        lines.append(f"Balance: the vocal sits {float(bal['vocal_to_backing_lu']):+.1f} LU over the backing "
                     f"(the style asks {float(bal.get('target_lu', float('nan'))):+.1f}).")
    pitch = report.get("pitch") or {}
    notes, notes_line = _notes(pitch)
    if notes is not None and notes_line:
        head["notes"] = notes
        lines.append(notes_line)
    kept, softened, ornaments_line = _ornaments(pitch)
    if ornaments_line:
        head["ornaments_kept"] = kept
        if softened:
            head["ornaments_softened"] = softened
        lines.append(ornaments_line)
    loud, loudness_line = _loudness(report.get("loudness") or {})
    if loud is not None:
        head["loudness"] = loud
        if loudness_line:
            lines.append(loudness_line)
    head["lines"] = lines
    return head


def finish_report(report: dict[str, Any], *, frames: bool = False) -> None:
    """Put the headline first and, unless ``frames``, drop the per-frame arrays (in place)."""
    pitch = report.get("pitch")
    if isinstance(pitch, dict) and not frames:
        dropped = [k for k in FRAME_KEYS if k in pitch]
        for k in dropped:
            del pitch[k]
        if dropped:
            pitch["frames"] = "per-frame curves (" + ", ".join(dropped) + ") are in the plan; --report-frames keeps them here"
    head = headline(report)
    ordered: dict[str, Any] = {k: report[k] for k in ("format", "version") if k in report}
    ordered["headline"] = head
    ordered.update((k, v) for k, v in report.items() if k not in ordered)
    report.clear()
    report.update(ordered)
