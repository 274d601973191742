"""Clipping that a codec (or noise on an analog rail) has smeared is found by its shape and repaired (issue 14).

After AAC the samples that sat on the rail lie under it and ripple, so the exact rail test
(``detect_clipping``) finds nothing, and a hard-limited take (phone AGC) piles up under its
peak just as a clipped one does. ``detect_soft_clipping`` asks the AR model what the near-peak
runs should have been. Real vocals (``../shared/data``, skipped without it) go through the real
AAC encoder and decoder; the generated signals check the parts that need no real voice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from melisma.analysis.cleanup import detect_clipping
from melisma.audio_io import decode, load_audio
from melisma.render.declip import SOFT_CLIP_MIN_OVERSHOOT_DB, ARDeclipper, detect_soft_clipping
from melisma.render.limiter import TruePeakLimiter

from tools.corpus import degrade

SR = 48000
#: Real vocals with no clipping of their own (the GTSinger tenor's control take, for one, is clipped at the source).
VOCALS = ["gtsinger_demo/fr02_Control.flac", "openair_anechoic_singing/singing_operatic_anechoic.wav",
          "stems_easton_ellises_falcon69/vocals.wav"]


def real_vocal(data: Path, rel: str, seconds: float = 5.0) -> np.ndarray:
    y, _ = load_audio(data / rel, sr=SR, mono=True)
    y = np.asarray(y, np.float32)[: int(seconds * SR)]
    return (0.9 * y / np.max(np.abs(y))).astype(np.float32)


def through_aac(y: np.ndarray, folder: Path, name: str) -> np.ndarray:
    path = folder / f"{name}.m4a"
    degrade.write_aligned(str(path), y, SR, bit_rate=128000)
    d = decode(path, sr=SR, channels=1)
    assert d.audio is not None
    return d.audio[0][: y.size]


def sdr_db(est: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((est.astype(np.float64) - ref) ** 2)))


@pytest.mark.parametrize("rel", VOCALS)
@pytest.mark.parametrize("fraction", [0.01, 0.05])
def test_clipping_under_aac_is_found_and_repaired(shared_data, tmp_path, rel, fraction):
    voice = real_vocal(shared_data, rel)
    clipped, drive_db = degrade.clip(voice, fraction=fraction)
    truth = voice * np.float32(10 ** (drive_db / 20))  # the waveform before the rail
    decoded = through_aac(clipped, tmp_path, "clipped")
    assert detect_clipping(decoded, sr=SR)["regions"] == 0  # the exact rail is gone
    found = detect_soft_clipping(decoded, sr=SR)
    assert found["regions"] > 20 and found["overshoot_db"] >= SOFT_CLIP_MIN_OVERSHOOT_DB, found
    assert 0.5 * fraction < found["fraction"] < 2.5 * fraction, found
    fixed = ARDeclipper(threshold=found["threshold"]).declip(decoded, SR)
    where = np.abs(truth) > 1.0
    gain = sdr_db(fixed[where], truth[where]) - sdr_db(decoded[where], truth[where])
    assert gain > 1.5, f"{rel}: the repair gained {gain:.1f} dB in the clipped samples"  # measured +2.7 ... +10.8


@pytest.mark.parametrize("rel", VOCALS)
@pytest.mark.parametrize("drive_db", [0.0, 6.0, 18.0])
def test_an_unclipped_or_hard_limited_aac_take_is_not_called_clipped(shared_data, tmp_path, rel, drive_db):
    voice = real_vocal(shared_data, rel)
    if drive_db:  # driven into a brick-wall limiter, as a phone's AGC does: peaks pile up under -1 dBFS
        voice = TruePeakLimiter(ceiling_dbtp=-1.0, release_ms=50.0).limit(voice * np.float32(10 ** (drive_db / 20)), SR)
    found = detect_soft_clipping(through_aac(voice, tmp_path, "take"), sr=SR)
    assert found["regions"] == 0 and found["fraction"] == 0.0, found
    assert found["overshoot_db"] < SOFT_CLIP_MIN_OVERSHOOT_DB


def tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return np.sin(2 * np.pi * 220 * t) + 0.4 * np.sin(2 * np.pi * 440 * t + 1.0)


def test_a_noisy_analog_rail_is_found_where_the_exact_test_misses_it():
    rng = np.random.default_rng(3)
    noisy = (0.5 * np.clip(tone(), -1.2, 1.2) + 3e-4 * rng.standard_normal(SR)).astype(np.float32)  # noise after the rail
    assert detect_clipping(noisy, sr=SR)["regions"] == 0
    found = detect_soft_clipping(noisy, sr=SR)
    assert found["regions"] > 20 and found["method"] == "soft rail" and 0.5 < found["threshold"] / 0.6 < 1.0
    assert detect_soft_clipping((0.5 * tone()).astype(np.float32), sr=SR)["regions"] == 0  # the same tone, unclipped


def test_nothing_to_test_reads_as_not_clipped():
    for x in (np.zeros(SR, np.float32), np.zeros(10, np.float32), np.full(SR, np.nan, np.float32)):
        found = detect_soft_clipping(x, sr=SR)
        assert found["regions"] == 0 and found["fraction"] == 0.0
