"""Evaluate the ornament classifier: held-out generated contours, real GTSinger pairs, int8 vs float, speed.

Runs in the runtime venv (no TensorFlow; the float model, if ``build/ornaments`` holds one from
training, runs through the same TFLite runtime)::

    .venv/bin/python models/ornaments/eval_ornaments.py [--n 200] [--seed 7] [--real DIR]

Reports (markdown on stdout, JSON to ``--json``):

1. per-class frame precision / recall / F1, and segment-wise (every run of one true class
   classified by the majority of its frames), on held-out generated contours (seeds never used in
   training: training uses seed 0, validation seed 1, this seed 7), for the int8 model and,
   when present, the float model, and the share of frames where int8 and float agree;
2. per-type event F1 (an ornament found if a record of its class overlaps it by at least 30 % of
   the shorter span, as in ``tests/melisma/analysis/test_ornaments.py``) for the model's records
   and for ``DspOrnamentDetector`` on the same tracks;
3. coverage on the GTSinger plain-vs-technique pairs: share of voiced frames inside vibrato/trill
   records (Vibrato pairs) or slide records (slide_in/slide_out/portamento, Glissando pairs), model
   vs DSP; the technique take should have more;
4. speed: milliseconds per second of audio for the detector (features + network + records), and
   per network call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import itertools  # noqa: E402 -- after the sys.path set-up above

import make_contours  # noqa: E402
from melisma.analysis.notes import segment_notes  # noqa: E402
from melisma.analysis.ornament_model import (  # noqa: E402
    FRAME_CLASSES,
    TfliteOrnamentDetector,
    contour_features,
    frame_probabilities,
)
from melisma.analysis.ornaments import ORNAMENT_CODES, DspOrnamentDetector, match_spans, ornament_frames  # noqa: E402

#: Ornament record type -> class, for event scoring and coverage.
RECORD_CLASS = {"vibrato": "vibrato", "trill": "trill", "mordent": "trill", "slide_in": "slide", "slide_out": "slide",
                "portamento": "slide", "grace": "grace"}
EVENT_CLASSES = ("vibrato", "slide", "grace", "trill")
PAIRS = {  # technique take, plain take, technique
    "EN-Alto-2": ("EN-Alto-2-Vibrato-Vibrato", "EN-Alto-2-Vibrato-Control", "vibrato"),
    "EN-Tenor-1": ("EN-Tenor-1-Vibrato-Vibrato", "EN-Tenor-1-Vibrato-Control", "vibrato"),
    "fr05": ("fr05_Vibrato", "fr05_Control", "vibrato"),
    "ge06": ("ge06_Vibrato", "ge06_Control", "vibrato"),
    "it05": ("it05_Vibrato", "it05_Control", "vibrato"),
    "zh05": ("zh05_Vibrato", "zh05_Control", "vibrato"),
    "EN-Alto-1": ("EN-Alto-1-Glissando-Glissando", "EN-Alto-1-Glissando-Control", "slide"),
    "fr02": ("fr02_Glissando", "fr02_Control", "slide"),
    "ge02": ("ge02_Glissando", "ge02_Control", "slide"),
    "it02": ("it02_Glissando", "it02_Control", "slide"),
    "zh02": ("zh02_Glissando", "zh02_Control", "slide"),
}
TECHNIQUE_TYPES = {"vibrato": ("vibrato", "trill"), "slide": ("slide_in", "slide_out", "portamento")}


def prf(y: np.ndarray, p: np.ndarray) -> dict[str, dict[str, float]]:
    """Per-class precision, recall, F1 and support of frame labels."""
    out = {}
    for c, name in enumerate(FRAME_CLASSES):
        tp = int(np.sum((p == c) & (y == c)))
        n_pred, n_true = int(np.sum(p == c)), int(np.sum(y == c))
        prec, rec = tp / max(n_pred, 1), tp / max(n_true, 1)
        out[name] = {"precision": prec, "recall": rec, "f1": 2 * prec * rec / max(prec + rec, 1e-9), "support": n_true}
    return out


def segments(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segment-wise classification: every run of one true class is one segment, predicted as the
    majority of its frames' predicted labels. Returns (true classes, predicted classes)."""
    edges = np.flatnonzero(np.diff(y)) + 1
    bounds = np.r_[0, edges, len(y)]
    true_c, pred_c = [], []
    for a, b in itertools.pairwise(bounds):
        true_c.append(int(y[a]))
        pred_c.append(int(np.argmax(np.bincount(p[a:b], minlength=len(FRAME_CLASSES)))))
    return np.array(true_c), np.array(pred_c)


def event_counts(found, truth) -> dict[str, list[int]]:
    """Per class ``[true positives, found, truth]`` with the 30 %-of-the-shorter-span overlap rule."""
    out = {}
    for cls in EVENT_CLASSES:
        det = [(o.start_s, o.end_s) for o in found if RECORD_CLASS.get(o.type) == cls]
        ref = [(o["start_s"], o["end_s"]) for o in truth if RECORD_CLASS.get(o["type"]) == cls]
        out[cls] = [match_spans(det, ref), len(det), len(ref)]
    return out


def _f1(c: list[int]) -> dict[str, float]:
    tp, nd, nr = c
    p, r = tp / max(nd, 1), tp / max(nr, 1)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-9), "n": nr}


def eval_generated(det: TfliteOrnamentDetector, float_model, n: int, seed: int) -> dict:
    dsp = DspOrnamentDetector()
    ys, ps, pf, raw8, rawf = [], [], [], [], []
    seg_t, seg_p = [], []
    ev_model = {c: [0, 0, 0] for c in EVENT_CLASSES}
    ev_dsp = {c: [0, 0, 0] for c in EVENT_CLASSES}
    by_source = {s: ([], []) for s in make_contours.SOURCES}
    examples = make_contours.make_dataset(n, seed=seed)
    for e in examples:
        probs = det.frame_probabilities(e.track)
        labels = det.frame_labels(e.track, probs=probs)
        raw8.append(_raw_labels(probs, e.track))
        ys.append(e.labels)
        ps.append(labels)
        st, sp = segments(e.labels, labels)
        seg_t.append(st)
        seg_p.append(sp)
        by_source[e.source][0].append(e.labels)
        by_source[e.source][1].append(labels)
        if float_model is not None:
            probs_f = frame_probabilities(contour_features(e.track), float_model)
            pf.append(det.frame_labels(e.track, probs=probs_f))
            rawf.append(_raw_labels(probs_f, e.track))
        notes = segment_notes(e.track)
        truth = make_contours.events(e.ornaments)  # no quick steps, faint wobbles, hidden slides
        for cls, c in event_counts(det.detect(e.track, notes), truth).items():
            ev_model[cls] = [a + b for a, b in zip(ev_model[cls], c, strict=False)]
        for cls, c in event_counts(dsp.detect(e.track, notes), truth).items():
            ev_dsp[cls] = [a + b for a, b in zip(ev_dsp[cls], c, strict=False)]
    y, p = np.concatenate(ys), np.concatenate(ps)
    out = {"n_contours": n, "seed": seed, "frames": int(len(y)), "int8": prf(y, p),
           "int8_raw": prf(y, np.concatenate(raw8)),
           "segments": prf(np.concatenate(seg_t), np.concatenate(seg_p)),
           "int8_by_source": {s: prf(np.concatenate(a), np.concatenate(b)) for s, (a, b) in by_source.items() if a},
           "events_model": {c: _f1(v) for c, v in ev_model.items()},
           "events_dsp": {c: _f1(v) for c, v in ev_dsp.items()}}
    if pf:
        q = np.concatenate(pf)
        out["float"] = prf(y, q)
        out["float_raw"] = prf(y, np.concatenate(rawf))
        out["int8_float_agreement"] = float(np.mean(q == p))
    return out


def _raw_labels(probs: np.ndarray, track) -> np.ndarray:
    """The network's own answer: most likely class per frame, no decoding (5 ms tracks only)."""
    labels = np.argmax(probs, axis=1).astype(np.int8)
    labels[np.asarray(track.hz)[: len(labels)] <= 0] = 0
    return labels


def coverage(records, n_frames: int, hop_s: float, voiced: np.ndarray, technique: str) -> float:
    codes = ornament_frames(records, n_frames=n_frames, hop_s=hop_s)
    want = [ORNAMENT_CODES[t] for t in TECHNIQUE_TYPES[technique]]
    return float(np.mean(np.isin(codes[voiced], want))) if voiced.any() else 0.0


def eval_real(det: TfliteOrnamentDetector, real_dir: Path) -> dict:
    from melisma.analysis.pitch import track_pitch
    from melisma.audio_io import load_audio

    dsp = DspOrnamentDetector()
    rows = {}
    for name, (tech, plain, technique) in PAIRS.items():
        row = {"technique": technique}
        for role, stem in (("technique_take", tech), ("plain_take", plain)):
            path = real_dir / f"{stem}.flac"
            if not path.is_file():
                break
            y, sr = load_audio(path, sr=16000, mono=True)
            track = track_pitch(y, sr=sr)
            notes = segment_notes(track)
            v = track.hz > 0
            row[role] = {
                "model": coverage(det.detect(track, notes), len(track.hz), track.hop_s, v, technique),
                "dsp": coverage(dsp.detect(track, notes), len(track.hz), track.hop_s, v, technique),
            }
        else:
            rows[name] = row
    return rows


def speed(det: TfliteOrnamentDetector) -> dict:
    e = make_contours.make_example(424242, "tracker")
    notes = segment_notes(e.track)
    det.detect(e.track, notes)
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        det.detect(e.track, notes)
    per_take = (time.perf_counter() - t0) / reps
    x = np.zeros((1, *det.model.input_shape[1:]), np.float32)
    t0 = time.perf_counter()
    for _ in range(50):
        det.model.predict(x)
    per_call = (time.perf_counter() - t0) / 50
    return {"ms_per_audio_s": 1000.0 * per_take / e.track.duration_s, "ms_per_window": 1000.0 * per_call,
            "audio_s": e.track.duration_s}


def report(res: dict) -> str:
    lines = []
    g = res["generated"]
    lines.append(f"## Held-out generated contours (n={g['n_contours']}, seed {g['seed']}, {g['frames']} frames)\n")
    lines.append("Decoded = the detector's frame labels (biased Viterbi); raw = the network's most likely class per frame.\n")
    lines.append("| class | precision | recall | F1 (int8) | F1 (float) | raw F1 (int8) | raw F1 (float) | frames |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for c in FRAME_CLASSES:
        m = g["int8"][c]
        fl = f"{g['float'][c]['f1']:.3f}" if "float" in g else "-"
        rf = f"{g['float_raw'][c]['f1']:.3f}" if "float_raw" in g else "-"
        lines.append(f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {fl} | "
                     f"{g['int8_raw'][c]['f1']:.3f} | {rf} | {m['support']} |")
    lines.append("\n### Segment-wise (each run of one true class, classified by the majority of its frames)\n")
    lines.append("| class | precision | recall | F1 | segments |")
    lines.append("|---|---|---|---|---|")
    for c in FRAME_CLASSES:
        m = g["segments"][c]
        lines.append(f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    if "int8_float_agreement" in g:
        lines.append(f"\nint8 vs float frame agreement: {100 * g['int8_float_agreement']:.2f} %")
    for s, t in g["int8_by_source"].items():
        lines.append(f"\nframe F1 on {s} contours (int8): " + ", ".join(f"{c} {t[c]['f1']:.3f}" for c in FRAME_CLASSES))
    lines.append("\n### Events (records; found if overlap >= 30 % of the shorter span)\n")
    lines.append("| class | model P | model R | model F1 | DSP P | DSP R | DSP F1 | events |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for c in EVENT_CLASSES:
        m, d = g["events_model"][c], g["events_dsp"][c]
        lines.append(f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {d['precision']:.3f} | "
                     f"{d['recall']:.3f} | {d['f1']:.3f} | {m['n']} |")
    if res.get("real"):
        lines.append("\n## GTSinger pairs: coverage of the technique (share of voiced frames)\n")
        lines.append("| pair | technique | model: plain -> technique | DSP: plain -> technique | model margin | DSP margin |")
        lines.append("|---|---|---|---|---|---|")
        wins = {"model": 0, "dsp": 0}
        margins = {"model": [], "dsp": []}
        for name, r in res["real"].items():
            mm = r["technique_take"]["model"] - r["plain_take"]["model"]
            dm = r["technique_take"]["dsp"] - r["plain_take"]["dsp"]
            margins["model"].append(mm)
            margins["dsp"].append(dm)
            wins["model"] += mm > 0
            wins["dsp"] += dm > 0
            lines.append(f"| {name} | {r['technique']} | {r['plain_take']['model']:.3f} -> {r['technique_take']['model']:.3f} | "
                         f"{r['plain_take']['dsp']:.3f} -> {r['technique_take']['dsp']:.3f} | {mm:+.3f} | {dm:+.3f} |")
        n = len(res["real"])
        lines.append(f"\ntechnique take higher: model {wins['model']}/{n}, DSP {wins['dsp']}/{n}; "
                     f"mean margin model {np.mean(margins['model']):+.3f}, DSP {np.mean(margins['dsp']):+.3f}; "
                     f"smallest margin model {np.min(margins['model']):+.3f}, DSP {np.min(margins['dsp']):+.3f}")
    if "speed" in res:
        s = res["speed"]
        lines.append(f"\nspeed (this machine, 1 thread): {s['ms_per_audio_s']:.2f} ms per second of audio "
                     f"(features + network + records), {s['ms_per_window']:.2f} ms per 2.56 s window")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=HERE / "melisma_ornaments_int8.tflite")
    ap.add_argument("--float-model", type=Path, default=REPO / "build" / "ornaments" / "melisma_ornaments_float.tflite")
    ap.add_argument("--n", type=int, default=200, help="held-out phrases (half tracker-made)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "gtsinger_demo")
    ap.add_argument("--json", type=Path, default=REPO / "build" / "ornaments" / "eval.json")
    args = ap.parse_args(argv)
    det = TfliteOrnamentDetector(model_path=args.model)
    float_model = None
    if args.float_model.is_file():
        from melisma.models_runtime import TfliteModel

        float_model = TfliteModel(args.float_model)
    res = {"model": str(args.model), "bytes": args.model.stat().st_size,
           "generated": eval_generated(det, float_model, args.n, args.seed)}
    if args.real.is_dir():
        res["real"] = eval_real(det, args.real)
    res["speed"] = speed(det)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    print(f"model {args.model} ({res['bytes']} bytes)\n")
    print(report(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
