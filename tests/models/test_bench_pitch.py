"""The pitch benchmark's paired bootstrap (models/pitch/bench_pitch.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models" / "pitch"))
import bench_pitch

HOP_S = 0.01


def _take(n_s=20.0, seed=0):
    """Reference f0 of a take: 0.7 s notes at 220 Hz with 0.3 s rests."""
    t = np.arange(int(n_s / HOP_S)) * HOP_S
    ref = np.where((t % 1.0) < 0.7, 220.0, 0.0)
    return t, ref


def _outcomes(t, ref, est, item=0):
    return bench_pitch.frame_outcomes(t, ref, est, item=item)


def test_frame_outcomes_marks_hits_misses_and_false_alarms():
    t, ref = _take(2.0)
    est = ref.copy()
    est[5] = 0.0  # a miss
    est[10] = 220.0 * 2 ** (60 / 1200)  # 60 cents off: voiced but not a hit
    est[80] = 220.0  # a false alarm in the rest
    o = _outcomes(t, ref, est)
    assert not o["est_voiced"][5] and not o["hit50"][5]
    assert o["est_voiced"][10] and not o["hit50"][10]
    assert o["est_voiced"][80] and not o["ref_voiced"][80]
    assert o["hit50"].sum() == ref.astype(bool).sum() - 2
    assert set(np.unique(o["block"])) == {0, 1}  # two 1 s blocks
    assert not set(_outcomes(t, ref, est, item=1)["block"]) & set(o["block"])  # items never share a block


def test_paired_bootstrap_of_a_tracker_against_itself_is_exactly_zero():
    t, ref = _take()
    est = np.where(np.random.default_rng(1).random(len(ref)) < 0.1, 0.0, ref)
    a = _outcomes(t, ref, est)
    pb = bench_pitch.paired_bootstrap(a, a, n_boot=200)
    for k in ("rpa", "vrecall", "vfa", "overall"):
        assert pb[k]["diff"] == 0.0 and pb[k]["ci95"] == [0.0, 0.0]
    assert pb["p_a_at_least_b"] == 1.0 and pb["blocks"] == 20


def test_paired_bootstrap_finds_a_gain_spread_over_the_take_but_not_one_from_a_single_second():
    t, ref = _take()
    rng = np.random.default_rng(2)
    worse = np.where(rng.random(len(ref)) < 0.2, 0.0, ref)  # misses 20 % of voiced frames everywhere
    better = np.where(rng.random(len(ref)) < 0.05, 0.0, ref)  # misses 5 %
    pb = bench_pitch.paired_bootstrap(_outcomes(t, ref, better), _outcomes(t, ref, worse), n_boot=500)
    assert pb["rpa"]["diff"] > 0.1 and pb["rpa"]["ci95"][0] > 0.1
    assert pb["p_a_at_least_b"] == 1.0

    lucky = worse.copy()
    one_second = (t >= 3.0) & (t < 4.0)
    lucky[one_second] = ref[one_second]  # better only where one second happens to be
    pb = bench_pitch.paired_bootstrap(_outcomes(t, ref, lucky), _outcomes(t, ref, worse), n_boot=500)
    assert pb["overall"]["diff"] > 0
    assert pb["overall"]["ci95"][0] <= 0.0 < pb["overall"]["ci95"][1]  # cannot be told from the choice of audio


def test_paired_bootstrap_refuses_outcomes_on_different_frames():
    t, ref = _take()
    a = _outcomes(t, ref, ref)
    b = _outcomes(t[:-5], ref[:-5], ref[:-5])
    with pytest.raises(ValueError, match="same reference frames"):
        bench_pitch.paired_bootstrap(a, b)
