"""The one-tap mix on phone takes built from real recordings (tools/eval_mix_real.py).

Three takes: the multitrack's real vocal over its real band (speaker bleed, measured room, real
noise, AAC 64 kb/s), vocadito solo singing and a phone sight-singing clip over CC0 loops with
bleed. Each is mixed once (module fixture); the tests check what the engine promises.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import eval_mix_real as ev

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def rows(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    work = tmp_path_factory.mktemp("mix-real")
    cases = ev.build_cases(shared_data, quick=True)
    # Keep the test short: the two long solo takes are cut to 8 s (their bleed runs throughout).
    for case in cases:
        n = min(case.take.size, 8 * case.sr)
        case.take, case.backing = case.take[:n], case.backing[:, :n]
    return [ev.run_case(case, work) for case in cases]


def test_three_real_cases_were_mixed(rows):
    assert [r["bleed"] for r in rows] == [True, True, True]
    assert {r["case"].split("-")[0] for r in rows} == {"stems", "vocadito", "ssvd65567"}


def test_alignment_by_bleed_is_within_5_ms(rows):
    for r in rows:
        assert r["method"] == "bleed", r
        assert abs(r["align_error_ms"]) <= ev.ALIGN_TOL_MS, r
        assert r["confidence"] >= 0.5, r


def test_no_false_hum_and_no_clipping_on_clean_real_takes(rows):
    for r in rows:
        assert r["hum"] is None, r
        assert r["clipping_fraction"] < 1e-3, r


def test_mix_file_is_at_the_phone_loudness_target(rows):
    for r in rows:
        assert abs(r["mix_lufs"] + 14.0) <= 0.5, r
        # The master's own measurement (before encoding) keeps the ceiling.
        assert r["report_true_peak_dbtp"] <= -1.0 + 1e-3, r


def test_decoded_mix_file_keeps_the_true_peak_ceiling(rows):
    # AAC adds 0.2-0.5 dB of true peak: lossy mixes are limited to -1.5 dBTP and re-checked after encoding.
    for r in rows:
        assert r["mix_true_peak_dbtp"] <= -1.0, r


def test_vocal_to_backing_balance_matches_the_preset(rows):
    for r in rows:
        assert abs(r["balance_measured_lu"] - r["balance_target_lu"]) <= 1.0, r


def test_pitch_analysis_finds_the_sung_notes(rows):
    for r in rows:
        assert r["notes"] >= 3, r
        assert r["key"], r
        assert r["median_abs_cents_error_after"] is not None and r["median_abs_cents_error_after"] < 25.0, r


def test_tuning_estimate_reads_a_detuned_tone():
    import numpy as np

    sr = 16000
    t = np.arange(2 * sr) / sr
    f = 440.0 * 2 ** (-30 / 1200)  # A4, 30 cents flat
    y = sum(np.sin(2 * np.pi * k * f * t) / k for k in (1, 2, 3)).astype(np.float32)
    assert abs(ev.tuning_cents(y, sr) + 30.0) < 3.0
