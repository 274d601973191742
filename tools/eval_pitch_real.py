"""Evaluate pitch tracking, note segmentation and ornament detection on the real recordings.

Prints:

1. vocadito track 1: raw pitch accuracy (50 cents), voicing recall and false alarm, median cents error
   against the human frame f0 annotation; note pitch accuracy against both note annotators;
2. SSVD v2 sight-singing subset: note pitch accuracy (within 50 cents) against the note annotations,
   after removing a per-file offset (the median difference of matched notes: the annotations sit
   about 15-30 cents above pYIN throughout, see the data set's SOURCE.txt);
3. GTSinger pairs: vibrato and slide (slide_in + slide_out + portamento) coverage, the share of
   voiced frames inside such ornaments, for the plain take and the technique take of each pair;
4. slide and grace-note durations measured over all of these real recordings (for docs/ornaments.md);
5. the time pitch + notes + ornaments + key take for a 3-minute take on one core.

6. (``--only bleed``) voicing false alarm and recall under real backing bleed at -15 and -6 dB, for
   Melisma's whole analysis (with and without its bleed gate) and SwiftF0 on the same takes, and
   Melisma's ghost notes (notes outside the sung phrases);
7. (``--only correction``) correction without a melody (key mode): median and p90 note-centre error
   in cents and the count of in-tune notes moved to another semitone, measured by SwiftF0 on the
   corrected vocal (needs the ``peers`` extra: swift-f0 and onnxruntime).

Usage::

    python tools/eval_pitch_real.py [--data ../shared/data] [--json out.json]
    python tools/eval_pitch_real.py --only bleed --only correction [--clips 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from melisma.analysis.key import estimate_key
from melisma.analysis.notes import segment_notes
from melisma.analysis.ornaments import ORNAMENT_CODES, detect_ornaments, ornament_frames
from melisma.analysis.pitch import PitchTrack, hz_to_midi, track_pitch
from melisma.audio_io import load_audio

SR = 16000
#: Which tracker and ornament detector to evaluate (set from --tracker / --detector).
CHOICE = {"tracker": None, "detector": None}


def _tracker(name: str | None):
    if name == "model":
        from melisma.analysis.pitch_model import TflitePitchTracker

        return TflitePitchTracker()
    return None  # the DSP baseline


def _detector(name: str | None):
    if name == "model":
        from melisma.analysis.ornament_model import TfliteOrnamentDetector

        return TfliteOrnamentDetector()
    return None  # the DSP rules


def analyze(path: Path):
    y, sr = load_audio(path, sr=SR, mono=True)
    track = track_pitch(y, sr=sr, tracker=CHOICE["tracker"])
    notes = segment_notes(track)
    orns = detect_ornaments(track, notes, detector=CHOICE["detector"])
    return y, track, notes, orns


def vocadito(root: Path, durations: dict) -> dict:
    d = root / "vocadito"
    _y, track, notes, orns = analyze(d / "Audio" / "vocadito_1.wav")
    collect_durations(orns, durations, "vocadito")
    ref = np.loadtxt(d / "Annotations" / "F0" / "vocadito_1_f0.csv", delimiter=",")
    idx = np.clip(np.round(ref[:, 0] / track.hop_s).astype(int), 0, len(track.hz) - 1)
    est, rhz = track.hz[idx].astype(np.float64), ref[:, 1]
    rv, ev = rhz > 0, est > 0
    both = rv & ev
    err = np.full(len(rhz), np.inf)
    err[both] = np.abs(1200 * np.log2(est[both] / rhz[both]))
    out = {
        "raw_pitch_accuracy": float(np.mean(err[rv] < 50)),
        "voicing_recall": float(np.mean(ev[rv])),
        "voicing_false_alarm": float(np.mean(ev[~rv])),
        "median_cents_error": float(np.median(err[both])),
        "octave_errors": float(np.mean(np.abs(err[both] - 1200) < 100)),
    }
    for ann in ("A1", "A2"):
        ref_notes = np.loadtxt(d / "Annotations" / "Notes" / f"vocadito_1_notes{ann}.csv", delimiter=",")
        ok = 0
        for onset, hz, dur in ref_notes:
            mid = onset + dur / 2
            hit = [n for n in notes if n.start_s <= mid <= n.end_s]
            ok += bool(hit) and abs(100 * (hit[0].midi - float(hz_to_midi(hz)))) < 50
        out[f"note_accuracy_{ann}"] = ok / len(ref_notes)
    out["notes_found"] = len(notes)
    out["notes_annotated_A1"] = int(len(np.loadtxt(d / "Annotations" / "Notes" / "vocadito_1_notesA1.csv", delimiter=",")))
    return out


def ssvd(root: Path, durations: dict) -> dict:
    d = root / "ssvd_v2_subset" / "test"
    per_file = {}
    total_ok = total_n = 0
    offsets = []
    for wav in sorted(d.glob("*.flac")):
        ann = np.loadtxt(wav.with_suffix(".txt"), ndmin=2)
        _, _track, notes, orns = analyze(wav)
        collect_durations(orns, durations, "ssvd")
        diffs = []
        for on, off, midi in ann:
            # the detected note covering the annotated note's middle, else the one overlapping most
            mid = 0.5 * (on + off)
            hit = [n for n in notes if n.start_s <= mid <= n.end_s]
            if not hit:
                ov = [(min(off, n.end_s) - max(on, n.start_s), n) for n in notes]
                ov = [x for x in ov if x[0] > 0]
                hit = [max(ov, key=lambda x: x[0])[1]] if ov else []
            diffs.append(100 * (hit[0].midi - midi) if hit else np.nan)
        diffs = np.asarray(diffs)
        found = np.isfinite(diffs)
        offset = float(np.median(diffs[found])) if found.any() else 0.0
        offsets.append(offset)
        ok = int(np.sum(np.abs(diffs[found] - offset) < 50))
        per_file[wav.stem] = {"notes": len(ann), "correct": ok, "offset_cents": round(offset, 1)}
        total_ok += ok
        total_n += len(ann)
    return {"files": len(per_file), "notes": total_n, "note_accuracy_50c": total_ok / max(total_n, 1),
            "median_offset_cents": float(np.median(offsets)) if offsets else None, "per_file": per_file}


GT_PAIRS = [
    ("EN-Alto-2-Vibrato-Control", "EN-Alto-2-Vibrato-Vibrato"),
    ("EN-Tenor-1-Vibrato-Control", "EN-Tenor-1-Vibrato-Vibrato"),
    ("fr05_Control", "fr05_Vibrato"), ("ge06_Control", "ge06_Vibrato"), ("it05_Control", "it05_Vibrato"),
    ("zh05_Control", "zh05_Vibrato"),
    ("EN-Alto-1-Glissando-Control", "EN-Alto-1-Glissando-Glissando"),
    ("fr02_Control", "fr02_Glissando"), ("ge02_Control", "ge02_Glissando"), ("it02_Control", "it02_Glissando"),
    ("zh02_Control", "zh02_Glissando"),
]
SLIDES = ("slide_in", "slide_out", "portamento")


def coverage(track: PitchTrack, orns) -> dict:
    codes = ornament_frames(orns, n_frames=len(track.hz), hop_s=track.hop_s)
    v = track.hz > 0
    if not v.any():
        return {"vibrato": 0.0, "slides": 0.0}
    return {
        "vibrato": float(np.isin(codes[v], [ORNAMENT_CODES["vibrato"], ORNAMENT_CODES["trill"]]).mean()),
        "slides": float(np.isin(codes[v], [ORNAMENT_CODES[k] for k in SLIDES]).mean()),
    }


def gtsinger(root: Path, durations: dict) -> list[dict]:
    d = root / "gtsinger_demo"
    rows = []
    for plain, tech in GT_PAIRS:
        row = {"pair": tech}
        for label, name in (("control", plain), ("technique", tech)):
            path = d / f"{name}.flac"
            if not path.exists():
                break
            _, track, _notes, orns = analyze(path)
            collect_durations(orns, durations, "gtsinger")
            row[label] = coverage(track, orns)
        if "technique" in row:
            rows.append(row)
    return rows


def extra_real(root: Path, durations: dict) -> None:
    """More real singing for the duration statistics: the a cappella and Carnatic phrases."""
    for rel in ("smstools_sounds/singing-female.wav", "smstools_sounds/carnatic.wav", "smstools_sounds/vignesh.wav"):
        p = root / rel
        if p.exists():
            _, _, _, orns = analyze(p)
            collect_durations(orns, durations, "smstools")


def collect_durations(orns, durations: dict, source: str) -> None:
    for o in orns:
        if o.type in ("slide_in", "slide_out", "portamento", "grace"):
            durations[o.type].append((source, float(o.params["duration_ms"]), float(o.params.get("interval_cents", 0.0))))
        elif o.type == "vibrato":
            durations["vibrato"].append((source, float(o.params["rate_hz"]), float(o.params["extent_cents"])))


def summarise_durations(durations: dict) -> dict:
    out = {}
    for kind, rows in sorted(durations.items()):
        vals = np.array([r[1] for r in rows])
        ivs = np.abs(np.array([r[2] for r in rows]))
        if vals.size == 0:
            continue
        q = np.percentile(vals, [10, 25, 50, 75, 90])
        qi = np.percentile(ivs, [25, 50, 75])
        out[kind] = {"n": int(vals.size), "p10": q[0], "p25": q[1], "median": q[2], "p75": q[3], "p90": q[4],
                     "abs_second_param_p25_p50_p75": qi.tolist()}
    return out


def speed(root: Path) -> dict:
    y, sr = load_audio(root / "vocadito" / "Audio" / "vocadito_1.wav", sr=48000, mono=True)
    y = np.tile(y, int(np.ceil(180 * sr / len(y))))[: 180 * sr]
    track_pitch(y[:sr], sr=sr, tracker=CHOICE["tracker"])  # warm imports
    t0 = time.perf_counter()
    track = track_pitch(y, sr=sr, tracker=CHOICE["tracker"])
    t1 = time.perf_counter()
    notes = segment_notes(track)
    t2 = time.perf_counter()
    detect_ornaments(track, notes)
    t3 = time.perf_counter()
    estimate_key(y, sr=sr)
    t4 = time.perf_counter()
    return {"pitch_s": t1 - t0, "notes_s": t2 - t1, "ornaments_s": t3 - t2, "key_s": t4 - t3, "total_s": t4 - t0}


# ---------------------------------------------------------------------------------------------
# --bleed / --correction: measured side by side with an independent tracker (SwiftF0)

#: Backing bleed levels (RMS re the voice) of the voicing check.
BLEED_LEVELS_DB = (-15.0, -6.0)
#: A frame this close to a change of the true voicing is not scored (annotation boundaries are soft).
GUARD_S = 0.05
#: The singer's pauses start this long after (and end this long before) the annotated voicing:
#: the room's tail of the voice itself and the annotation's edges are no bleed.
PAUSE_GUARD_S = 0.3
#: SwiftF0 calls a frame voiced at this confidence (its documented threshold).
SWIFT_VOICED = 0.5
#: An in-tune note: its centre within this of a semitone (cents).
IN_TUNE_CENTS = 25.0


class Swift:
    """SwiftF0 (``swift-f0``, the ``peers`` extra): the independent tracker. ``track(y16)`` -> (times_s, hz, 0 = unvoiced)."""

    def __init__(self):
        try:
            import swift_f0
        except ImportError:
            raise SystemExit("SwiftF0 is not installed: pip install -e '.[peers]' (swift-f0 and onnxruntime)") from None
        self.m = swift_f0.SwiftF0(threads=1)

    def track(self, y16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = self.m.detect(np.asarray(y16, np.float32), SR)
        return np.asarray(r.timestamps, np.float64), np.where(np.asarray(r.confidence) >= SWIFT_VOICED, np.asarray(r.pitch_hz), 0.0)


def _at(times: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``values`` at the frames nearest to times ``t`` (0 outside)."""
    if times.size == 0:
        return np.zeros(t.size)
    hop = float(np.median(np.diff(times))) if times.size > 1 else 0.01
    idx = np.round((t - times[0]) / hop).astype(int)
    ok = (idx >= 0) & (idx < values.size)
    out = np.zeros(t.size)
    out[ok] = values[idx[ok]]
    return out


def _truth_voicing(root: Path, name: str, voice: np.ndarray, sr: int, swift: Swift) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(grid_s, voiced, pause)`` on a 10 ms grid from the annotation and the dry recording.

    ``voiced``: vocadito's frame f0 > 0, or inside an SSVD note span. ``pause``: the singer's pauses,
    where anything called voiced can only be bleed or noise: unvoiced in the annotation, at least
    ``PAUSE_GUARD_S`` from any voiced frame (the voice's own room tail), and quiet in the dry
    recording itself: 25 dB under its loud frames and without a pitch there (neither SwiftF0 nor
    Melisma's tracker finds one within 50 ms in the dry recording: some SSVD clips hold faint
    pitched sound, humming or the app's own tones, that the note annotation leaves out).
    """
    n_s = voice.size / sr
    grid = np.arange(0.0, n_s, 0.01)
    if name.startswith("vocadito"):
        ref = np.loadtxt(root / "vocadito" / "Annotations" / "F0" / "vocadito_1_f0.csv", delimiter=",")
        voiced = _at(ref[:, 0], (ref[:, 1] > 0).astype(float), grid) > 0
    else:
        ann = np.loadtxt(root / "ssvd_v2_subset" / "test" / f"{name.removeprefix('ssvd')}.txt", ndmin=2)
        voiced = np.zeros(grid.size, bool)
        for on, off, _m in ann:
            voiced |= (grid >= on) & (grid < off)
    hop, win = int(0.01 * sr), int(0.04 * sr)
    padded = np.pad(voice.astype(np.float64), (win // 2, win))
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[::hop][: grid.size]
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    quiet = level < np.percentile(level, 95) - 25.0
    from melisma.audio_io import resample

    dry16 = resample(voice, orig_sr=sr, target_sr=SR)
    dry = track_pitch(dry16, sr=SR)
    s_t, s_hz = swift.track(dry16)
    pitched = (_at(dry.times_s, dry.hz, grid) > 0) | (_at(s_t, s_hz, grid) > 0)
    pitched = np.convolve(pitched.astype(float), np.ones(11), mode="same") > 0
    quiet &= ~pitched
    g = int(round(PAUSE_GUARD_S / 0.01))
    near_voice = np.convolve(voiced.astype(float), np.ones(2 * g + 1), mode="same") > 0
    return grid, voiced, quiet & ~near_voice


def _scored_voiced(voiced: np.ndarray) -> np.ndarray:
    """Voiced frames farther than GUARD_S from the edge of their voiced span."""
    g = int(round(GUARD_S / 0.01))
    unv = np.convolve((~voiced).astype(float), np.ones(2 * g + 1), mode="same") > 0
    return voiced & ~unv


def _voices_for_bleed(root: Path, max_s: float, clips: int | None) -> list[tuple[str, np.ndarray]]:
    out = []
    y, _ = load_audio(root / "vocadito" / "Audio" / "vocadito_1.wav", sr=48000, mono=True)
    out.append(("vocadito_1", y[: int(max_s * 48000)]))
    for wav in sorted((root / "ssvd_v2_subset" / "test").glob("*.flac"))[: clips]:
        y, _ = load_audio(wav, sr=48000, mono=True)
        out.append((f"ssvd{wav.stem}", y[: int(max_s * 48000)]))
    return out


def bleed_voicing(root: Path, *, clips: int | None = None, max_s: float = 30.0) -> dict:
    """Voicing false alarm and recall on real vocals with real backing bleed, Melisma vs SwiftF0.

    Each real vocal (vocadito track 1; the SSVD clips, first ``max_s`` s) is recorded as a phone
    take over the multitrack's real band (drums + bass + other, looped), the band heard from the
    speaker at -15 and -6 dB RMS under the voice, both through a measured room, real noise at
    15-20 dB SNR, late by 100-300 ms, the phone's band, AAC 64 kb/s (tools/eval_mix_real.phone_take).
    Melisma runs its whole analysis (alignment, bleed removal, clean-up, pitch with the bleed gate)
    on the files; SwiftF0 runs on the take itself. Both are scored on the voice's timeline against
    the annotation: recall on the sung frames (vocadito: frame f0; SSVD: note spans; 50 ms from
    their edges left out), false alarms in the singer's pauses (unvoiced in the annotation, 300 ms
    from any voiced frame, quiet and unpitched in the dry recording: see :func:`_truth_voicing`). "Melisma, no
    gate" is the same run's track before the bleed gate. Ghost notes: Melisma's notes with over
    80 % of their length in the singer's pauses.
    """
    import tempfile

    import melisma.analysis.bleed_voicing as bv
    from melisma.analysis.notes import segment_notes
    from melisma.audio_io import write_audio
    from melisma.pipeline.analyze import analyze

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tools.eval_mix_real import NOISES, ROOMS, loop_to, phone_take, stems_voice_and_backing, write_take

    swift = Swift()
    _v, band = stems_voice_and_backing(root, 48000)
    captured: dict = {}
    real_reject = bv.reject_bleed

    def capture(track, *a, **k):  # the track before the gate, for the "no gate" row
        captured["before"] = track
        return real_reject(track, *a, **k)

    bv.reject_bleed = capture
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="melisma-eval-bleed-") as tmp:
            for vi, (name, voice) in enumerate(_voices_for_bleed(root, max_s, clips)):
                for li, bleed_db in enumerate(BLEED_LEVELS_DB):
                    i = 2 * vi + li
                    rng = np.random.default_rng(700 + i)
                    offset = float(rng.uniform(100, 300))
                    snr = float(rng.uniform(15, 20))
                    room, noise = root / ROOMS[i % len(ROOMS)], root / NOISES[i % len(NOISES)]
                    backing = loop_to(band, voice.size)
                    take = phone_take(voice, backing, 48000, offset_ms=offset, bleed_db=bleed_db, room=room, noise=noise,
                                      snr_db=snr, seed=i)
                    tp, bp = Path(tmp) / f"take{i}.m4a", Path(tmp) / f"backing{i}.flac"
                    write_take(tp, take, 48000)
                    write_audio(bp, backing, sr=48000, overwrite=True)
                    captured.clear()
                    plan = analyze(tp, bp, accept_alignment_guess=True)
                    rec = plan.record
                    f0 = rec["pitch"]["f0"]
                    m_hz = np.asarray(f0["hz"], np.float64)
                    m_t = np.arange(m_hz.size) * float(f0["hop_s"])
                    before = captured.get("before")
                    b_hz = np.asarray(before.hz, np.float64) if before is not None else m_hz
                    y16, _ = load_audio(tp, sr=SR, mono=True)
                    s_t, s_hz = swift.track(y16)
                    s_t = s_t - offset / 1000.0  # the take is late: SwiftF0's times onto the voice's timeline
                    grid, truth, pause = _truth_voicing(root, name, voice, 48000, swift)
                    sung = _scored_voiced(truth)
                    row = {"take": name, "bleed_db": bleed_db, "room": room.stem, "noise": noise.stem, "snr_db": round(snr, 1),
                           "alignment_err_ms": round(float(rec["alignment"]["offset_ms"]) - offset, 2),
                           "alignment": rec["alignment"]["decision"],
                           "bleed_removed": bool(rec["cleanup"]["actions"][0].get("detected")),
                           "gate": rec["pitch"].get("bleed_gate", {"applied": False})}
                    for label, t, hz in (("melisma", m_t, m_hz), ("melisma_no_gate", m_t, b_hz), ("swiftf0", s_t, s_hz)):
                        ev = _at(t, hz, grid) > 0
                        row[label] = {"vfa": float(np.mean(ev[pause])) if pause.any() else 0.0, "recall": float(np.mean(ev[sung])),
                                      "fa_frames": int(np.sum(ev[pause])), "unvoiced_frames": int(np.sum(pause)),
                                      "voiced_frames": int(np.sum(sung)), "hit_frames": int(np.sum(ev[sung]))}
                    ghosts = {}
                    for label, notes in (("melisma", rec["pitch"]["notes"]),
                                         ("melisma_no_gate", [n.to_dict() for n in segment_notes(before)] if before is not None
                                          else rec["pitch"]["notes"])):
                        g = 0
                        for n in notes:
                            sel = (grid >= n["start_s"]) & (grid <= n["end_s"])
                            if sel.any() and np.mean(pause[sel]) > 0.8:
                                g += 1
                        ghosts[label] = g
                    row["ghost_notes"] = ghosts
                    rows.append(row)
                    m, b, s = row["melisma"], row["melisma_no_gate"], row["swiftf0"]
                    print(f"{name:12s} {bleed_db:+4.0f} dB  VFA melisma {m['vfa']:.3f} (no gate {b['vfa']:.3f}) swiftf0 {s['vfa']:.3f}  "
                          f"recall {m['recall']:.3f} ({b['recall']:.3f}) {s['recall']:.3f}  ghost notes {ghosts['melisma']} "
                          f"({ghosts['melisma_no_gate']})  align {row['alignment_err_ms']:+.1f} ms {row['alignment']}  "
                          f"bleed removed {row['bleed_removed']}  gate {row['gate'].get('rejected_frames', 0)} frames", flush=True)
    finally:
        bv.reject_bleed = real_reject
    overall = {}
    for bleed_db in BLEED_LEVELS_DB:
        sub = [r for r in rows if r["bleed_db"] == bleed_db]
        o = {}
        for label in ("melisma", "melisma_no_gate", "swiftf0"):
            fa = sum(r[label]["fa_frames"] for r in sub)
            uv = sum(r[label]["unvoiced_frames"] for r in sub)
            hit = sum(r[label]["hit_frames"] for r in sub)
            vv = sum(r[label]["voiced_frames"] for r in sub)
            o[label] = {"vfa": fa / max(uv, 1), "recall": hit / max(vv, 1)}
        o["ghost_notes"] = {k: sum(r["ghost_notes"][k] for r in sub) for k in ("melisma", "melisma_no_gate")}
        o["takes"] = len(sub)
        overall[f"{bleed_db:+.0f} dB"] = o
    return {"rows": rows, "overall": overall}


def _note_centres(t: np.ndarray, hz: np.ndarray, spans) -> np.ndarray:
    """Per span ``(start_s, end_s)``, the median voiced f0 (MIDI) over its middle 60 %; NaN without any."""
    out = np.full(len(spans), np.nan)
    for i, (a, b) in enumerate(spans):
        d = b - a
        sel = (t >= a + 0.2 * d) & (t <= b - 0.2 * d) & (hz > 0)
        if np.count_nonzero(sel) >= 2:
            out[i] = float(np.median(hz_to_midi(hz[sel])))
    return out


def _swift_cached(swift: Swift, y16: np.ndarray, cache: Path | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """SwiftF0 on ``y16``, kept in ``cache/name.npz`` between runs when a cache folder is given."""
    f = None if cache is None else cache / f"swift_{name}.npz"
    if f is not None and f.exists():
        z = np.load(f)
        return z["t"], z["hz"]
    t, hz = swift.track(y16)
    if f is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp.npz")
        np.savez(tmp, t=t, hz=hz)
        tmp.replace(f)
    return t, hz


def _moved_detail(name: str, spans, ok: np.ndarray, c0: np.ndarray, c1: np.ndarray, moved: np.ndarray, pitch: dict, report: dict) -> list[dict]:
    """What the engine did to each in-tune note SwiftF0 saw moved: the engine's notes over its span."""
    out = []
    kept = [s for s, k in zip(spans, ok, strict=False) if k]
    shifts = {c["note"]: c["shift_cents"] for c in report.get("corrections", [])}
    for i in np.flatnonzero(moved):
        a, b = kept[i]
        ours = [(j, n) for j, n in enumerate(pitch["notes"]) if n["end_s"] > a and n["start_s"] < b]
        d = {"take": name, "span": [round(float(a), 3), round(float(b), 3)], "swift_before": round(float(c0[i]), 3),
             "swift_after": round(float(c1[i]), 3),
             "engine_notes": [{"start_s": n["start_s"], "end_s": n["end_s"], "midi": n["midi"], "target_midi": n.get("target_midi"),
                               "shift_cents": shifts.get(j)} for j, n in ours]}
        out.append(d)
        print(f"    moved {d['span']}: SwiftF0 {d['swift_before']:.2f} -> {d['swift_after']:.2f}; engine "
              + "; ".join(f"[{n['start_s']:.2f}-{n['end_s']:.2f}] {n['midi']:.2f}->{n['target_midi']} ({n['shift_cents']} c)"
                          for n in d["engine_notes"]), flush=True)
    return out


def correction_check(root: Path, *, clips: int | None = None, correction: float = 1.0, cache: Path | None = None) -> dict:
    """Correction without a melody (key mode), measured by SwiftF0 on the corrected vocal.

    Each real take (vocadito track 1, the SSVD clips) goes through the engine's pitch analysis (key
    estimated from the sung notes) and correction at ``correction``; SwiftF0 tracks the take and
    the corrected vocal. Per annotated note, its centre is SwiftF0's median f0 over the middle 60 %
    of the annotated span. Error: cents from the nearest semitone (A440 grid: no backing, so no
    band tuning), before and after. In tune: within 25 c of a semitone before; moved: that note's
    nearest semitone after is another one.
    """
    from melisma.analysis.intonation import analyze_pitch, pitch_tracker_named
    from melisma.audio_io import resample
    from melisma.render.pitch import correct_vocal, correction_from_sliders

    swift = Swift()
    settings = correction_from_sliders({}, correction=correction)
    takes = [("vocadito_1", root / "vocadito" / "Audio" / "vocadito_1.wav",
              [(on, on + dur) for on, _hz, dur in np.loadtxt(root / "vocadito" / "Annotations" / "Notes" / "vocadito_1_notesA1.csv", delimiter=",")])]
    for wav in sorted((root / "ssvd_v2_subset" / "test").glob("*.flac"))[: clips]:
        takes.append((f"ssvd{wav.stem}", wav, [(on, off) for on, off, _m in np.loadtxt(wav.with_suffix(".txt"), ndmin=2)]))
    rows = []
    all_before, all_after = [], []
    for name, path, spans in takes:
        y, sr = load_audio(path, sr=48000, mono=True)
        pitch = analyze_pitch(y, sr=sr, tracker=pitch_tracker_named(None))
        corrected, creport = correct_vocal(y, pitch, sr=sr, settings=settings)
        t0, h0 = _swift_cached(swift, resample(y, orig_sr=sr, target_sr=SR), cache, name)
        t1, h1 = swift.track(resample(corrected, orig_sr=sr, target_sr=SR))
        c0, c1 = _note_centres(t0, h0, spans), _note_centres(t1, h1, spans)
        ok = np.isfinite(c0) & np.isfinite(c1)
        c0, c1 = c0[ok], c1[ok]
        e0 = np.abs(100 * (c0 - np.round(c0)))
        e1 = np.abs(100 * (c1 - np.round(c1)))
        in_tune = e0 <= IN_TUNE_CENTS
        moved = in_tune & (np.round(c1) != np.round(c0))
        all_before.append(e0)
        all_after.append(e1)
        row = {"take": name, "notes": int(ok.sum()), "key": pitch["key"].get("name"), "key_confidence": pitch["key"].get("confidence"),
               "median_before_c": float(np.median(e0)), "p90_before_c": float(np.percentile(e0, 90)),
               "median_after_c": float(np.median(e1)), "p90_after_c": float(np.percentile(e1, 90)),
               "in_tune": int(in_tune.sum()), "in_tune_moved": int(moved.sum()),
               "any_moved": int(np.sum(np.round(c1) != np.round(c0)))}
        rows.append(row)
        print(f"{name:12s} notes {row['notes']:3d}  key {row['key']} ({row['key_confidence']:.2f})  before median {row['median_before_c']:5.1f} "
              f"p90 {row['p90_before_c']:5.1f}  after median {row['median_after_c']:5.1f} p90 {row['p90_after_c']:5.1f}  "
              f"in tune {row['in_tune']:3d}, moved {row['in_tune_moved']}  (any note to another semitone {row['any_moved']})", flush=True)
        if cache is not None:  # what the engine found, for looking at the moved notes afterwards
            (cache / f"pitch_{name}.json").write_text(json.dumps({"notes": pitch["notes"], "key": pitch["key"], "f0": pitch["f0"]}))
            np.savez(cache / f"swift_after_{name}.npz", t=t1, hz=h1)
        row["moved_notes"] = _moved_detail(name, spans, ok, c0, c1, moved, pitch, creport)
    b, a = np.concatenate(all_before), np.concatenate(all_after)
    overall = {"takes": len(rows), "notes": int(b.size), "median_before_c": float(np.median(b)), "p90_before_c": float(np.percentile(b, 90)),
               "median_after_c": float(np.median(a)), "p90_after_c": float(np.percentile(a, 90)),
               "in_tune": sum(r["in_tune"] for r in rows), "in_tune_moved": sum(r["in_tune_moved"] for r in rows),
               "any_moved": sum(r["any_moved"] for r in rows)}
    return {"rows": rows, "overall": overall, "correction": correction}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("MELISMA_SHARED_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--tracker", choices=("dsp", "model"), default="dsp", help="pitch tracker: DSP baseline or the int8 model")
    ap.add_argument("--detector", choices=("dsp", "model"), default="dsp", help="ornament detector: DSP rules or the int8 model")
    ap.add_argument("--only", choices=("base", "bleed", "correction"), action="append",
                    help="run only these parts (repeatable): base = sections 1-5, bleed = voicing under real backing "
                         "bleed vs SwiftF0, correction = correction without a melody measured by SwiftF0; default all")
    ap.add_argument("--clips", type=int, default=None, help="bleed/correction: only the first N SSVD clips (default all)")
    ap.add_argument("--cache", help="correction: keep SwiftF0's tracks of the unchanged takes here between runs (a development aid)")
    args = ap.parse_args(argv)
    parts = set(args.only or ("base", "bleed", "correction"))
    CHOICE["tracker"], CHOICE["detector"] = _tracker(args.tracker), _detector(args.detector)
    print(f"tracker {args.tracker}, ornament detector {args.detector}")
    root = Path(args.data)
    if not root.is_dir():
        print(f"no data at {root}; pass --data", file=sys.stderr)
        return 2
    report: dict = {}
    if "bleed" in parts:
        print("== voicing under real backing bleed: Melisma's whole analysis vs SwiftF0 on the same takes")
        report["bleed"] = b = bleed_voicing(root, clips=args.clips)
        print(f"{'bleed':>7s} {'takes':>5s} | {'VFA melisma':>11s} {'no gate':>8s} {'SwiftF0':>8s} | "
              f"{'recall melisma':>14s} {'no gate':>8s} {'SwiftF0':>8s} | ghost notes (no gate)")
        for level, o in b["overall"].items():
            m, n, w = o["melisma"], o["melisma_no_gate"], o["swiftf0"]
            print(f"{level:>7s} {o['takes']:5d} | {m['vfa']:11.3f} {n['vfa']:8.3f} {w['vfa']:8.3f} | "
                  f"{m['recall']:14.3f} {n['recall']:8.3f} {w['recall']:8.3f} | {o['ghost_notes']['melisma']} "
                  f"({o['ghost_notes']['melisma_no_gate']})")
    if "correction" in parts:
        print("\n== correction without a melody (key mode, correction 1), note centres by SwiftF0 on the rendered vocal")
        report["correction"] = c = correction_check(root, clips=args.clips, cache=Path(args.cache) if args.cache else None)
        o = c["overall"]
        print(f"overall: {o['takes']} takes, {o['notes']} notes; |cents from semitone| before median {o['median_before_c']:.1f} "
              f"p90 {o['p90_before_c']:.1f}, after median {o['median_after_c']:.1f} p90 {o['p90_after_c']:.1f}; "
              f"in tune {o['in_tune']}, moved to another semitone {o['in_tune_moved']} (any note {o['any_moved']})")
    if "base" not in parts:
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1, default=float))
        return 0
    durations: dict = defaultdict(list)

    report["vocadito"] = v = vocadito(root, durations)
    print("== vocadito track 1 (human f0 annotation)")
    print(
        f"raw pitch accuracy {v['raw_pitch_accuracy']:.3f}  voicing recall {v['voicing_recall']:.3f}  "
        f"false alarm {v['voicing_false_alarm']:.3f}  median error {v['median_cents_error']:.1f} cents  "
        f"octave errors {v['octave_errors']:.3f}"
    )
    print(
        f"note pitch accuracy (50 c) vs A1 {v['note_accuracy_A1']:.3f}, vs A2 {v['note_accuracy_A2']:.3f}; "
        f"{v['notes_found']} notes found, {v['notes_annotated_A1']} annotated"
    )

    report["ssvd"] = s = ssvd(root, durations)
    print(
        f"\n== SSVD v2 sight-singing ({s['files']} files, {s['notes']} notes; per-file offset removed, "
        f"median offset {s['median_offset_cents']:+.1f} cents = ours minus annotation)"
    )
    print(f"note pitch accuracy (50 c): {s['note_accuracy_50c']:.3f}")
    worst = sorted(s["per_file"].items(), key=lambda kv: kv[1]["correct"] / kv[1]["notes"])[:3]
    print("hardest files: " + ", ".join(f"{k} {r['correct']}/{r['notes']}" for k, r in worst))

    report["gtsinger"] = rows = gtsinger(root, durations)
    print("\n== GTSinger pairs: share of voiced frames in vibrato/trill and in slides (control -> technique)")
    print(f"{'pair':34s} {'vibrato':>17s} {'slides':>17s}")
    for r in rows:
        c, t = r["control"], r["technique"]
        print(f"{r['pair']:34s} {c['vibrato']:7.2f} -> {t['vibrato']:5.2f}  {c['slides']:7.2f} -> {t['slides']:5.2f}")

    extra_real(root, durations)
    report["durations"] = dsum = summarise_durations(durations)
    print("\n== ornament durations measured on the real recordings (ms; vibrato: rate Hz)")
    for kind, q in dsum.items():
        print(
            f"{kind:11s} n={q['n']:4d}  p10 {q['p10']:6.1f}  p25 {q['p25']:6.1f}  median {q['median']:6.1f}  "
            f"p75 {q['p75']:6.1f}  p90 {q['p90']:6.1f}   |interval/extent| p25/50/75 "
            + "/".join(f"{x:.0f}" for x in q["abs_second_param_p25_p50_p75"])
        )

    if not args.skip_speed:
        report["speed"] = sp = speed(root)
        print("\n== speed, 3-minute take at 48 kHz, one process: " + "  ".join(f"{k} {v:.2f}" for k, v in sp.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
