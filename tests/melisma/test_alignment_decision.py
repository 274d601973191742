"""An unknown offset is never mixed as if it were known (issue 13).

Takes come from the synthetic corpus (tools/corpus) with a known offset: headphone takes (no
bleed at all), and takes whose bleed reaches the mic only through the room (a speaker across the
room: a synthetic room response with its direct sound removed).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from melisma import audio_io
from melisma.analysis.align import Alignment, estimate_offset
from melisma.cli import main
from melisma.errors import AlignmentError
from melisma.pipeline.alignment import alignment_decision, decide_alignment
from scipy.signal import oaconvolve

from tools.corpus import degrade
from tools.corpus.scenarios import make_scenario

SR = 48000


def run_cli(*argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def headphone_take(tmp_path_factory) -> dict:
    """An 8 s take sung on headphones (no bleed), 160 ms late, over its backing."""
    folder = tmp_path_factory.mktemp("hp")
    sc = make_scenario(seed=11, duration_s=8.0, sr=SR, offset_ms=160.0, bleed_db=None, snr_db=25.0)
    take, backing = folder / "take.wav", folder / "backing.wav"
    audio_io.write_audio(take, sc.take, sr=SR)
    audio_io.write_audio(backing, sc.backing, sr=SR)
    return {"take": take, "backing": backing, "truth": sc.truth["offset_ms"]}


def test_headphone_take_is_refused_by_default_with_what_would_work(headphone_take, tmp_path, capsys):
    out, report = tmp_path / "mix.wav", tmp_path / "r.json"
    code, _, stderr = run_cli("mix", headphone_take["take"], headphone_take["backing"], "-o", out,
                                   "--report", report, "-q", capsys=capsys)
    assert code == AlignmentError.exit_code == 5
    assert "offset" in stderr and "unknown" in stderr
    for remedy in ("--latency-ms", "speaker", "--accept-alignment-guess"):
        assert remedy in stderr, stderr
    assert "Traceback" not in stderr
    assert not out.exists() and not report.exists()  # nothing half-written
    assert list(tmp_path.iterdir()) == []  # no work folder left behind either


def test_accepting_the_guess_mixes_and_says_so(headphone_take, tmp_path, capsys):
    out, report_path = tmp_path / "mix.wav", tmp_path / "r.json"
    code, _, stderr = run_cli("mix", headphone_take["take"], headphone_take["backing"], "-o", out,
                              "--report", report_path, "--accept-alignment-guess", "--no-correct", "-q", capsys=capsys)
    assert code == 0, stderr
    report = json.loads(report_path.read_text())
    al = report["alignment"]
    assert al["decision"] == "accepted guess" and al["method"] == "guess"
    assert al["confidence"] <= 0.5
    assert al["details"]["accepted_guess"] is True
    assert any("guess" in w for w in report["warnings"])
    assert out.exists()


def test_analyze_refuses_too_and_a_calibrated_latency_is_used(headphone_take, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    code, _, stderr = run_cli("analyze", headphone_take["take"], headphone_take["backing"], "-o", plan, "-q", capsys=capsys)
    assert code == 5 and not plan.exists(), stderr
    code, _, stderr = run_cli("analyze", headphone_take["take"], headphone_take["backing"], "-o", plan, "-q",
                              "--no-correct", "--latency-ms", "158", capsys=capsys)
    assert code == 0, stderr
    al = json.loads(plan.read_text())["alignment"]
    assert al["decision"] == "calibrated" and al["offset_ms"] == pytest.approx(158.0)


def test_decision_of_a_measured_offset_is_unchanged():
    a = Alignment(offset_ms=120.0, method="bleed", confidence=0.9)
    warnings: list[str] = []
    assert decide_alignment(a, accept_guess=False, warnings=warnings) is a and warnings == []
    assert alignment_decision(a, backing=True) == "measured"
    assert alignment_decision(Alignment(0.0, "none", 0.0), backing=False) == "no backing"


def _room_only_take(seed: int, *, offset_ms: float, bleed_db: float, snr_db: float) -> tuple[np.ndarray, np.ndarray, float]:
    """A take whose bleed reaches the mic only through a room: a synthetic response with its
    direct sound (first 1.5 ms) removed. The truth is the direct sound's arrival, ``offset_ms``."""
    sr = 16000
    sc = make_scenario(seed=seed, duration_s=12.0, sr=sr, offset_ms=0.0, bleed_db=None, snr_db=None,
                       backing_renderer="numpy", mic=None)
    voice = sc.take
    h = degrade.synthetic_rir(sr, rt60_s=0.5, direct_to_reverb_db=-6.0, seed=seed).astype(np.float64)
    h[: int(0.0015 * sr)] = 0.0
    spk = degrade.phone_speaker(sc.backing, sr).astype(np.float64)
    bleed = oaconvolve(spk, h)[: spk.size]
    bleed *= degrade.rms(voice) * 10 ** (bleed_db / 20) / degrade.rms(bleed)
    take = degrade.apply_offset((voice + bleed).astype(np.float32), sr, offset_ms=offset_ms)
    take = degrade.add_noise(take, sr, snr_db=snr_db, noise="babble", seed=seed, reference=voice)
    return take, sc.backing, offset_ms


@pytest.mark.parametrize("seed, offset_ms, bleed_db, snr_db", [(1, 140.0, -12.0, 18.0), (2, 260.0, -18.0, 14.0),
                                                                (3, 205.0, -22.0, 12.0)])
def test_room_only_bleed_is_found_at_its_first_arrival(seed, offset_ms, bleed_db, snr_db):
    take, backing, truth = _room_only_take(seed, offset_ms=offset_ms, bleed_db=bleed_db, snr_db=snr_db)
    a = estimate_offset(take, backing, sr=16000)
    assert a.known and a.method == "bleed", a.details
    # the strongest reflection comes later than the first; the offset is the first arrival
    assert abs(a.offset_ms - truth) <= 5.0, (a.offset_ms, truth, a.details["peak_offset_ms"])


def test_a_headphone_take_is_never_reported_as_known():
    for seed in (4, 5, 6):
        sc = make_scenario(seed=seed, duration_s=10.0, sr=16000, offset_ms=200.0, bleed_db=None, snr_db=15.0,
                           backing_renderer="numpy")
        a = estimate_offset(sc.take, sc.backing, sr=16000)
        assert not a.known and a.method == "none" and a.confidence == 0.0
        assert "--latency-ms" in a.details["reason"]
