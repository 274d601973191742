"""melisma.filter_design against scipy.signal itself: the same coefficients, bit for bit."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from melisma import filter_design as fd
from scipy import signal

RATES = (16000, 44100, 48000)


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("order", (1, 2, 3, 4, 8))
@pytest.mark.parametrize("btype", ("lowpass", "highpass", "bandpass"))
@pytest.mark.parametrize("output", ("ba", "sos"))
def test_butter_is_scipys_bit_for_bit(sr, order, btype, output):
    rng = np.random.default_rng(order * 7 + sr)
    for _ in range(6):
        lo = float(rng.uniform(20.0, 0.2 * sr))
        freq = [lo, float(rng.uniform(lo * 1.05, 0.49 * sr))] if btype == "bandpass" else lo
        ours = fd.butter(order, freq, btype, fs=sr, output=output)
        theirs = signal.butter(order, freq, btype=btype, fs=sr, output=output)
        if output == "ba":
            assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])
        else:
            assert np.array_equal(ours, theirs), (order, freq, btype)


@pytest.mark.parametrize("sr", RATES)
def test_notch_and_its_sections_are_scipys(sr):
    for f in (50.0, 60.0, 150.0, 1234.5):
        for q in (5.0, 30.0, 30.0 * np.sqrt(3)):
            b, a = fd.iirnotch(f, q, fs=sr)
            sb, sa = signal.iirnotch(f, q, fs=sr)
            assert np.array_equal(b, sb) and np.array_equal(a, sa)
            assert np.array_equal(fd.tf2sos(b, a), signal.tf2sos(sb, sa))


def test_windows_and_the_fir_are_scipys():
    for n in (1, 2, 7, 512, 1024, 4096):
        assert np.array_equal(fd.hann(n), signal.get_window("hann", n))
        assert np.array_equal(fd.hann(n, sym=True), signal.windows.hann(n, sym=True))
    for taps, cutoff, beta in ((65, 0.25, 6.0), (33, 0.5, 8.6), (129, 0.125, 5.0)):
        assert np.array_equal(fd.firwin_lowpass(taps, cutoff, kaiser_beta=beta),
                              signal.firwin(taps, cutoff, window=("kaiser", beta)))


def test_bad_designs_name_the_value():
    with pytest.raises(ValueError, match="25000"):
        fd.butter(2, 25000.0, "lowpass", fs=48000)
    with pytest.raises(ValueError, match="bandstop"):
        fd.butter(2, [100.0, 200.0], "bandstop", fs=48000)
    with pytest.raises(ValueError, match="increasing"):
        fd.butter(2, [2000.0, 200.0], "bandpass", fs=48000)


def test_the_module_does_not_import_scipy_signal():
    code = ("import sys; from melisma import filter_design as fd; fd.butter(4, 1000.0, 'highpass', fs=48000, output='sos'); "
            "fd.firwin_lowpass(65, 0.25, kaiser_beta=6.0); print('scipy.signal' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
