"""Alignment of a phone take against its backing (melisma.analysis.align).

Most cases come from the shared scenario generator (tools/corpus): a synthetic sung take over a
rendered backing, with phone-speaker bleed, room reverb, noise, hum, clipping and an AAC round trip,
and the exact applied offset as truth. The stems test uses a real multitrack.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from melisma.analysis.align import Alignment, apply_offset, estimate_offset
from melisma.errors import AlignmentError, MelismaError

import tools.corpus.scenarios as corpus

TOLERANCE_MS = 5.0


def _bleed_cases(n: int = 20, seed: int = 2024):
    """A spread of bleed takes: offset -200..500 ms, bleed -10..-30 dB, SNR 5..20 dB, AAC 64 kb/s,
    reverb, hum and clipping on some; 6-7 s at 16 kHz (every tenth at 48 kHz)."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        params = dict(
            offset_ms=float(rng.uniform(-200, 500)),
            bleed_db=float(rng.uniform(-30, -10)),
            snr_db=float(rng.uniform(5, 20)),
            hum_hz=[None, 50.0, 60.0][i % 3],
            clip_fraction=0.002 if i % 5 == 1 else 0.0,
            rir="synthetic" if i % 2 else None,
            aac_kbps=64 if i % 4 != 3 else None,
            duration_s=float(rng.uniform(6, 7)),
            sr=48000 if i % 10 == 0 else 16000,
        )
        sc = corpus.make_scenario(seed=7000 + i, backing_renderer="numpy", **params)
        cases.append((sc, params))
    return cases


@pytest.fixture(scope="module")
def bleed_cases():
    return _bleed_cases()


def test_bleed_cases_align_within_5_ms(bleed_cases):
    results = []
    for sc, params in bleed_cases:
        a = estimate_offset(sc.take, sc.backing, sr=sc.sr)
        err = a.offset_ms - sc.truth["offset_ms"]
        results.append((a.method == "bleed" and abs(err) <= TOLERANCE_MS, a, err, params))
    passed = [r for r in results if r[0]]
    failed = [(round(r[2], 1), r[1].method, round(r[1].details.get("peak_z", 0), 1), r[3]) for r in results if not r[0]]
    assert len(passed) / len(results) >= 0.95, f"failures: {failed}"
    # Right answers come with high confidence; the evidence is in the details for the report.
    assert np.median([r[1].confidence for r in passed]) >= 0.8
    for _ok, a, _err, _ in passed:
        assert a.details["peak_z"] >= 6.0 and a.details["search_range_ms"] == [-1000.0, 1000.0]


def test_bleed_wins_over_a_wrong_calibration(bleed_cases):
    sc, _ = bleed_cases[2]
    a = estimate_offset(sc.take, sc.backing, sr=sc.sr, latency_ms=sc.truth["offset_ms"] + 80.0)
    assert a.method == "bleed"
    assert abs(a.offset_ms - sc.truth["offset_ms"]) <= TOLERANCE_MS
    assert abs(a.details["calibration_error_ms"] + 80.0) <= TOLERANCE_MS


def test_aligned_take_lines_up_with_the_backing(bleed_cases):
    sc, _ = bleed_cases[4]
    a = estimate_offset(sc.take, sc.backing, sr=sc.sr)
    aligned = apply_offset(sc.take, offset_ms=a.offset_ms, sr=sc.sr, length=sc.backing.shape[-1])
    assert aligned.shape == (sc.backing.shape[-1],) and aligned.dtype == np.float32
    again = estimate_offset(aligned, sc.backing, sr=sc.sr)
    assert again.method == "bleed" and abs(again.offset_ms) <= 1.0


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_headphone_take_uses_calibration_and_claims_little(seed):
    sc = corpus.make_scenario(seed=seed, duration_s=6.0, sr=16000, offset_ms=180.0, bleed_db=None, snr_db=12.0,
                              aac_kbps=64, backing_renderer="numpy")
    calibrated = estimate_offset(sc.take, sc.backing, sr=sc.sr, latency_ms=175.0)
    assert calibrated.method == "calibrated"
    assert calibrated.offset_ms == 175.0
    assert 0.0 < calibrated.confidence <= 0.5
    blind = estimate_offset(sc.take, sc.backing, sr=sc.sr)
    assert blind.method == "none"
    assert blind.confidence <= 0.05
    assert "no bleed" in blind.details["reason"] and "calibration" in blind.details["reason"]


def _noise_take(*, sr=16000, seconds=4.0, offset_ms=130.0, bleed_db=-20.0, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    backing = rng.standard_normal((2, n)).astype(np.float32)
    voice = rng.standard_normal(n).astype(np.float32)
    d = int(round(offset_ms * sr / 1000))
    bleed = np.zeros(n, np.float32)
    if d >= 0:
        bleed[d:] = backing.mean(axis=0)[: n - d]
    else:
        bleed[:d] = backing.mean(axis=0)[-d:]
    bleed *= 10 ** (bleed_db / 20) / np.sqrt(np.mean(bleed**2))
    return voice + bleed, backing, d * 1000 / sr


def test_weak_bleed_near_the_calibration_refines_it():
    # Too weak to be believed anywhere in ±1 s, clear enough within ±50 ms of the calibration.
    take, backing, truth = _noise_take(bleed_db=-29.5, seed=5)
    blind = estimate_offset(take, backing, sr=16000)
    assert blind.method == "none"
    a = estimate_offset(take, backing, sr=16000, latency_ms=truth + 25.0)
    assert a.method == "calibrated+refined"
    assert abs(a.offset_ms - truth) <= 1.0
    assert a.confidence > 0.3


def test_the_voice_does_not_pull_the_estimate():
    # The "voice" follows the backing's rhythm exactly (a singer in time with what they hear,
    # at lag 0) but is another signal; the bleed sits 240 ms later. Only the bleed may count.
    sr = 16000
    rng = np.random.default_rng(3)
    n = 6 * sr
    beat = (np.arange(n) % (sr // 2)) < sr // 8  # loud 125 ms bursts twice a second
    envelope = np.where(beat, 1.0, 0.05).astype(np.float32)
    backing = rng.standard_normal(n).astype(np.float32) * envelope
    voice = 4 * rng.standard_normal(n).astype(np.float32) * envelope
    d = int(0.240 * sr)
    take = voice.copy()
    take[d:] += 0.15 * backing[: n - d]
    a = estimate_offset(take, backing, sr=sr)
    assert a.method == "bleed"
    assert abs(a.offset_ms - 240.0) <= 1.0


def test_short_take_against_a_long_backing_and_a_take_past_its_end():
    take, backing, truth = _noise_take(seconds=10.0, offset_ms=-150.0, bleed_db=-15.0, seed=8)
    short = estimate_offset(take[: 16000 * 2], backing, sr=16000)
    assert short.method == "bleed" and abs(short.offset_ms - truth) <= 1.0
    # The take goes on 4 s after the backing ended (those windows carry no evidence).
    longer = estimate_offset(take, backing[:, : 16000 * 6], sr=16000)
    assert longer.method == "bleed" and abs(longer.offset_ms - truth) <= 1.0


def test_to_dict_is_json_ready():
    take, backing, _ = _noise_take()
    a = estimate_offset(take, backing, sr=16000, latency_ms=100.0)
    assert isinstance(a, Alignment)
    d = json.loads(json.dumps(a.to_dict()))
    assert d["method"] == "bleed" and set(d) == {"offset_ms", "method", "confidence", "details"}
    assert 0.0 <= d["confidence"] <= 1.0


def test_apply_offset_late_early_and_length():
    y = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(apply_offset(y, offset_ms=3.0, sr=1000), y[3:])
    np.testing.assert_array_equal(apply_offset(y, offset_ms=-2.0, sr=1000)[:3], [0, 0, 1])
    assert apply_offset(y, offset_ms=-2.0, sr=1000, length=5).tolist() == [0, 0, 1, 2, 3]
    assert apply_offset(y, offset_ms=4.0, sr=1000, length=8).tolist() == [5, 6, 7, 8, 9, 10, 0, 0]
    stereo = np.stack([y, -y])
    assert apply_offset(stereo, offset_ms=1.0, sr=1000).shape == (2, 9)
    with pytest.raises(AlignmentError):
        apply_offset(y, offset_ms=float("nan"), sr=1000)


@pytest.mark.parametrize(
    "take, backing, kwargs, words",
    [
        (np.zeros(0, np.float32), np.ones(16000, np.float32), {}, "empty"),
        (np.ones(4000, np.float32), np.ones(16000, np.float32), {}, "0.5 s"),
        (np.full(16000, np.nan, np.float32), np.ones(16000, np.float32), {}, "NaN"),
        (np.ones(16000, np.float32), np.ones((16000, 2), np.float32), {}, "transpose"),
        (np.ones(16000, np.float32), np.ones(16000, np.float32), {"max_offset_ms": -5.0}, "max_offset_ms"),
        (np.ones(16000, np.float32), np.ones(16000, np.float32), {"latency_ms": float("inf")}, "latency_ms"),
    ],
)
def test_impossible_inputs_raise_alignment_error(take, backing, kwargs, words):
    with pytest.raises(AlignmentError, match=words) as info:
        estimate_offset(take, backing, sr=16000, **kwargs)
    assert isinstance(info.value, MelismaError)


def test_silent_take_is_not_an_alignment():
    backing = np.random.default_rng(0).standard_normal(32000).astype(np.float32)
    a = estimate_offset(np.zeros(32000, np.float32), backing, sr=16000)
    assert a.method == "none" and a.confidence == 0.0 and "silent" in a.details["reason"]


@pytest.mark.shared_data
def test_real_stems_with_speaker_bleed_in_a_real_room(shared_data):
    """MUSDB stems (44.1 kHz): vocals + the band (drums, bass, other) played through a phone-like
    band limit into a measured living-room response, 20 dB under the voice, 137 ms late, with
    noise. (The vocal stem itself already holds a little of the band at lag 0; it moves with the
    voice, as a real take's would.)"""
    from melisma.audio_io import load_audio
    from scipy.signal import fftconvolve

    stems = shared_data / "stems_easton_ellises_falcon69"
    rir_path = shared_data / "rirs" / "mit_ir_survey" / "h010_Livingroom_31txts.wav"
    if not stems.is_dir() or not rir_path.is_file():
        pytest.skip("stems or room response not in shared data")
    voice, sr = load_audio(stems / "vocals.wav", mono=True)
    band = sum(load_audio(stems / f"{name}.wav")[0] for name in ("drums", "bass", "other"))
    import pedalboard as pb

    speaker = pb.Pedalboard([pb.HighpassFilter(400.0), pb.HighpassFilter(400.0), pb.LowpassFilter(7000.0)])
    bleed = speaker(band.mean(axis=0)[None, :], sr)[0]
    rir = load_audio(rir_path, sr=sr)[0][0]
    rir = rir[int(np.argmax(np.abs(rir))):]  # the direct path defines the offset
    bleed = fftconvolve(bleed, rir)[: bleed.size]
    bleed *= 0.1 * np.sqrt(np.mean(voice**2) / np.mean(bleed**2))
    d = int(round(0.137 * sr))
    take = np.zeros_like(voice)
    take[d:] = (voice + bleed)[: voice.size - d]
    take += 0.05 * np.sqrt(np.mean(voice**2)) * np.random.default_rng(1).standard_normal(take.size).astype(np.float32)
    a = estimate_offset(take.astype(np.float32), band, sr=sr)
    assert a.method == "bleed"
    assert abs(a.offset_ms - d * 1000 / sr) <= TOLERANCE_MS
    assert a.confidence >= 0.8


def test_streaming_preparation_matches_whole_array_versions(monkeypatch):
    """Mix-down, clip masking, decimation and the TF weighting run in blocks: same result as in one go."""
    import soxr
    from melisma.analysis import align

    rng = np.random.default_rng(5)
    sr = 48000
    x = np.clip(rng.standard_normal(3 * sr).astype(np.float32) * 0.5, -0.8, 0.8)  # clipped at 0.8
    stereo = np.stack([x, 0.5 * x[::-1].copy()])
    rail = align._clip_rail(x)
    assert rail is not None and rail == pytest.approx(0.8 * 0.999)
    masked = np.where(np.abs(x) >= rail, 0.0, x).astype(np.float32)
    ours = align._decimate(x, sr, 16000, rail=rail)
    whole = soxr.resample(masked, sr, 16000, quality="MQ")
    assert ours.shape == whole.shape and np.abs(ours - whole).max() < 1e-6
    mixed = align._decimate(stereo, sr, 16000, stop=sr)
    whole_mixed = soxr.resample(stereo[:, :sr].mean(axis=0), sr, 16000, quality="MQ")
    assert np.abs(mixed - whole_mixed).max() < 1e-6
    assert align._clip_rail(rng.standard_normal(sr).astype(np.float32)) is None  # no clipping: nothing masked
    y16 = ours
    chunked = align._tf_weight(y16, exponent=2.0)
    monkeypatch.setattr(align, "_TF_CHUNK", 10**9)  # the whole spectrogram at once
    single = align._tf_weight(y16, exponent=2.0)
    assert np.abs(chunked - single).max() <= 1e-4 * np.abs(single).max()


def test_file_backed_buffers_give_the_same_alignment(bleed_cases, tmp_path):
    """A long take's weighted copies go to file-backed buffers (pipeline/spill.py): same answer, every
    take-length buffer from the allocator, no file left once the analysis closes them."""
    import contextlib

    from melisma.pipeline.spill import spilled_allocator

    case, _ = bleed_cases[1]  # a 16 kHz take, as the pipeline aligns
    plain = estimate_offset(case.take, case.backing, sr=case.sr)
    sizes: list[int] = []
    with contextlib.ExitStack() as stack:
        allocate = spilled_allocator(tmp_path, stack)

        def counting(size: int) -> np.ndarray:
            sizes.append(size)
            return allocate(size)

        spilled = estimate_offset(case.take, case.backing, sr=case.sr, allocate=counting)
        assert list(tmp_path.iterdir())
    assert spilled.offset_ms == plain.offset_ms and spilled.confidence == plain.confidence
    assert spilled.details["onset_look"] == plain.details["onset_look"]
    # take and backing weighted, the onset look's take, the second look's backing
    assert len(sizes) == 4 and min(sizes) >= case.take.size
    assert not list(tmp_path.iterdir())
