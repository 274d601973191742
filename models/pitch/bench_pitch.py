"""Side-by-side pitch tracker benchmark: the melisma int8 model vs SwiftF0, CREPE tiny, pYIN and the DSP tracker.

One run, one thread per tracker, the same audio for all. Evaluation data (none of it is used for
training; the training set is synthetic with seeds 0..n-1):

* **vocadito track 1** (``$MELISMA_SHARED_DATA/vocadito``): frame metrics against the human f0
  annotation; note pitch accuracy against annotators A1 and A2;
* **SSVD v2 sight-singing subset** (``ssvd_v2_subset/test``, real phone recordings): note pitch
  accuracy after removing a per-file offset (the annotations sit 15-30 cents above the audio);
* **generated held-out set**: synthetic phone takes from ``make_pitch_data.make_clip`` with seeds
  900000+ (never trained on): frame metrics against the exact f0 and note accuracy.

Metrics: raw pitch accuracy (voiced reference frames whose estimate is voiced and within 50
cents), voicing recall and false alarm, overall accuracy (MIREX: the share of all frames that
are right, voiced ones in voicing and pitch, unvoiced ones in voicing), median absolute cents error (frames voiced in both), note
accuracy (the median estimated pitch over the middle half of an annotated note within 50 cents),
time per second of audio on one thread (wall clock, this shared machine: indicative), model size.
It also runs the streaming mode (20 ms blocks) and compares it with offline tracking.

Run in the training environment (it has swift-f0, torchcrepe and librosa)::

    nice python models/pitch/bench_pitch.py [--float-model work/melisma_pitch_float.tflite] [--json out.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))  # make_pitch_data

from melisma.analysis.pitch import DspPitchTracker, hz_to_midi  # noqa: E402
from melisma.analysis.pitch_model import (  # noqa: E402
    SR,
    StreamingPitchModel,
    TflitePitchTracker,
    default_model_path,
)
from melisma.audio_io import load_audio  # noqa: E402

SHARED = Path(os.environ.get("MELISMA_SHARED_DATA", REPO.parent / "shared" / "data"))


# --------------------------------------------------------------------------------------------
# trackers: each returns (frame times s, f0 Hz with 0 = unvoiced) for 16 kHz mono audio


class Tracker:
    name = ""
    size = "-"

    def __call__(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class Melisma(Tracker):
    def __init__(self, path: Path, label: str, thresholds: tuple[float, float | None] | None = None):
        self.name = label
        self.t = TflitePitchTracker(model_path=path, num_threads=1)
        if thresholds is not None:
            self.t.voicing_threshold, self.t.voicing_threshold_low = thresholds
        self.size = f"{path.stat().st_size / 1024:.0f} KB"

    def __call__(self, y):
        tr = self.t.track(y, sr=SR)
        return tr.times_s, tr.hz


def parse_model_spec(spec: str) -> tuple[Path, str, tuple[float, float | None] | None]:
    """``LABEL=PATH[@HIGH[,LOW]]`` -> (path, label, voicing thresholds or None for the tracker's own).

    >>> parse_model_spec("old=/m/pitch.tflite@0.9,0.4")
    (PosixPath('/m/pitch.tflite'), 'old', (0.9, 0.4))
    """
    label, eq, rest = spec.rpartition("=")
    path, _, thr = rest.partition("@")
    if not eq or not label or not path:
        raise SystemExit(f"--compare-model {spec!r}: expected LABEL=PATH[@HIGH[,LOW]], e.g. old=old.tflite@0.9,0.4")
    thresholds = None
    if thr:
        hi, _, lo = thr.partition(",")
        thresholds = (float(hi), float(lo) if lo else None)
    return Path(path), label, thresholds


class Swift(Tracker):
    name = "SwiftF0"

    def __init__(self):
        import swift_f0

        self.m = swift_f0.SwiftF0(threads=1)
        self.size = f"{(Path(swift_f0.__file__).parent / 'model.onnx').stat().st_size / 1024:.0f} KB (onnx fp32)"

    def __call__(self, y):
        r = self.m.detect(y, SR)
        return r.timestamps, np.where(r.confidence >= 0.5, r.pitch_hz, 0.0)


class CrepeTiny(Tracker):
    name = "CREPE tiny"

    def __init__(self):
        from make_pitch_data import import_torchcrepe

        torch, torchcrepe = import_torchcrepe()
        torch.set_num_threads(1)
        self.torch, self.crepe = torch, torchcrepe
        w = Path(torchcrepe.__file__).parent / "assets" / "tiny.pth"
        self.size = f"{w.stat().st_size / 1024:.0f} KB (fp32)" if w.exists() else "-"

    def __call__(self, y):
        torch, crepe = self.torch, self.crepe
        with torch.no_grad():
            f0, per = crepe.predict(torch.from_numpy(y)[None], SR, hop_length=160, fmin=50.0, fmax=1500.0,
                                    model="tiny", return_periodicity=True, batch_size=512, device="cpu")
        per = crepe.filter.median(per, 3)
        f0, per = f0[0].numpy(), per[0].numpy()
        return np.arange(len(f0)) * 0.01, np.where(per >= 0.21, f0, 0.0)


class Pyin(Tracker):
    name = "pYIN (librosa)"

    def __call__(self, y):
        import librosa

        f0, voiced, _ = librosa.pyin(y, fmin=65.0, fmax=1100.0, sr=SR, frame_length=1024, hop_length=160)
        return np.arange(len(f0)) * 0.01, np.where(voiced, np.nan_to_num(f0), 0.0)


class Dsp(Tracker):
    name = "melisma DSP (pYIN-style)"

    def __init__(self):
        self.t = DspPitchTracker()

    def __call__(self, y):
        tr = self.t.track(y, sr=SR)
        return tr.times_s, tr.hz


# --------------------------------------------------------------------------------------------
# metrics


def at_times(est_t: np.ndarray, est_hz: np.ndarray, ref_t: np.ndarray) -> np.ndarray:
    """Estimate at the reference times (nearest frame)."""
    if len(est_t) == 0:
        return np.zeros(len(ref_t))
    i = np.clip(np.searchsorted(est_t, ref_t), 1, len(est_t) - 1)
    left_closer = (ref_t - est_t[i - 1]) <= (est_t[i] - ref_t)
    i = np.where(left_closer, i - 1, i)
    return est_hz[i]


def frame_counts(ref_hz: np.ndarray, est_hz: np.ndarray) -> dict:
    rv, ev = ref_hz > 0, est_hz > 0
    both = rv & ev
    cents = np.abs(1200 * np.log2(np.where(both, est_hz, 1) / np.where(both, ref_hz, 1)))
    return {"ref_voiced": int(rv.sum()), "ref_unvoiced": int((~rv).sum()), "hit50": int((both & (cents < 50)).sum()),
            "recalled": int(both.sum()), "false_alarm": int((ev & ~rv).sum()), "cents": cents[both].tolist()}


def frame_outcomes(ref_t: np.ndarray, ref_hz: np.ndarray, est_hz: np.ndarray, *, item: int,
                   block_s: float = 1.0) -> dict:
    """Per reference frame: whether the reference is voiced, the estimate is voiced, the pitch is
    within 50 cents (voiced in both), and the block the frame falls in (``block_s`` blocks of one
    item), for :func:`paired_bootstrap`."""
    rv, ev = ref_hz > 0, est_hz > 0
    both = rv & ev
    cents = np.abs(1200 * np.log2(np.where(both, est_hz, 1) / np.where(both, ref_hz, 1)))
    block = item * 1_000_000 + np.floor(np.asarray(ref_t) / block_s).astype(np.int64)
    return {"ref_voiced": rv, "est_voiced": ev, "hit50": both & (cents < 50), "block": block}


def _outcome_rates(o: dict, idx: np.ndarray) -> dict:
    rv, ev, hit = o["ref_voiced"][idx], o["est_voiced"][idx], o["hit50"][idx]
    nv, nu = max(int(rv.sum()), 1), max(int((~rv).sum()), 1)
    return {"rpa": hit.sum() / nv, "vrecall": (rv & ev).sum() / nv, "vfa": (ev & ~rv).sum() / nu,
            "overall": (hit.sum() + (~rv & ~ev).sum()) / max(len(idx), 1)}


def paired_bootstrap(a: dict, b: dict, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired block bootstrap of the frame measures of tracker ``a`` minus tracker ``b`` on the
    same frames (outcomes from :func:`frame_outcomes`, concatenated over a set's items).

    Blocks (one second of one item by default) are drawn with replacement, the same draw for both
    trackers, so the interval reflects which stretches of audio the set happens to hold, not a
    tracker's own randomness. Returns, for each of rpa, vrecall, vfa and overall, the difference on
    the whole set and its 95 % interval, plus ``p_a_at_least_b``: the share of draws in which
    ``a``'s overall accuracy is at least ``b``'s.
    """
    if not np.array_equal(a["ref_voiced"], b["ref_voiced"]) or not np.array_equal(a["block"], b["block"]):
        raise ValueError("paired_bootstrap needs the two trackers' outcomes on the same reference frames")
    blocks, inverse = np.unique(a["block"], return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(blocks))]
    rng = np.random.default_rng(seed)
    full = np.arange(len(inverse))
    whole = {k: _outcome_rates(a, full)[k] - _outcome_rates(b, full)[k] for k in ("rpa", "vrecall", "vfa", "overall")}
    draws = {k: np.empty(n_boot) for k in whole}
    for i in range(n_boot):
        idx = np.concatenate([members[k] for k in rng.integers(0, len(blocks), len(blocks))])
        ra, rb = _outcome_rates(a, idx), _outcome_rates(b, idx)
        for k in whole:
            draws[k][i] = ra[k] - rb[k]
    out = {k: {"diff": float(whole[k]), "ci95": [float(q) for q in np.percentile(draws[k], [2.5, 97.5])]} for k in whole}
    out["p_a_at_least_b"] = float(np.mean(draws["overall"] >= 0))
    out["blocks"] = len(blocks)
    return out


def frame_summary(c: dict) -> dict:
    return {
        "rpa": c["hit50"] / max(c["ref_voiced"], 1),
        "vrecall": c["recalled"] / max(c["ref_voiced"], 1),
        "vfa": c["false_alarm"] / max(c["ref_unvoiced"], 1),
        # MIREX overall accuracy: voiced frames right in voicing and pitch, unvoiced frames called unvoiced
        "overall": (c["hit50"] + c["ref_unvoiced"] - c["false_alarm"]) / max(c["ref_voiced"] + c["ref_unvoiced"], 1),
        "median_cents": float(np.median(c["cents"])) if c["cents"] else float("nan"),
    }


def merge(a: dict | None, b: dict) -> dict:
    if a is None:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in b.items()}
    return {k: a[k] + b[k] for k in a}


def note_diffs(est_t, est_hz, notes: list[tuple[float, float, float]]) -> np.ndarray:
    """Cents (estimate - note) of each note's median f0 over its middle half; NaN when unvoiced there."""
    out = []
    midi = hz_to_midi(est_hz)
    for on, off, m in notes:
        d = off - on
        sel = (est_t >= on + 0.25 * d) & (est_t <= off - 0.25 * d) & (est_hz > 0)
        out.append(100 * (np.median(midi[sel]) - m) if sel.sum() >= 1 else np.nan)
    return np.asarray(out, dtype=np.float64)


def note_accuracy(diffs: np.ndarray, *, remove_offset: bool) -> tuple[int, float]:
    found = np.isfinite(diffs)
    off = float(np.median(diffs[found])) if (remove_offset and found.any()) else 0.0
    return int(np.sum(np.abs(diffs[found] - off) < 50)), off


# --------------------------------------------------------------------------------------------
# data


def load_sets(n_generated: int, ssvd_limit: int | None):
    sets = {}
    vd = SHARED / "vocadito"
    if (vd / "Audio" / "vocadito_1.wav").exists():
        y, _ = load_audio(vd / "Audio" / "vocadito_1.wav", sr=SR, mono=True)
        ref = np.loadtxt(vd / "Annotations" / "F0" / "vocadito_1_f0.csv", delimiter=",")
        notes = {}
        for ann in ("A1", "A2"):
            n = np.loadtxt(vd / "Annotations" / "Notes" / f"vocadito_1_notes{ann}.csv", delimiter=",", ndmin=2)
            notes[ann] = [(on, on + dur, float(hz_to_midi(hz))) for on, hz, dur in n]
        sets["vocadito"] = [{"name": "vocadito_1", "y": y, "ref_t": ref[:, 0], "ref_hz": ref[:, 1], "notes": notes}]
    sd = SHARED / "ssvd_v2_subset" / "test"
    if sd.is_dir():
        files = sorted(sd.glob("*.flac"))
        if ssvd_limit:
            files = files[:: max(1, len(files) // ssvd_limit)][:ssvd_limit]
        items = []
        for f in files:
            y, _ = load_audio(f, sr=SR, mono=True)
            ann = np.loadtxt(f.with_suffix(".txt"), ndmin=2)
            items.append({"name": f.stem, "y": y, "notes": {"ann": [tuple(r) for r in ann]}})
        sets["ssvd"] = items
    from make_pitch_data import make_clip

    items = []
    for i in range(n_generated):
        seed = 900000 + i
        y, f0, info = make_clip(seed)
        t = np.arange(len(f0)) * 0.005
        items.append({"name": f"gen{seed}", "y": y, "ref_t": t, "ref_hz": f0, "notes": {"truth": info["notes"]},
                      "info": info})
    sets["generated"] = items
    return sets


# --------------------------------------------------------------------------------------------


def run(trackers: list[Tracker], sets: dict, outcomes: dict | None = None) -> dict:
    """Score every tracker on every set; with ``outcomes`` (a dict), also keep each tracker's
    per-frame outcomes per set there (``outcomes[tracker][set]``) for :func:`paired_bootstrap`."""
    results = {}
    for tr in trackers:
        tr(np.zeros(SR, np.float32) + 1e-4 * np.random.default_rng(0).standard_normal(SR).astype(np.float32))  # warm up
        r = {"size": tr.size, "seconds": 0.0, "audio_s": 0.0}
        for set_name, items in sets.items():
            counts = None
            note_ok = {}
            note_n = {}
            kept = []
            for item_index, it in enumerate(items):
                y = it["y"]
                t0 = time.perf_counter()
                est_t, est_hz = tr(y)
                r["seconds"] += time.perf_counter() - t0
                r["audio_s"] += len(y) / SR
                est_t, est_hz = np.asarray(est_t, np.float64), np.asarray(est_hz, np.float64)
                if "ref_hz" in it:
                    at_ref = at_times(est_t, est_hz, it["ref_t"])
                    counts = merge(counts, frame_counts(it["ref_hz"], at_ref))
                    if outcomes is not None:
                        kept.append(frame_outcomes(it["ref_t"], it["ref_hz"], at_ref, item=item_index))
                for ann, notes in it["notes"].items():
                    ok, _ = note_accuracy(note_diffs(est_t, est_hz, notes), remove_offset=(set_name == "ssvd"))
                    note_ok[ann] = note_ok.get(ann, 0) + ok
                    note_n[ann] = note_n.get(ann, 0) + len(notes)
            if kept:
                outcomes.setdefault(tr.name, {})[set_name] = {k: np.concatenate([o[k] for o in kept]) for k in kept[0]}
            out = frame_summary(counts) if counts else {}
            for ann in note_ok:
                out[f"notes_{ann}"] = note_ok[ann] / max(note_n[ann], 1)
            r[set_name] = out
        r["s_per_s"] = r["seconds"] / max(r["audio_s"], 1e-9)
        results[tr.name] = r
        print(f"  done {tr.name}: {r['s_per_s']:.4f} s per s of audio", flush=True)
    return results


def streaming_check(model_path: Path, sets: dict, block_ms: float = 20.0) -> dict:
    """Streaming (block_ms blocks) vs offline on vocadito and the generated set."""
    off = TflitePitchTracker(model_path=model_path, num_threads=1)
    block = int(SR * block_ms / 1000)
    diffs, agree, n = [], 0, 0
    counts = None
    t_stream = 0.0
    audio_s = 0.0
    per_block = []
    for set_name in ("vocadito", "generated"):
        for it in sets.get(set_name, []):
            y = it["y"]
            a = off.track(y, sr=SR)
            stream = StreamingPitchModel(TflitePitchTracker(model_path=model_path, num_threads=1, batch_frames=4))
            parts = []
            t0 = time.perf_counter()
            for s in range(0, len(y), block):
                tb = time.perf_counter()
                parts.append(stream.process(y[s : s + block]).hz)
                per_block.append(time.perf_counter() - tb)
            parts.append(stream.flush().hz)
            t_stream += time.perf_counter() - t0
            audio_s += len(y) / SR
            hz = np.concatenate(parts)
            m = min(len(hz), len(a.hz))
            both = (hz[:m] > 0) & (a.hz[:m] > 0)
            diffs.extend(np.abs(1200 * np.log2(hz[:m][both] / a.hz[:m][both])).tolist())
            agree += int(np.sum((hz[:m] > 0) == (a.hz[:m] > 0)))
            n += m
            if "ref_hz" in it:
                counts = merge(counts, frame_counts(it["ref_hz"], at_times(np.arange(len(hz)) * 0.01, hz, it["ref_t"])))
    return {
        "block_ms": block_ms,
        "algorithmic_latency_ms": 1000 * stream.latency_s,
        "worst_case_latency_ms": 1000 * stream.latency_s + block_ms + 1000 * float(np.percentile(per_block, 99)),
        "compute_per_block_ms_p50": 1000 * float(np.median(per_block)),
        "compute_per_block_ms_p99": 1000 * float(np.percentile(per_block, 99)),
        "s_per_s": t_stream / max(audio_s, 1e-9),
        "voicing_agreement_with_offline": agree / max(n, 1),
        "max_cents_diff_vs_offline": float(np.max(diffs)) if diffs else 0.0,
        "frames_compared": n,
        "vocadito+generated": frame_summary(counts) if counts else {},
    }


def print_table(results: dict) -> None:
    cols = [("vocadito", "rpa"), ("vocadito", "vrecall"), ("vocadito", "vfa"), ("vocadito", "overall"),
            ("vocadito", "median_cents"), ("vocadito", "notes_A1"), ("vocadito", "notes_A2"), ("ssvd", "notes_ann"),
            ("generated", "rpa"), ("generated", "vrecall"), ("generated", "vfa"), ("generated", "overall"),
            ("generated", "median_cents"), ("generated", "notes_truth")]
    heads = ["voc RPA", "voc VR", "voc VFA", "voc OA", "voc c", "voc nA1", "voc nA2", "SSVD n", "gen RPA", "gen VR",
             "gen VFA", "gen OA", "gen c", "gen n", "s/s", "size"]
    w = 26
    print(f"{'tracker':{w}s} " + " ".join(f"{h:>8s}" for h in heads))
    for name, r in results.items():
        vals = []
        for s, k in cols:
            v = r.get(s, {}).get(k)
            vals.append(f"{v:8.1f}" if (v is not None and k == "median_cents") else (f"{v:8.3f}" if v is not None else f"{'-':>8s}"))
        vals.append(f"{r['s_per_s']:8.4f}")
        vals.append(f" {r['size']}")
        print(f"{name:{w}s} " + " ".join(vals))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(default_model_path()))
    ap.add_argument("--float-model", help="also run this float32 TFLite export of the same network")
    ap.add_argument(
        "--compare-model",
        action="append",
        default=[],
        metavar="LABEL=PATH[@HIGH[,LOW]]",
        help="also run another int8 model under this label (e.g. the previous release), optionally "
        "with its own voicing threshold and hysteresis low threshold; repeatable",
    )
    ap.add_argument("--generated", type=int, default=12, help="generated held-out clips (8 s each)")
    ap.add_argument("--ssvd-limit", type=int, default=0, help="use only this many SSVD files (0: all)")
    ap.add_argument("--skip", nargs="*", default=[], help="tracker names to leave out: swift crepe pyin dsp")
    ap.add_argument("--no-streaming", action="store_true")
    ap.add_argument("--json", help="write all numbers here")
    args = ap.parse_args(argv)

    sets = load_sets(args.generated, args.ssvd_limit or None)
    print(
        "evaluation audio: " + ", ".join(f"{k} {len(v)} files {sum(len(i['y']) for i in v) / SR:.0f} s" for k, v in sets.items()),
        flush=True,
    )
    trackers: list[Tracker] = [Melisma(Path(args.model), "melisma int8 (ours)")]
    if args.float_model:
        trackers.append(Melisma(Path(args.float_model), "melisma float32 (ours)"))
    for spec in args.compare_model:
        trackers.append(Melisma(*parse_model_spec(spec)))
    if "swift" not in args.skip:
        trackers.append(Swift())
    if "crepe" not in args.skip:
        trackers.append(CrepeTiny())
    if "pyin" not in args.skip:
        trackers.append(Pyin())
    if "dsp" not in args.skip:
        trackers.append(Dsp())
    outcomes: dict = {}
    results = run(trackers, sets, outcomes)
    print()
    print("RPA = raw pitch accuracy (50 c), VR/VFA = voicing recall/false alarm, c = median |cents error|,")
    print("n = note pitch accuracy (50 c; SSVD after per-file offset removal), s/s = seconds per second of audio (1 thread)")
    print_table(results)
    report = {"trackers": results}
    if "SwiftF0" in outcomes:
        # how much of each gap to SwiftF0 the choice of audio alone could explain
        report["paired_vs_swiftf0"] = {}
        print("\nours minus SwiftF0, paired bootstrap over 1 s blocks (difference [95 % interval]):")
        for name in [t.name for t in trackers if isinstance(t, Melisma)]:
            per_set = {}
            for set_name in outcomes[name]:
                pb = paired_bootstrap(outcomes[name][set_name], outcomes["SwiftF0"][set_name])
                per_set[set_name] = pb
                print(
                    f"  {name:26s} {set_name:9s} "
                    + "  ".join(
                        f"{k} {pb[k]['diff']:+.4f} [{pb[k]['ci95'][0]:+.4f}, {pb[k]['ci95'][1]:+.4f}]"
                        for k in ("rpa", "vrecall", "vfa", "overall")
                    )
                    + f"  P(OA >= SwiftF0) {pb['p_a_at_least_b']:.2f}"
                )
            report["paired_vs_swiftf0"][name] = per_set
    if not args.no_streaming:
        st = streaming_check(Path(args.model), sets)
        report["streaming"] = st
        print(
            "\nstreaming (20 ms blocks): " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in st.items()})
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
