"""The stage contract, over every Stage subclass in the package.

``stage(audio, sr, reset=True)`` returns float32 audio of the input's length, finite, and streaming
the same signal in blocks with ``reset=False`` gives what one call gives; ``reset=True`` starts
afresh. A new Stage subclass fails :func:`test_every_stage_subclass_is_covered` until it has a
factory here.
"""

from __future__ import annotations

import importlib
import pkgutil

import melisma.render
import numpy as np
import pytest
from melisma.render.stages import Chain, Gain, PedalboardStage, Stage

SR = 48000


def _all_stage_classes() -> set[type]:
    for info in pkgutil.iter_modules(melisma.render.__path__):
        importlib.import_module(f"melisma.render.{info.name}")
    found, todo = set(), [Stage]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return {c for c in found if not c.__name__.startswith("_")}


def _voice(n: int, seed: int = 0) -> np.ndarray:
    """Sung-like phrases (a harmonic tone with vibrato, gaps between) over a little noise, peaks near 0.9."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    f0 = 220.0 * 2 ** (0.5 / 12 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = (np.sin(2 * np.pi * 0.7 * t) > -0.3).astype(float)
    y = 0.45 * tone * envelope + 0.003 * rng.standard_normal(n)
    return y.astype(np.float32)


def _factories():
    import pedalboard
    from melisma.analysis.cleanup import estimate_noise
    from melisma.render.chain import DeEsser, Space
    from melisma.render.clean import BleedCanceller, Declipper, Gate, HumNotch, RumbleFilter, SpectralDenoiser, fit_bleed
    from melisma.render.declip import ARDeclipper
    from melisma.render.ducker import Ducker
    from melisma.render.exciter import BandwidthExtender
    from melisma.render.learned_denoise import LearnedDenoiser
    from melisma.render.lift import SibilanceKeyedEQ
    from melisma.render.limiter import TruePeakLimiter
    from melisma.render.resynth import PitchCorrector

    n = SR * 2
    voice = _voice(n)
    # the test voice's pitch every 10 ms (220 Hz, sung 0.7 s of every 1.4 s), sung 30 cents flat of A3
    f0 = np.where(np.arange(n // 480) % 140 < 100, 220.0, 0.0)
    notes = [{"start_s": 0.0, "end_s": 1.0, "midi": 57.0, "target_midi": 57.3},
             {"start_s": 1.4, "end_s": 2.0, "midi": 57.0, "target_midi": 56.7}]
    backing = np.stack([_voice(n, seed=7)[::-1], _voice(n, seed=8)[::-1]]) * 0.5  # a stereo reference
    return {
        BleedCanceller: lambda: BleedCanceller(reference=backing,
                                               model=fit_bleed(voice + 0.3 * backing.mean(axis=0), backing, sr=SR)),
        Gain: lambda: Gain(gain_db=-3.0),
        Chain: lambda: Chain([Gain(gain_db=-1.0), RumbleFilter(cutoff_hz=80.0)]),
        PedalboardStage: lambda: PedalboardStage([pedalboard.Compressor(threshold_db=-20, ratio=4)]),
        DeEsser: lambda: DeEsser(lo_hz=5000, hi_hz=9000, threshold_db=-40.0),
        Space: lambda: Space(reverb={"room_size": 0.6, "wet_level": 0.2, "predelay_ms": 20.0},
                             delay_ms=250.0, delay_feedback=0.2, delay_mix=0.1),
        RumbleFilter: lambda: RumbleFilter(cutoff_hz=80.0),
        HumNotch: lambda: HumNotch(fundamental_hz=50.0, n_harmonics=4),
        Declipper: lambda: Declipper(threshold=0.8),
        ARDeclipper: lambda: ARDeclipper(threshold=0.6),  # the test voice's peaks reach ~0.7: runs to rebuild
        BandwidthExtender: lambda: BandwidthExtender(),
        SibilanceKeyedEQ: lambda: SibilanceKeyedEQ(bands=({"freq_hz": 4400.0, "gain_db": 4.5, "q": 0.6},)),
        SpectralDenoiser: lambda: SpectralDenoiser(noise=estimate_noise(voice, sr=SR)),
        Gate: lambda: Gate(threshold_db=-40.0, floor_db=-15.0),
        LearnedDenoiser: lambda: LearnedDenoiser(),
        TruePeakLimiter: lambda: TruePeakLimiter(ceiling_dbtp=-6.0),
        Ducker: lambda: Ducker(duck_db=3.0, sidechain=voice),
        PitchCorrector: lambda: PitchCorrector(f0_hz=f0, hop_s=0.01, notes=notes, ornaments=[]),
    }


def test_every_stage_subclass_is_covered():
    assert _all_stage_classes() == set(_factories())


@pytest.mark.parametrize("cls", sorted(_factories(), key=lambda c: c.__name__), ids=lambda c: c.__name__)
@pytest.mark.parametrize("blocks", [(4801,), (128, 1000, 7), (SR // 2 + 17,)], ids=["4801", "mixed", "half-second"])
def test_streamed_blocks_equal_one_call(cls, blocks):
    x = _voice(SR * 2)
    if cls.__name__ == "Ducker":
        x = np.stack([x, x[::-1].copy()])  # a backing: stereo
    stage = _factories()[cls]()
    whole = stage(x, SR)
    assert whole.dtype == np.float32 and whole.shape[-1] == x.shape[-1] and np.all(np.isfinite(whole))
    pieces, at, k = [], 0, 0
    while at < x.shape[-1]:
        size = blocks[k % len(blocks)]
        pieces.append(stage(x[..., at : at + size], SR, reset=at == 0))
        at += size
        k += 1
    streamed = np.concatenate(pieces, axis=-1)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5, err_msg=f"{cls.__name__} streamed in blocks of {blocks}")
    again = stage(x, SR)  # reset=True forgets the stream
    np.testing.assert_array_equal(again, whole)


_OFFLINE = {"SpectralDenoiser": "denoise", "Gate": "gate", "LearnedDenoiser": "denoise", "PitchCorrector": "correct"}
#: How late each framed stage may be: a frame for the denoiser and the gate; the longest
#: corrected voiced run (the factory's voiced runs are 1.0 s, padded by 20 ms) for the corrector.
_MOST_LATE_S = {"SpectralDenoiser": 0.05, "Gate": 0.05, "LearnedDenoiser": 0.05, "PitchCorrector": 1.1}


@pytest.mark.parametrize("name", sorted(_OFFLINE))
def test_framed_stages_stream_their_offline_result_late_by_their_latency(name):
    cls = next(c for c in _factories() if c.__name__ == name)
    x = _voice(SR * 2, seed=1)
    stage = _factories()[cls]()
    offline = getattr(stage, _OFFLINE[name])(x, SR)
    assert not np.allclose(offline, x, atol=1e-3)  # it does change the signal
    late = stage.latency_samples(SR)
    assert 0 < late < _MOST_LATE_S[name] * SR
    streamed = np.concatenate([stage(x[a : a + 3000], SR, reset=a == 0) for a in range(0, x.size, 3000)])
    np.testing.assert_allclose(streamed[late:], offline[: x.size - late], atol=1e-5)
    np.testing.assert_array_equal(streamed[:late], 0.0)
