"""Benchmark: backing bleed removed from real vocals degraded like phone takes.

Real stems (``shared/data/stems_easton_ellises_falcon69``: the vocal, and drums + bass + other as
the backing) are read in place, never copied. Each case leaks the backing into the vocal through a
phone speaker (``tools.corpus.degrade.phone_speaker``) at a level relative to the voice, with the
direct path or through a measured room only (``shared/data/rirs``, direct sound removed), then an
AAC round trip. Printed per case, for the raw take, a plain baseline (per-bin magnitude
spectral subtraction of the reference, gains fitted in the pauses), WebRTC's AEC3 when the PyPI
package ``pywebrtc-audio`` is installed (not a project dependency: ``pip install pywebrtc-audio``
to compare) and :func:`melisma.render.clean.remove_bleed`:

* bleed removed in the singer's pauses and under the voice (dB; the echo-return-loss enhancement,
  the voice's own share taken out with the same suppressor gains);
* FIR-SDR (512-tap least-squares projection on the clean vocal) and SI-SDR of the result against
  the clean vocal (after the same AAC round trip, so the codec's own noise is not counted as bleed).

Run: ``.venv/bin/python tools/bench_bleed_removal.py [--data ../shared/data]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import linalg, signal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "firmware"))

from melisma.audio_io import load_audio  # noqa: E402
from melisma.render.clean import BleedCanceller, fit_bleed  # noqa: E402

from tools.corpus import degrade  # noqa: E402

SR = 48000


def db(x: np.ndarray) -> float:
    """Mean power in dB."""
    return float(10.0 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20))


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    """Scale-invariant SDR (dB)."""
    ref, est = ref.astype(np.float64), est.astype(np.float64)
    target = ref * (np.dot(est, ref) / (np.dot(ref, ref) + 1e-20))
    return 10.0 * np.log10(np.sum(target**2) / (np.sum((est - target) ** 2) + 1e-20))


def fir_sdr(est: np.ndarray, ref: np.ndarray, taps: int = 512) -> float:
    """SDR after the best FIR filter (``taps``) of the reference (bss_eval's distortion-allowed SDR)."""
    ref, est = ref.astype(np.float64), est.astype(np.float64)
    n = ref.size + taps
    f_ref, f_est = np.fft.rfft(ref, 2 * n), np.fft.rfft(est, 2 * n)
    acf = np.fft.irfft(np.abs(f_ref) ** 2)[:taps]
    xcf = np.fft.irfft(f_est * np.conj(f_ref))[:taps]
    h = linalg.solve_toeplitz(acf + 1e-9 * acf[0] * (np.arange(taps) == 0), xcf)
    target = signal.lfilter(h, [1.0], ref)
    return 10.0 * np.log10(np.sum(target**2) / (np.sum((est - target) ** 2) + 1e-20))


def spectral_subtraction(take: np.ndarray, reference: np.ndarray, pause: np.ndarray) -> np.ndarray:
    """Plain baseline: |Y| - g_k |X| per STFT bin (g_k the median magnitude ratio in the pauses), floor -20 dB."""
    n_fft, hop = 1024, 256
    _, _, y = signal.stft(take, SR, nperseg=n_fft, noverlap=n_fft - hop)
    _, _, x = signal.stft(reference, SR, nperseg=n_fft, noverlap=n_fft - hop)
    frames = np.arange(y.shape[1]) * hop
    quiet = pause[np.clip(frames, 0, pause.size - 1)]
    ratio = np.abs(y[:, quiet]) / (np.abs(x[:, quiet]) + 1e-9)
    g = np.median(ratio, axis=1, keepdims=True) if quiet.any() else np.zeros((y.shape[0], 1))
    mag = np.maximum(np.abs(y) - g * np.abs(x), 0.1 * np.abs(y))
    _, out = signal.istft(mag * np.exp(1j * np.angle(y)), SR, nperseg=n_fft, noverlap=n_fft - hop)
    return out[: take.size].astype(np.float32)


def webrtc_aec3(take: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """Peer: WebRTC's AEC3 (PyPI ``pywebrtc-audio``, if installed), 10 ms frames; its output delay removed."""
    try:
        from pywebrtc_audio import EchoCanceller
    except ImportError:
        return None
    ec = EchoCanceller(sample_rate=SR, num_channels=1, stream_delay_ms=0)
    n = SR // 100
    padded = np.concatenate([take, np.zeros(SR // 10, np.float32)])
    ref = np.concatenate([reference, np.zeros(SR // 10 + padded.size, np.float32)])[: padded.size]
    out = np.zeros_like(padded)
    for i in range(0, padded.size - n + 1, n):
        out[i : i + n] = ec.process(padded[i : i + n].copy(), ref[i : i + n].copy())
    c = signal.correlate(out[: take.size], take, "full", "fft")[take.size - 1 : take.size - 1 + SR // 20]
    lag = int(np.argmax(np.abs(c)))  # the canceller's own delay (a few ms)
    return out[lag : lag + take.size]


def room_only(rir: np.ndarray) -> np.ndarray:
    """The RIR without its direct sound and first 2.5 ms (bleed heard only off the walls)."""
    cut = int(0.0025 * SR)
    out = rir.copy()
    out[:cut] = 0.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    stems = Path(args.data) / "stems_easton_ellises_falcon69"
    vocal = load_audio(stems / "vocals.wav", sr=SR)[0].mean(axis=0).astype(np.float32)
    backing = sum(load_audio(stems / f"{s}.wav", sr=SR)[0] for s in ("drums", "bass", "other")).astype(np.float32)
    n = min(vocal.size, backing.shape[-1])
    vocal, backing = vocal[:n], backing[:, :n]
    rirs = {
        "livingroom": degrade.load_rir(Path(args.data) / "rirs/mit_ir_survey/h010_Livingroom_31txts.wav", SR),
        "studio": degrade.load_rir(Path(args.data) / "rirs/openair_toobamp/Genesis 6 Studio Live Room.wav", SR),
    }
    env = np.convolve(vocal.astype(np.float64) ** 2, np.ones(2400) / 2400, "same")
    pause, sung = env < 1e-4 * env.max(), env > 1e-2 * env.max()
    print(f"vocal {n / SR:.1f} s; pauses {100 * pause.mean():.0f} %, sung {100 * sung.mean():.0f} % of the take")
    cases = [("direct", None, -10), ("direct", None, -25), ("direct+room", "livingroom", -15),
             ("room only", "livingroom", -15), ("room only", "studio", -20), ("direct+room", "studio", -25)]
    header = f"{'case':30s} {'method':12s} {'pause dB':>9s} {'voice dB':>9s} {'FIR-SDR':>8s} {'SI-SDR':>7s} {'time s':>7s}"
    print(header)
    for path, room, level in cases:
        spk = degrade.phone_speaker(backing, SR)
        if room is not None:
            h = rirs[room] if path == "direct+room" else room_only(rirs[room])
            spk = signal.oaconvolve(spk, h)[:n].astype(np.float32)
        bleed = spk * (np.sqrt(np.mean(vocal**2)) * 10 ** (level / 20) / (np.sqrt(np.mean(spk**2)) + 1e-20))
        take = degrade.aac_round_trip((vocal + bleed).astype(np.float32), SR, bit_rate=96000)
        voice = degrade.aac_round_trip(vocal, SR, bit_rate=96000)  # the voice as the codec gives it back
        name = f"{path} {room or ''} {level} dB, AAC"
        # what the codec itself adds under the voice (coding voice + bleed vs the voice alone), relative
        # to the bleed: the floor of the "voice dB" figure
        floor = db((take - voice - bleed)[sung]) - db(bleed[sung])
        t = time.perf_counter()
        model = fit_bleed(take, backing, sr=SR)
        out, voice_out = BleedCanceller(reference=backing, model=model).cancel(take, SR, companions=(voice,))
        took = time.perf_counter() - t
        base = spectral_subtraction(take, backing.mean(axis=0), pause)
        rows = [("raw", take, voice, 0.0), ("spec-sub", base, None, 0.0)]
        t = time.perf_counter()
        aec3 = webrtc_aec3(take, backing.mean(axis=0).astype(np.float32))
        if aec3 is not None:
            rows.append(("webrtc-aec3", aec3, None, time.perf_counter() - t))
        for method, y, v, secs in [*rows, ("melisma", out, voice_out, took)]:
            p = db(take[pause]) - db(y[pause])
            under = db((take - voice)[sung]) - db((y - v)[sung]) if v is not None else float("nan")
            print(f"{name:30s} {method:12s} {p:9.1f} {under:9.1f} {fir_sdr(y, vocal):8.1f} {si_sdr(y, vocal):7.1f} {secs:7.2f}")
        print(f"{name:30s} (codec noise under the voice: {floor:+.1f} dB re the bleed)")


if __name__ == "__main__":
    main()
