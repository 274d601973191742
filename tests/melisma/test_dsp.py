"""melisma.dsp: scipy's own filter kernels without importing scipy.signal, kept designs, exact sliding minimum."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from melisma import dsp
from scipy import ndimage, signal


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [None, 1, 2])
def test_sosfilt_is_scipys_bit_for_bit_across_blocks(dtype, channels):
    rng = np.random.default_rng(3)
    sos = signal.butter(4, [300.0, 3000.0], btype="bandpass", fs=48000, output="sos").astype(dtype)
    shape = (5000,) if channels is None else (channels, 5000)
    x = rng.standard_normal(shape).astype(dtype)
    zi_shape = (sos.shape[0], 2) if channels is None else (sos.shape[0], channels, 2)
    ours, theirs = np.zeros(zi_shape, dtype), np.zeros(zi_shape, dtype)
    for a in range(0, 5000, 1700):  # streamed in uneven blocks, state carried over
        block = x[..., a : a + 1700]
        y1, ours = dsp.sosfilt(sos, block, ours)
        y2, theirs = signal.sosfilt(sos, block, axis=-1, zi=theirs)
        assert y1.dtype == y2.dtype
        assert np.array_equal(y1, y2)
        assert np.array_equal(ours, theirs)


def test_sosfilt_leaves_its_input_alone():
    x = np.ones((2, 100), np.float32)
    sos = signal.butter(2, 1000.0, fs=48000, output="sos").astype(np.float32)
    dsp.sosfilt(sos, x, np.zeros((1, 2, 2), np.float32))
    assert np.all(x == 1.0)


def test_lfilter_is_scipys_bit_for_bit():
    rng = np.random.default_rng(4)
    x = rng.random(3000)
    y1, z1 = dsp.lfilter([0.2], [1.0, -0.8], x, [0.5])
    y2, z2 = signal.lfilter([0.2], [1.0, -0.8], x, zi=[0.5])
    assert np.array_equal(y1, y2) and np.array_equal(z1, z2)


@pytest.mark.parametrize("width", [1, 2, 3, 16, 239, 240, 241])
def test_sliding_min_is_the_inner_part_of_minimum_filter1d(width):
    rng = np.random.default_rng(width)
    for n in (1, 7, 5000):
        x = rng.random(width - 1 + n)
        expected = ndimage.minimum_filter1d(x, width)[width // 2 : width // 2 + n]
        assert np.array_equal(dsp.sliding_min(x, width), expected)


def test_sliding_min_refuses_a_window_longer_than_the_signal():
    with pytest.raises(ValueError, match="width"):
        dsp.sliding_min(np.zeros(3), 4)


def test_designs_survive_a_save_and_load_exactly(tmp_path):
    sos = dsp.design("butter", 2, [4321.5, 8765.25], "bandpass", 48000, "sos")
    ba = dsp.design("butter", 2, 2345.678, "lowpass", 44100, "ba")
    fir = dsp.design("firwin", 33, 0.25, ["kaiser", 6.0])
    assert np.array_equal(sos, signal.butter(2, [4321.5, 8765.25], btype="bandpass", fs=48000, output="sos"))
    b, a = signal.butter(2, 2345.678, btype="lowpass", fs=44100)
    assert np.array_equal(ba[0], b) and np.array_equal(ba[1], a)
    assert np.array_equal(fir, signal.firwin(33, 0.25, window=("kaiser", 6.0)))
    path = tmp_path / "filters.json"
    assert dsp.save_designs(path)
    saved = json.loads(path.read_text())
    assert saved["format"] == "melisma-filter-designs"
    # a fresh process loads them and gets the same bits without designing (or importing scipy.signal)
    code = (
        "import sys, json, numpy as np\n"
        "from melisma import dsp\n"
        f"assert dsp.load_designs({str(path)!r}) >= 3\n"
        "sos = dsp.design('butter', 2, [4321.5, 8765.25], 'bandpass', 48000, 'sos')\n"
        "print(json.dumps({'sos': sos.tolist(), 'signal': 'scipy.signal' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert result["signal"] is False
    assert np.array_equal(np.array(result["sos"]), sos)


def test_a_damaged_design_file_is_ignored(tmp_path):
    path = tmp_path / "filters.json"
    path.write_text("{not json")
    assert dsp.load_designs(path) == 0
    path.write_text(json.dumps({"format": "something else", "designs": {"x": [1]}}))
    assert dsp.load_designs(path) == 0
    assert dsp.load_designs(tmp_path / "missing.json") == 0


def test_unknown_design_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kind"):
        dsp.design("chebyshev", 2, 0.1)
