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

Usage::

    python tools/eval_pitch_real.py [--data ../shared/data] [--json out.json]
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("MELISMA_SHARED_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--tracker", choices=("dsp", "model"), default="dsp", help="pitch tracker: DSP baseline or the int8 model")
    ap.add_argument("--detector", choices=("dsp", "model"), default="dsp", help="ornament detector: DSP rules or the int8 model")
    args = ap.parse_args(argv)
    CHOICE["tracker"], CHOICE["detector"] = _tracker(args.tracker), _detector(args.detector)
    print(f"tracker {args.tracker}, ornament detector {args.detector}")
    root = Path(args.data)
    if not root.is_dir():
        print(f"no data at {root}; pass --data", file=sys.stderr)
        return 2
    durations: dict = defaultdict(list)
    report: dict = {}

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
