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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# the side-by-side benchmark's trackers and frame metrics (it also pins every tracker to one thread)
from bench_pitch import (  # noqa: E402 -- after the sys.path set-up above
    REPO,
    SR,
    Dsp,
    Melisma,
    Swift,
    at_times,
    frame_counts,
    frame_summary,
    merge,
    parse_model_spec,
)
from melisma.analysis.pitch_model import default_model_path  # noqa: E402 -- after the sys.path set-up above

sys.path.insert(0, str(REPO))
from tools.corpus.scenarios import make_scenario  # noqa: E402 -- after the sys.path set-up above


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare-model", action="append", default=[], metavar="LABEL=PATH[@HIGH[,LOW]]",
                    help="also run another int8 model, with its own voicing threshold and hysteresis low "
                         "threshold (default: the tracker's); repeatable")
    args = ap.parse_args(argv)
    trackers = [Melisma(default_model_path(), "melisma int8 (ours)")]
    for spec in args.compare_model:
        trackers.append(Melisma(*parse_model_spec(spec)))
    trackers += [Swift(), Dsp()]
    print(f"{'bleed':>8s} {'tracker':24s} {'RPA':>6s} {'VFA':>6s}")
    for bleed_db in (-15.0, -6.0):
        counts: dict = {}
        for seed in (5, 6, 7):
            sc = make_scenario(seed=seed, duration_s=8.0, sr=SR, bleed_db=bleed_db, snr_db=25.0)
            y = sc.take.astype(np.float32)
            ref_t = np.arange(len(sc.f0_hz)) * sc.truth["f0"]["hop_s"]  # offset_ms is 0: one timeline
            for tr in trackers:
                t, hz = tr(y)
                c = frame_counts(sc.f0_hz, at_times(np.asarray(t, np.float64), np.asarray(hz, np.float64), ref_t))
                counts[tr.name] = merge(counts.get(tr.name), c)
        for name, c in counts.items():
            f = frame_summary(c)
            print(f"{bleed_db:6.0f} dB {name:24s} {f['rpa']:6.3f} {f['vfa']:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
