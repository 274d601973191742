"""The monitor's real-time chain path against the engine's own stages (the reference)."""

from __future__ import annotations

import numpy as np
import pytest
from melisma.device.audio.monitor import live_chain
from melisma.device.audio.rt_chain import RtBandwidthExtender, RtChain, RtDeEsser
from melisma.render.chain import DeEsser
from melisma.render.exciter import BandwidthExtender

from tools.bench_audio import sung_line

SR = 48000


@pytest.fixture(scope="module")
def line():
    return sung_line(1.5)  # harmonics with vibrato, and noise bursts that make the de-esser work


def _blocks(x, n):
    return [x[i:i + n] for i in range(0, len(x) - n + 1, n)]


@pytest.mark.parametrize(("style", "sliders", "block"), [("cpop", None, 128), ("cpop", None, 64),
                                                         ("western", {"reverb": 0.5, "air": 0.8}, 256),
                                                         ("neutral", None, 100)])
def test_rt_chain_gives_the_reference_output(line, style, sliders, block):
    ref = live_chain(style, sliders, sample_rate=SR)
    ref(np.zeros(block, np.float32), SR, reset=True)
    fast = RtChain(live_chain(style, sliders, sample_rate=SR), SR, block)
    fast.reset()
    assert fast.fast_stages == 2  # the de-esser and the bandwidth extender run on the fast path
    a = np.concatenate([ref(b, SR, reset=False) for b in _blocks(line, block)], axis=1)
    b = np.concatenate([fast(b).copy() for b in _blocks(line, block)], axis=1)
    assert a.shape == b.shape == (2, len(line) // block * block)
    assert np.max(np.abs(a)) > 0.05
    # float32 rounding: the de-esser's block levels differ by at most an ulp; reverb and compressor carry it on
    assert np.max(np.abs(a - b)) < 2e-5


def test_fast_stages_match_their_stage_and_the_extender_bit_for_bit(line):
    chain = live_chain("cpop", sample_rate=SR)
    deesser = next(s for s in chain.stages if isinstance(s, DeEsser))
    extender = next(s for s in chain.stages if isinstance(s, BandwidthExtender))
    for stage, cls, tol in ((deesser, RtDeEsser, 1e-7), (extender, RtBandwidthExtender, 0.0)):
        ref = type(stage)(**{k: getattr(stage, k) for k in stage.__dataclass_fields__ if not k.startswith("_")})
        ref(np.zeros(128, np.float32), SR, reset=True)
        stage(np.zeros(128, np.float32), SR, reset=True)
        fast = cls(stage, SR, 128)
        a = np.concatenate([ref(b, SR, reset=False) for b in _blocks(line, 128)])
        b = np.concatenate([fast.process(b).copy() for b in _blocks(line, 128)])
        assert float(np.max(np.abs(a - b))) <= tol, cls.__name__
        assert not np.array_equal(a, line[:len(a)])  # the stage did something to this signal


def test_the_two_paths_share_the_stage_state(line):
    """Blocks alternating between the stage's own call and the fast path: the same stream as one path."""
    ref = live_chain("cpop", sample_rate=SR)
    ref(np.zeros(128, np.float32), SR, reset=True)
    mixed = live_chain("cpop", sample_rate=SR)
    fast = RtChain(mixed, SR, 128)
    fast.reset()
    a, b = [], []
    for i, blk in enumerate(_blocks(line, 128)):
        a.append(ref(blk, SR, reset=False))
        b.append(fast(blk).copy() if i % 3 else mixed(blk, SR, reset=False))
    assert np.max(np.abs(np.concatenate(a, axis=1) - np.concatenate(b, axis=1))) < 2e-5


def test_a_block_of_another_size_reallocates_and_stays_exact(line):
    ref = live_chain("cpop", sample_rate=SR)
    ref(np.zeros(128, np.float32), SR, reset=True)
    fast = RtChain(live_chain("cpop", sample_rate=SR), SR, 128)
    fast.reset()
    sizes = [128, 128, 37, 128, 300, 128]
    pos, a, b = 0, [], []
    for n in sizes * 4:
        blk = line[pos:pos + n]
        pos += n
        a.append(ref(blk, SR, reset=False))
        b.append(fast(blk).copy())
    assert np.max(np.abs(np.concatenate(a, axis=1) - np.concatenate(b, axis=1))) < 2e-5
