"""The brighter slider does not undo the de-esser (render/lift.py, issue 14).

A generated take: sung vowels (a 220 Hz harmonic tone up to 8 kHz) with esses between them (noise
bursts band-passed to 5-9 kHz, loud enough for the de-esser to act). Through the whole vocal chain
(style neutral, no reverb tails: the Space stage is left out so band levels are the chain's own),
``warmth = -1`` must lift the vowels' 2.5-6 kHz band by a measurable amount while the esses' 5-9
kHz level stays within 1 dB of the de-essed level (brighter 0). The old static +4.5 dB peak gave
the esses about +3 dB back.
"""

from __future__ import annotations

import numpy as np
import pytest
from melisma.analysis.voice import analyze_voice
from melisma.render.chain import DeEsser, build_vocal_chain, split_vocal_chain
from melisma.render.lift import SibilanceKeyedEQ
from melisma.render.stages import Chain
from melisma.semantic import resolve_settings
from scipy import signal

SR = 48000
BLOCK = 480  # 10 ms


def _take(seconds: float = 4.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vowels and esses alternating (0.4 s vowel, 0.15 s ess, 0.05 s gap); masks per 10 ms block."""
    rng = np.random.default_rng(3)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 220.0 * 2 ** (0.4 / 12 * np.sin(2 * np.pi * 5.0 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    tone = sum(np.sin(k * phase) / k for k in range(1, 36))  # to 7.7 kHz
    hiss = signal.sosfilt(signal.butter(6, [5000, 9000], "bandpass", fs=SR, output="sos"), rng.standard_normal(n))
    cycle = (t % 0.6)
    vowel = cycle < 0.4
    ess = (cycle >= 0.42) & (cycle < 0.57)
    y = 0.25 * tone * vowel + 0.5 * hiss * ess
    nb = n // BLOCK
    # blocks well inside a vowel / an ess (5 blocks from either edge: no filter or release tails)
    pos = (np.arange(nb) * BLOCK + BLOCK // 2) / SR % 0.6
    vowel_blocks = (pos > 0.05) & (pos < 0.35)
    ess_blocks = (pos > 0.47) & (pos < 0.52)
    return y.astype(np.float32), vowel_blocks, ess_blocks


def _band_db(y: np.ndarray, blocks: np.ndarray, lo: float, hi: float) -> float:
    z = signal.sosfilt(signal.butter(4, [lo, hi], "bandpass", fs=SR, output="sos"), y.mean(axis=0) if y.ndim == 2 else y)
    nb = blocks.size
    e = (z[: nb * BLOCK].reshape(nb, BLOCK) ** 2).sum(axis=1)
    return float(10 * np.log10(e[blocks].sum() + 1e-30))


def _dry_and_tone(take: np.ndarray, sliders: dict, *, keyed: bool = True) -> np.ndarray:
    """The vocal chain without its space; ``keyed=False`` rebuilds the old static brighter peak."""
    settings = resolve_settings("neutral", sliders)
    if not keyed:
        for band in settings.eq_bands:
            if band.type == "keyed_peak":
                band.type = "peak"
    chain, _ = build_vocal_chain(settings, analyze_voice(take, sr=SR), sr=SR)
    assert any(isinstance(s, DeEsser) for s in chain.stages), "the take's esses must set the de-esser going"
    return Chain([s for s in chain.stages if type(s).__name__ != "Space"])(take, SR)


@pytest.fixture(scope="module")
def renders():
    take, vowels, esses = _take()
    out = {b: _dry_and_tone(take, {"warmth": -b} if b else {}) for b in (0.0, 0.5, 1.0)}
    out["static"] = _dry_and_tone(take, {"warmth": -1.0}, keyed=False)
    return out, vowels, esses


@pytest.mark.parametrize("amount", [0.5, 1.0])
def test_brighter_lifts_the_vowels_top_and_leaves_the_esses_de_essed(renders, amount):
    out, vowels, esses = renders
    vowel_lift = _band_db(out[amount], vowels, 2500, 6000) - _band_db(out[0.0], vowels, 2500, 6000)
    ess_change = _band_db(out[amount], esses, 5000, 9000) - _band_db(out[0.0], esses, 5000, 9000)
    assert vowel_lift > 1.5 * amount, f"brighter {amount:+} lifted the vowels' 2.5-6 kHz by only {vowel_lift:.2f} dB"
    assert abs(ess_change) < 1.0, f"brighter {amount:+} moved the de-essed esses by {ess_change:+.2f} dB"


def test_the_old_static_lift_gave_the_esses_back(renders):
    """The check above can fail: the static peak of the old chain lifts the esses by well over 1 dB."""
    out, _, esses = renders
    assert _band_db(out["static"], esses, 5000, 9000) - _band_db(out[0.0], esses, 5000, 9000) > 1.5


def test_the_lift_is_in_the_wet_part():
    """A brighter move re-runs only the wet part: the dry part (de-esser, compressor) is the same."""
    take, _, _ = _take(1.2)
    voice = analyze_voice(take, sr=SR)
    plain, _ = build_vocal_chain(resolve_settings("neutral"), voice, sr=SR)
    bright, why = build_vocal_chain(resolve_settings("neutral", {"warmth": -1.0}), voice, sr=SR)
    dry_plain, _ = split_vocal_chain(plain)
    dry_bright, wet_bright = split_vocal_chain(bright)
    assert [s.describe() for s in dry_plain.stages] == [s.describe() for s in dry_bright.stages]
    assert any(isinstance(s, SibilanceKeyedEQ) for s in wet_bright.stages)
    np.testing.assert_array_equal(wet_bright(dry_bright(take, SR), SR), bright(take, SR))
    assert any(w["stage"] == "keyed_lift" for w in why)
