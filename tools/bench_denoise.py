"""Benchmark of the learned denoiser against RNNoise, the spectral denoiser and the raw take, in one run.

Real vocals from ``../shared/data`` (vocadito 1, the OpenAIR anechoic operatic voice, two SSVD
takes, the MUSDB vocal stem, a GTSinger vibrato and a breathy take; none of them used in training) with HELD-OUT real noises (doing the dishes, rain, a sauna, hens;
never used in training) at 10 and 20 dB SNR. Per method it prints the SI-SDR and its improvement
over the noisy take, the FIR-SDR (bss_eval's SDR allowing a 512-tap filter of the clean voice),
the pitch accuracy of the cleaned take (raw pitch accuracy within 50 cents and voicing recall
against the same tracker on the clean voice: our DSP tracker and, when installed, SwiftF0), and
the real-time factor on one core (``--one-core``, the default, pins the process to CPU 0 like
``taskset -c 0``)::

    .venv-train/bin/python tools/bench_denoise.py            # needs pyrnnoise (and swift-f0) for the peers
    .venv-train/bin/python tools/bench_denoise.py --quick    # two voices, two noises

Methods: ``raw`` (the noisy take), ``spectral`` (:class:`melisma.render.clean.SpectralDenoiser` with the
noise profile :func:`melisma.analysis.cleanup.analyze_cleanup` finds, as the clean-up runs it),
``rnnoise`` (pyrnnoise's RNNoise, aligned by its measured lag), ``learned`` (this model),
``spectral+learned`` (the clean-up's 'hybrid': the spectral denoiser, then the model), ``auto`` (the
clean-up's 'auto': the hybrid below ``AUTO_HYBRID_BELOW_SNR_DB`` of measured SNR, else the spectral
denoiser) and, with ``--cleanup``, ``cleanup:*`` (the whole clean-up chain,
:func:`melisma.render.clean.clean_take`, per denoiser). ``--oracle`` adds the ceilings of
``tools/denoise_oracle.py`` (ideal 32/64-band gains, the ideal per-bin mask, least-squares band gains
with and without the comb, ideal band gains refined per bin), ``--refine-too MODE`` the model with another per-bin refinement, ``--candidate FILE`` another
model file, ``--rnnoise-levels DB`` RNNoise fed at another level.

Fairness checks printed with every run: each output's lag against the clean voice by
cross-correlation (0 when compared aligned), and the SI-SDR gain in the 50 Hz-20 kHz band only
(``si_sdr_band_gain``: RNNoise high-passes DC and has no band above 20 kHz); per-vocal gains and the
median over cases, so one vocal cannot hide in the mean.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from melisma.analysis.cleanup import analyze_cleanup  # noqa: E402
from melisma.analysis.pitch import track_pitch  # noqa: E402
from melisma.audio_io import load_audio, resample  # noqa: E402
from melisma.render.clean import AUTO_HYBRID_BELOW_SNR_DB, SpectralDenoiser, clean_take  # noqa: E402
from melisma.render.learned_denoise import LearnedDenoiser  # noqa: E402

from tools.bench_bleed_removal import fir_sdr, si_sdr  # noqa: E402

DATA = Path(os.environ.get("MELISMA_DATA", REPO.parent / "shared" / "data"))
SR = 48000
VOICES = [
    "vocadito/Audio/vocadito_1.wav", "openair_anechoic_singing/singing_operatic_anechoic.wav",
    "ssvd_v2_subset/test/100135.flac", "ssvd_v2_subset/test/100620.flac",
    "stems_easton_ellises_falcon69/vocals.wav", "gtsinger_demo/EN-Alto-2-Vibrato-Vibrato.flac", "gtsinger_demo/zh06_Breathy.flac",
]
NOISES = [
    "noise/speech_commands_bg/doing_the_dishes.wav", "noise/smstools/rain.wav",
    "noise/sonicpi_cc0/ambi_sauna.flac", "noise/audiomentations_demo/hens.ogg",
]


def rnnoise(x: np.ndarray) -> np.ndarray | None:
    """RNNoise (pyrnnoise's library) at 48 kHz, aligned with the input by its measured lag; None if not installed."""
    try:
        import ctypes

        from pyrnnoise import rnnoise as rn
    except Exception:
        return None
    state = rn.create()
    n = rn.FRAME_SIZE
    pad = np.concatenate([x, np.zeros(2 * n, np.float32)]) * 32768.0
    out = np.zeros_like(pad)
    fin = np.zeros(n, np.float32)
    fout = np.zeros(n, np.float32)
    p_in, p_out = fin.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), fout.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    for a in range(0, pad.size - n + 1, n):
        fin[:] = pad[a : a + n]
        rn.lib.rnnoise_process_frame(state, p_out, p_in)
        out[a : a + n] = fout
    rn.destroy(state)
    out /= 32768.0
    lag = _lag(out, x)
    return out[lag : lag + x.size].astype(np.float32)


def _lag(y: np.ndarray, x: np.ndarray, max_lag: int = 2000) -> int:
    from scipy import signal

    n = min(x.size, 10 * SR)
    xs, ys = x[:n].astype(np.float64), y[: n + max_lag].astype(np.float64)
    ys = np.pad(ys, (0, n + max_lag - ys.size))
    return int(np.argmax(signal.correlate(ys, xs, mode="valid", method="fft")))


BAND_HZ = (50.0, 20000.0)


def in_band(x: np.ndarray) -> np.ndarray:
    """``x`` band-limited to BAND_HZ (zero phase): what every method is meant to clean (RNNoise: DC high-pass, nothing over 20 kHz)."""
    from scipy import signal

    sos = signal.butter(4, BAND_HZ, "bandpass", fs=SR, output="sos")
    return signal.sosfiltfilt(sos, np.asarray(x, np.float64))


def orc_lag(y: np.ndarray, v: np.ndarray) -> int:
    """The output's lag against the clean voice (samples; cross-correlation): 0 when the method is compared aligned."""
    from tools.denoise_oracle import output_lag

    return output_lag(y, v, SR)


class Pitch:
    """Raw pitch accuracy (50 cents) and voicing recall of a take's f0 against the clean voice's, per tracker."""

    def __init__(self) -> None:
        self.trackers = {"dsp": self._dsp}
        try:
            import swift_f0

            self._swift = swift_f0.SwiftF0(threads=1)
            self.trackers["swiftf0"] = self._sw
        except Exception:
            pass

    @staticmethod
    def _dsp(y16: np.ndarray) -> np.ndarray:
        return track_pitch(y16, sr=16000).hz[::2]  # 5 ms -> 10 ms frames

    def _sw(self, y16: np.ndarray) -> np.ndarray:
        r = self._swift.detect(y16, 16000)
        return np.where(r.confidence >= 0.5, r.pitch_hz, 0.0)[: y16.size // 160]

    def tracks(self, y: np.ndarray) -> dict[str, np.ndarray]:
        y16 = resample(y, orig_sr=SR, target_sr=16000).astype(np.float32)
        return {k: np.asarray(f(y16), np.float64) for k, f in self.trackers.items()}

    @staticmethod
    def score(ref: np.ndarray, est: np.ndarray) -> tuple[float, float]:
        n = min(ref.size, est.size)
        ref, est = ref[:n], est[:n]
        voiced = ref > 0
        hit = voiced & (est > 0)
        cents = np.abs(1200 * np.log2(np.maximum(est[hit], 1e-6) / ref[hit]))
        rpa = float(np.sum(cents <= 50) / max(voiced.sum(), 1))
        return rpa, float(hit.sum() / max(voiced.sum(), 1))


CASE: dict[str, np.ndarray] = {}


def methods(args) -> dict:
    learned = {f"learned{'' if r == args.reduction else f'@{r:g}dB'}": LearnedDenoiser(reduction_db=r).load()
               for r in sorted({args.reduction, *args.also_reduction})}

    def spectral(x):
        noise = analyze_cleanup(x, sr=SR)["noise"]
        return SpectralDenoiser(reduction_db=12.0, noise=noise).denoise(x, SR)

    out = {"raw": lambda x: x.copy(), "spectral": spectral, "rnnoise": rnnoise}
    for db in args.rnnoise_levels:  # RNNoise's features are log energies: its result depends on the input level
        out[f"rnnoise@{db:+g}dB"] = lambda x, a=10 ** (db / 20): (lambda y: None if y is None else y / a)(rnnoise(x * a))
    out |= {k: (lambda x, s=s: s.denoise(x, SR)) for k, s in learned.items()}
    out["spectral+learned"] = lambda x: learned["learned"].denoise(spectral(x), SR)

    def auto(x):  # the clean-up's denoiser='auto': the hybrid below AUTO_HYBRID_BELOW_SNR_DB of measured SNR
        snr = analyze_cleanup(x, sr=SR)["noise"]["snr_db"]
        return out["spectral+learned"](x) if snr < AUTO_HYBRID_BELOW_SNR_DB else spectral(x)

    out["auto"] = auto
    for mode in args.refine_too:  # the model with other per-bin refinements ("none": its band gains as they are)
        other = LearnedDenoiser(reduction_db=args.reduction, refine=mode).load()
        out[f"learned({mode})"] = lambda x, o=other: o.denoise(x, SR)
        out[f"spectral+learned({mode})"] = lambda x, o=other: o.denoise(spectral(x), SR)
    for path in args.candidate:  # other model files (a training run's output), as 'learned' and in the hybrid
        cand = LearnedDenoiser(reduction_db=args.reduction, model_path=path, refine=args.refine).load()
        out[f"cand:{path.stem}"] = lambda x, c=cand: c.denoise(x, SR)
        out[f"spectral+cand:{path.stem}"] = lambda x, c=cand: c.denoise(spectral(x), SR)
    if args.float_model is not None:  # the float TFLite export, to measure what int8 costs
        flt = LearnedDenoiser(reduction_db=args.reduction, model_path=args.float_model).load()
        out["learned(float)"] = lambda x: flt.denoise(x, SR)
    if args.oracle:  # the ceilings: they read the clean voice of the case (CASE["clean"])
        from tools import denoise_oracle as orc

        out["oracle:band32"] = lambda x: orc.oracle_band(x, CASE["clean"], 32)
        out["oracle:band64"] = lambda x: orc.oracle_band(x, CASE["clean"], 64)
        out["oracle:bin"] = lambda x: orc.oracle_bin(x, CASE["clean"])
        out["oracle:ls32"] = lambda x: orc.oracle_ls_comb(x, CASE["clean"], comb=False)
        out["oracle:ls32+comb"] = lambda x: orc.oracle_ls_comb(x, CASE["clean"])
        out["oracle:band32+wiener"] = lambda x: orc.oracle_band_wiener(x, CASE["clean"], mode="wiener")
        out["oracle:band32+shaped"] = lambda x: orc.oracle_band_wiener(x, CASE["clean"], mode="shaped")
    if args.cleanup:
        for d in ("spectral", "learned", "hybrid", "auto"):
            out[f"cleanup:{d}"] = lambda x, d=d: clean_take(x, sr=SR, analysis=analyze_cleanup(x, sr=SR), denoiser=d)[0]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--snr", type=float, nargs="+", default=[10.0, 20.0])
    ap.add_argument("--max-s", type=float, default=20.0, help="seconds of each vocal")
    ap.add_argument("--reduction", type=float, default=30.0, help="the learned denoiser's gain floor (dB)")
    ap.add_argument("--also-reduction", type=float, nargs="*", default=[], help="more gain floors to compare")
    ap.add_argument("--float-model", type=Path, default=None, help="also run the float TFLite export of the model")
    ap.add_argument("--cleanup", action="store_true", help="also run the whole clean-up chain with each denoiser")
    ap.add_argument("--quick", action="store_true", help="two vocals, two noises")
    ap.add_argument("--only", nargs="*", default=None, help="run only these methods (and raw)")
    ap.add_argument("--refine-too", nargs="*", default=[], help="also the model with these refinements (none, shaped, ...)")
    ap.add_argument("--rnnoise-levels", type=float, nargs="*", default=[],
                    help="also RNNoise on the take at these gains (dB; the output scaled back): its level dependence")
    ap.add_argument("--candidate", type=Path, nargs="*", default=[], help="also these model files (as learned and hybrid)")
    ap.add_argument("--refine", default="none", help="the candidates' per-bin refinement (LearnedDenoiser refine=)")
    ap.add_argument("--no-pitch", action="store_true", help="skip the pitch trackers (a faster screening run)")
    ap.add_argument("--oracle", action="store_true", help="also the oracle ceilings (tools/denoise_oracle.py)")
    ap.add_argument("--all-cores", action="store_true", help="do not pin to CPU 0")
    ap.add_argument("--json", type=Path, default=None, help="write the per-case figures here")
    args = ap.parse_args(argv)
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    voices = VOICES[:2] if args.quick else VOICES
    noises = NOISES[:2] if args.quick else NOISES
    meth = methods(args)
    if args.only:
        meth = {k: f for k, f in meth.items() if k == "raw" or k in args.only}
    pitch = Pitch()
    rng = np.random.default_rng(0)
    rows = []
    timing: dict[str, list[float]] = {k: [0.0, 0.0] for k in meth}
    for vrel in voices:
        v, _ = load_audio(DATA / vrel, sr=SR, mono=True)
        v = np.asarray(v, np.float32)[: int(args.max_s * SR)]
        v = v / (np.abs(v).max() + 1e-9) * 0.5
        ref_tracks = {} if args.no_pitch else pitch.tracks(v)
        for nrel in noises:
            nz, _ = load_audio(DATA / nrel, sr=SR, mono=True)
            nz = np.asarray(nz, np.float64) - np.mean(nz)
            start = int(rng.integers(0, nz.size))
            nz = np.tile(nz, int(np.ceil((v.size + start) / nz.size)) + 1)[start : start + v.size]
            for snr in args.snr:
                g = np.sqrt(np.mean(v.astype(np.float64) ** 2) / np.mean(nz**2)) * 10 ** (-snr / 20)
                x = (v + g * nz).astype(np.float32)
                base = si_sdr(x, v)
                v_band = in_band(v)
                base_band = si_sdr(in_band(x), v_band)
                CASE["clean"] = v
                for name, f in meth.items():
                    t0 = time.perf_counter()
                    y = f(x)
                    dt = time.perf_counter() - t0
                    if y is None:
                        continue
                    timing[name][0] += dt
                    timing[name][1] += x.size / SR
                    row = {"voice": Path(vrel).stem, "noise": Path(nrel).stem, "snr_db": snr, "method": name,
                           "si_sdr": si_sdr(y, v), "si_sdr_gain": si_sdr(y, v) - base, "fir_sdr": fir_sdr(y, v),
                           "si_sdr_band_gain": si_sdr(in_band(y), v_band) - base_band,
                           "lag": orc_lag(y, v)}
                    for tname, est in ({} if args.no_pitch else pitch.tracks(y)).items():
                        row[f"rpa_{tname}"], row[f"recall_{tname}"] = Pitch.score(ref_tracks[tname], est)
                    rows.append(row)
                print(f"{Path(vrel).stem:>14} {Path(nrel).stem:>17} {snr:4.0f} dB: "
                      + " ".join(f"{r['method']}={r['si_sdr']:.1f}" for r in rows[-len(meth):]), flush=True)
    report(rows, timing, meth)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "rtf": {k: t[0] / max(t[1], 1e-9) for k, t in timing.items()}},
                                        indent=1) + "\n")
    return 0


def report(rows: list[dict], timing: dict, meth: dict) -> None:
    keys = ["si_sdr", "si_sdr_gain", "si_sdr_band_gain", "fir_sdr", *sorted({k for r in rows for k in r if k.startswith(("rpa_", "recall_"))})]
    print("\nmean over cases (SI-SDR, its gain over the noisy take and FIR-SDR in dB; RPA/recall vs the clean voice's track)")
    print("| SNR | method | " + " | ".join(keys) + " | RTF (1 core) |")
    print("|---|---|" + "---|" * (len(keys) + 1))
    for snr in sorted({r["snr_db"] for r in rows}):
        for name in meth:
            sel = [r for r in rows if r["snr_db"] == snr and r["method"] == name]
            if not sel:
                continue
            t = timing[name]
            print(f"| {snr:g} dB | {name} | " + " | ".join(f"{np.mean([r[k] for r in sel]):.3f}" if k.startswith(("rpa", "recall"))
                                                      else f"{np.mean([r[k] for r in sel]):.2f}" for k in keys)
                  + f" | {t[0] / max(t[1], 1e-9):.4f} |")
    print("\noutput lag against the clean voice (samples, cross-correlation; 0 = compared aligned): median [min, max]")
    for name in meth:
        lags = [r["lag"] for r in rows if r["method"] == name]
        if lags:
            print(f"  {name}: {int(np.median(lags))} [{min(lags)}, {max(lags)}]")
    print("\nSI-SDR gain (dB) per held-out noise at each SNR")
    noises = sorted({r["noise"] for r in rows})
    print("| SNR | method | " + " | ".join(noises) + " |")
    print("|---|---|" + "---|" * len(noises))
    for snr in sorted({r["snr_db"] for r in rows}):
        for name in meth:
            cells = [np.mean([r["si_sdr_gain"] for r in rows if r["snr_db"] == snr and r["method"] == name and r["noise"] == nz] or [np.nan])
                     for nz in noises]
            print(f"| {snr:g} dB | {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    print("\nSI-SDR gain (dB) per vocal at each SNR, and the median over cases")
    voices = sorted({r["voice"] for r in rows})
    print("| SNR | method | " + " | ".join(voices) + " | median |")
    print("|---|---|" + "---|" * (len(voices) + 1))
    for snr in sorted({r["snr_db"] for r in rows}):
        for name in meth:
            sel = [r for r in rows if r["snr_db"] == snr and r["method"] == name]
            if not sel:
                continue
            cells = [np.mean([r["si_sdr_gain"] for r in sel if r["voice"] == vo] or [np.nan]) for vo in voices]
            print(f"| {snr:g} dB | {name} | " + " | ".join(f"{c:.2f}" for c in cells)
                  + f" | {np.median([r['si_sdr_gain'] for r in sel]):.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
