"""Clipping is found and repaired at the decoder's rate, before resampling and bleed removal (issue 14).

A 44.1 kHz take's flat tops do not survive the resampling to 48 kHz, and the bleed canceller
rewrites every sample, so the clean-up at 48 kHz after bleed removal never saw them: a clipped
phone take with bleed went through unrepaired. These tests run generated takes (a synthetic
voice with phone microphone, room and the backing's bleed, driven into the converter) through the
real decoder and the real pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from melisma import pipeline
from melisma.audio_io import decode, probe, resample
from melisma.pipeline.inputs import declip_at_file_rate
from melisma.pipeline.options import ENGINE_SR

from tools.corpus import degrade
from tools.corpus.scenarios import make_scenario, write_scenario


def _scenario_files(folder: Path, *, sr: int, clip_fraction: float, bleed_db: float | None = -14.0) -> dict:
    sc = make_scenario(seed=41, duration_s=6.0, sr=sr, offset_ms=120.0, bleed_db=bleed_db, snr_db=30.0,
                       clip_fraction=clip_fraction, backing_renderer="numpy")
    return write_scenario(sc, folder, take_format="wav", backing_format="wav")


def sdr_in_clipped(y: np.ndarray, ref: np.ndarray) -> float:
    """SDR (dB) of ``y`` against ``ref`` in the samples the rail cut (``|ref| > 1``)."""
    n = min(ref.size, y.size)
    where = np.abs(ref[:n]) > 1.0
    err = y[:n][where] - ref[:n][where]
    return float(10 * np.log10(np.sum(ref[:n][where] ** 2) / np.sum(err**2)))


def clipped_memo(data: Path, folder: Path, *, seconds: float) -> tuple[Path, np.ndarray, np.ndarray]:
    """A real vocal at 44.1 kHz clipped 5 % and written as a 128 kbit/s AAC voice memo: its path, the
    vocal and the waveform before the rail at the engine rate."""
    from melisma.audio_io import load_audio

    voice, _ = load_audio(data / "gtsinger_demo/fr02_Control.flac", sr=44100, mono=True)
    voice = np.asarray(voice, np.float32)[: int(seconds * 44100)]
    voice = (0.9 * voice / np.max(np.abs(voice))).astype(np.float32)
    clipped, drive_db = degrade.clip(voice, fraction=0.05)
    path = folder / "memo.m4a"
    degrade.write_aligned(str(path), clipped, 44100, bit_rate=128000)
    ref = resample((voice * np.float32(10 ** (drive_db / 20))).astype(np.float32), orig_sr=44100, target_sr=ENGINE_SR)
    return path, voice, ref


def test_a_clipped_44k_take_with_bleed_is_repaired_by_the_mix(tmp_path: Path) -> None:
    paths = _scenario_files(tmp_path, sr=44100, clip_fraction=0.05)
    assert probe(paths["take"]).sr == 44100
    report_path = tmp_path / "mix.report.json"
    pipeline.mix_files(paths["take"], paths["backing"], tmp_path / "mix.wav", report_path=report_path)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    actions = report["cleanup"]["actions"]
    kinds = [a["action"] for a in actions]
    assert "declip" in kinds, f"the clipped take was not repaired; clean-up actions: {kinds}"
    declip = next(a for a in actions if a["action"] == "declip")
    assert declip["sr"] == 44100 and declip["regions"] > 50 and 0.02 < declip["fraction"] < 0.08
    assert kinds.index("declip") < kinds.index("bleed_removal")  # repaired before the bleed came out
    assert "repaired" in json.dumps(report["headline"]) and "clipped runs" in json.dumps(report["headline"])


def test_the_repair_at_the_file_rate_brings_the_clipped_peaks_back(tmp_path: Path) -> None:
    """At 44.1 kHz: the 48 kHz take the pipeline gets is closer to the waveform before the rail."""
    sc = make_scenario(seed=42, duration_s=4.0, sr=44100, snr_db=35.0, backing_renderer="numpy")
    truth = sc.take / np.float32(np.max(np.abs(sc.take)))
    clipped, drive_db = degrade.clip(truth, fraction=0.05)
    path = tmp_path / "take.wav"
    degrade.write_aligned(str(path), clipped, 44100)
    ref = resample((truth * np.float32(10 ** (drive_db / 20))).astype(np.float32), orig_sr=44100, target_sr=ENGINE_SR)
    repaired, found = declip_at_file_rate(path, probe(path))
    plain = decode(path, sr=ENGINE_SR, channels=1)  # what the pipeline used to get
    assert found["action"] is not None and found["clipping"]["sr"] == 44100
    assert repaired.audio is not None and plain.audio is not None and repaired.audio.shape == plain.audio.shape
    gain = sdr_in_clipped(repaired.audio[0], ref) - sdr_in_clipped(plain.audio[0], ref)
    assert gain > 3.0, f"repair at 44.1 kHz gained only {gain:.1f} dB in the clipped samples"
    assert repaired.analysis is not None and abs(repaired.analysis.size - plain.n_samples / 3) <= 2


@pytest.mark.parametrize("sr", [44100, 48000])
def test_an_unclipped_take_decodes_to_the_same_samples(tmp_path: Path, sr: int) -> None:
    paths = _scenario_files(tmp_path, sr=sr, clip_fraction=0.0, bleed_db=None)
    d, found = declip_at_file_rate(paths["take"], probe(paths["take"]))
    plain = decode(paths["take"], sr=ENGINE_SR, channels=1, analysis_sr=16000)
    assert found["action"] is None and found["clipping"]["regions"] == 0
    assert d.audio is not None and plain.audio is not None
    np.testing.assert_array_equal(d.audio, plain.audio)
    np.testing.assert_array_equal(d.analysis, plain.analysis)


def test_a_clipped_aac_take_is_repaired_at_the_file_rate_and_a_clean_one_is_left_alone(shared_data, tmp_path: Path) -> None:
    """A real vocal clipped 5 % before a 44.1 kHz AAC encoder (a phone voice memo): no exact rail is
    left, the soft-rail test finds it and the repair brings the peaks back; unclipped, the same
    AAC take decodes to exactly the samples it did before."""
    path, voice, ref = clipped_memo(shared_data, tmp_path, seconds=5.0)
    repaired, found = declip_at_file_rate(path, probe(path))
    assert found["action"] is not None, found["clipping"]
    assert found["clipping"]["method"] == "soft rail" and found["action"]["found"] == "soft rail"
    assert found["clipping"]["sr"] == 44100 and found["action"]["regions"] > 50
    plain = decode(path, sr=ENGINE_SR, channels=1)
    assert repaired.audio is not None and plain.audio is not None
    assert sdr_in_clipped(repaired.audio[0], ref) - sdr_in_clipped(plain.audio[0], ref) > 1.5  # measured +2.7 dB at 48 kHz

    clean_path = tmp_path / "clean.m4a"
    degrade.write_aligned(str(clean_path), voice, 44100, bit_rate=128000)
    d, nothing = declip_at_file_rate(clean_path, probe(clean_path))
    assert nothing["action"] is None and nothing["clipping"]["regions"] == 0
    same = decode(clean_path, sr=ENGINE_SR, channels=1, analysis_sr=16000)
    assert d.audio is not None and same.audio is not None
    np.testing.assert_array_equal(d.audio, same.audio)


def _long(path: Path, folder: Path) -> tuple[np.ndarray, dict]:
    """The take through decode_take's long-take path (spilled to a file at 48 kHz): its samples and its clipping."""
    from melisma.pipeline.inputs import decode_take

    d, _, _, clipping = decode_take(path, npy_path=folder / "take.npy", spill_bytes=1)  # any take counts as long
    assert d.audio is None and d.npy_path is not None
    return np.load(d.npy_path), clipping


def test_a_long_48k_take_is_repaired_block_by_block_as_a_short_one_is(tmp_path: Path) -> None:
    """A take too long to hold in memory is repaired in its spill file, block by block: the same
    samples as the in-memory repair of the same take (before, long takes were never repaired)."""
    paths = _scenario_files(tmp_path, sr=48000, clip_fraction=0.05, bleed_db=None)
    short, found = declip_at_file_rate(paths["take"], probe(paths["take"]))
    assert found["action"] is not None and short.audio is not None
    long, clipping = _long(paths["take"], tmp_path)
    assert clipping["action"] is not None and clipping["action"]["found"] == "rail"
    assert abs(clipping["action"]["regions"] - found["action"]["regions"]) <= 3  # runs split by a block edge aside
    assert clipping["action"]["threshold"] == found["action"]["threshold"]
    np.testing.assert_allclose(long, short.audio[0], atol=1e-6)
    plain = decode(paths["take"], sr=ENGINE_SR, channels=1)
    assert plain.audio is not None and not np.array_equal(long, plain.audio[0])


def test_a_long_unclipped_take_is_left_as_decoded(tmp_path: Path) -> None:
    paths = _scenario_files(tmp_path, sr=44100, clip_fraction=0.0, bleed_db=None)
    long, clipping = _long(paths["take"], tmp_path)
    assert clipping["action"] is None and clipping["clipping"]["regions"] == 0
    plain = decode(paths["take"], sr=ENGINE_SR, channels=1)
    assert plain.audio is not None
    np.testing.assert_array_equal(long, plain.audio[0])


def test_a_long_clipped_aac_take_is_found_by_the_soft_rail_test_and_repaired(shared_data, tmp_path: Path) -> None:
    path, _, ref = clipped_memo(shared_data, tmp_path, seconds=6.0)
    long, clipping = _long(path, tmp_path)
    assert clipping["action"] is not None and clipping["action"]["found"] == "soft rail", clipping
    plain = decode(path, sr=ENGINE_SR, channels=1)
    assert plain.audio is not None
    assert sdr_in_clipped(long, ref) - sdr_in_clipped(plain.audio[0], ref) > 1.5
