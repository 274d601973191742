"""Choose the pitch model's voicing thresholds on generated validation clips (never on evaluation data).

For every pair (threshold, low threshold) in a grid, decode the model's outputs on validation clips
(``make_pitch_data.make_clip`` with seeds 800000+, used neither for training, seeds 0..n-1, nor for
the benchmark, seeds 900000+) and score frame overall accuracy (MIREX: voiced frames right in
voicing and pitch within 50 cents, unvoiced frames called unvoiced). Prints every pair and the best;
``melisma.analysis.pitch_model.VOICING_THRESHOLD`` / ``VOICING_THRESHOLD_LOW`` hold the committed
model's choice.

Usage::

    nice python models/pitch/choose_thresholds.py [--model PATH] [--clips 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))  # make_pitch_data

from make_pitch_data import frame_labels, make_clip  # noqa: E402 -- after the sys.path set-up above
from melisma.analysis.pitch_model import (  # noqa: E402 -- after the sys.path set-up above
    HOP_S,
    SILENCE_DBFS,
    TflitePitchTracker,
    decode_pitch,
    spectrogram_features,
    voicing_hysteresis,
)

#: The grid: plain thresholds (low = high) and hysteresis pairs.
HIGHS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LOWS = (0.05, 0.1, 0.2, 0.3, 0.4)
VALIDATION_SEED_BASE = 800000


def grid() -> list[tuple[float, float]]:
    return [(h, h) for h in HIGHS] + [(h, lo) for h in HIGHS for lo in LOWS if lo < h]


def score(tracker: TflitePitchTracker, clips: list[tuple[np.ndarray, np.ndarray, float]]) -> dict:
    """Per grid pair: [hits, reference voiced, false alarms, reference unvoiced] summed over clips."""
    totals = {g: np.zeros(4) for g in grid()}
    for y, ref_hz, ref_hop_s in clips:
        feats, peak_db, level_db = spectrogram_features(y)
        logits, voicing = tracker.raw_outputs(feats, level_db)
        hz, p_voiced = decode_pitch(logits, voicing, voicing_threshold=0.0)  # every frame's pitch
        idx = np.clip(np.round(np.arange(len(ref_hz)) * ref_hop_s / HOP_S).astype(int), 0, len(hz) - 1)
        ref_voiced = ref_hz > 0
        for high, low in totals:
            voiced = voicing_hysteresis(p_voiced, threshold=high, threshold_low=low) & (peak_db > SILENCE_DBFS)
            v, est = voiced[idx], hz[idx]
            both = ref_voiced & v
            cents = np.abs(1200 * np.log2(np.where(both, est, 1.0) / np.where(both, ref_hz, 1.0)))
            totals[(high, low)] += [np.sum(both & (cents < 50)), ref_voiced.sum(), np.sum(v & ~ref_voiced),
                                    (~ref_voiced).sum()]
    return totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="the int8 model (default: the committed one)")
    ap.add_argument("--clips", type=int, default=40, help="validation clips of 8 s")
    ap.add_argument("--release-end-db", type=float, default=None,
                    help="score against the release-trimmed labels the model was trained on "
                         "(train_pitch.py --release-end-db); default: the exact truth")
    ap.add_argument("--end-teacher", choices=["dsp"], default=None,
                    help="score against note ends set by the DSP tracker on the dry voice (train_pitch.py --end-teacher)")
    ap.add_argument("--varied-releases", action="store_true",
                    help="validation clips with varied phrase ends, as train_pitch.py --varied-releases")
    args = ap.parse_args(argv)
    tracker = TflitePitchTracker(model_path=args.model)
    clips = []
    for seed in range(VALIDATION_SEED_BASE, VALIDATION_SEED_BASE + args.clips):
        if args.release_end_db is None and args.end_teacher is None:
            y, f0_hz, _ = make_clip(seed, varied_releases=args.varied_releases)
            clips.append((y, f0_hz, 0.005))  # make_clip's truth hop
        else:
            y, f0_hz, _, dry = make_clip(seed, return_dry=True, varied_releases=args.varied_releases)
            n_frames = len(spectrogram_features(y)[0])
            f0_frames = frame_labels(f0_hz, dry, n_frames, release_end_db=args.release_end_db,
                                     end_teacher=args.end_teacher)
            clips.append((y, f0_frames, HOP_S))
    totals = score(tracker, clips)
    best, best_oa = None, -1.0
    print(f"{'high':>5s} {'low':>5s} {'RPA':>7s} {'VFA':>7s} {'OA':>7s}")
    for (high, low), (hits, n_voiced, false_alarms, n_unvoiced) in totals.items():
        oa = (hits + n_unvoiced - false_alarms) / (n_voiced + n_unvoiced)
        print(f"{high:5.2f} {low:5.2f} {hits / n_voiced:7.4f} {false_alarms / n_unvoiced:7.4f} {oa:7.4f}")
        if oa > best_oa:
            best, best_oa = (high, low), oa
    print(f"best: voicing_threshold={best[0]}, voicing_threshold_low={best[1] if best[1] < best[0] else None} "
          f"(overall accuracy {best_oa:.4f} on {args.clips} validation clips)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
