"""Backing-track bleed check for the pitch model card: the tracker must not follow the backing.

Synthetic phone takes from ``tools.corpus.make_scenario`` (seeds 5-7, 8 s at 16 kHz, 25 dB SNR pink
noise, the phone microphone) with the backing heard through the phone's speaker at -15 and -6 dB
RMS relative to the voice. Frame metrics against the exact f0: raw pitch accuracy (voiced
reference frames whose estimate is voiced and within 50 cents) and voicing false alarm (frames
where the singer is silent, mostly backing alone, called voiced).

Run in the training environment (it has swift-f0)::

    nice python models/pitch/bench_bleed.py [--compare-model LABEL=PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from melisma.analysis.pitch import DspPitchTracker
from melisma.analysis.pitch_model import SR, TflitePitchTracker

from tools.corpus.scenarios import make_scenario


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare-model", action="append", default=[], metavar="LABEL=PATH",
                    help="also run another int8 model, decoded at a plain 0.5 voicing threshold")
    args = ap.parse_args(argv)
    import swift_f0

    swift = swift_f0.SwiftF0(threads=1)

    def run_swift(y):
        r = swift.detect(y, SR)
        return r.timestamps, np.where(r.confidence >= 0.5, r.pitch_hz, 0.0)

    def run_tracker(tracker):
        def f(y):
            tr = tracker.track(y, sr=SR)
            return tr.times_s, tr.hz
        return f

    trackers = {"melisma int8 (ours)": run_tracker(TflitePitchTracker())}
    for spec in args.compare_model:
        label, _, path = spec.rpartition("=")
        trackers[label] = run_tracker(TflitePitchTracker(model_path=path, voicing_threshold=0.5, voicing_threshold_low=None))
    trackers["SwiftF0"] = run_swift
    trackers["melisma DSP"] = run_tracker(DspPitchTracker())
    print(f"{'bleed':>8s} {'tracker':24s} {'RPA':>6s} {'VFA':>6s}")
    for bleed_db in (-15.0, -6.0):
        totals = {k: np.zeros(4) for k in trackers}
        for seed in (5, 6, 7):
            sc = make_scenario(seed=seed, duration_s=8.0, sr=SR, bleed_db=bleed_db, snr_db=25.0)
            y = sc.take.astype(np.float32)
            ref = sc.f0_hz
            ref_t = np.arange(len(ref)) * sc.truth["f0"]["hop_s"]  # offset_ms is 0: take and backing share a timeline
            for name, track in trackers.items():
                t, hz = track(y)
                est = hz[np.clip(np.searchsorted(t, ref_t), 0, len(t) - 1)]
                rv, ev = ref > 0, est > 0
                both = rv & ev
                cents = np.abs(1200 * np.log2(np.where(both, est, 1) / np.where(both, ref, 1)))
                totals[name] += [np.sum(both & (cents < 50)), rv.sum(), np.sum(ev & ~rv), (~rv).sum()]
        for name, a in totals.items():
            print(f"{bleed_db:6.0f} dB {name:24s} {a[0] / a[1]:6.3f} {a[2] / a[3]:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
