"""Benchmark: repairing what a phone took from real vocals (clipped peaks, the top octave).

Real vocals from ``shared/data`` are read in place, never copied (list in :data:`VOCALS`).

``declip``: each vocal (48 kHz mono, peak 0.9) is driven into hard clipping so that 5 % and 10 %
of its samples sit at the rail (``tools.corpus.degrade.clip``). The clip level and the clipped
runs are found by :func:`melisma.analysis.cleanup.detect_clipping` (nothing is told), then
repaired, all in the same run, by

* ``raw``: nothing (the clipped take);
* ``spline``: a cubic spline through the unclipped samples (scipy ``CubicSpline``), the simple peer;
* ``hermite``: the earlier melisma declipper (:func:`melisma.render.clean.declip`);
* ``ar``: :class:`melisma.render.declip.ARDeclipper` (AR interpolation kept beyond the clip level).

Printed per case: SDR in the clipped samples (truth energy there over the error there), overall SDR
(whole take), the gain over the raw take, and the seconds per second of audio.

``air``: the same studio vocals degraded like a phone take (phone microphone with a low-pass at
7.5 kHz, then AAC at 64 kbit/s) go through the default vocal chain with and without the bandwidth
extension (:mod:`melisma.render.exciter`); printed (and plotted with ``--plot``) per vocal: the band
levels 2-5, 5-9, 9-16 kHz relative to 0.5-2 kHz for the studio vocal, the phone take, the chain
without and with the extension; the ``air`` slider's effect on 9-16 kHz; and the ``brighter``
check: sibilance energy at 5-9 kHz in the sibilant frames, brighter=+1 against 0, after the
de-esser.

``brighter``: the phone takes through the dry chain at brighter 0 / +0.5 / +1 (and the old static
+1 peak, in the same run): the esses' 5-9 kHz level against brighter 0 (the de-essed-only chain)
and the sung frames' 2.5-6 kHz lift.

``pipeline``: three vocals at 44.1 kHz with the backing's bleed (-14 dB through a phone speaker),
5 % clipped, written as a WAV and as an AAC .m4a (128 kbit/s), through the decoder and the whole
analysis: clipped runs found at the file's rate and at 48 kHz, runs the report says were repaired,
SDR in the clipped samples before and after.

``aac``: each vocal unclipped, clipped 1 / 5 / 10 %, and driven +6 / +12 / +18 dB into a brick-wall
limiter (-1 dBTP, 50 ms release, as a phone's AGC), then AAC at 128 kbit/s and decoded: the exact
rail test (:func:`~melisma.analysis.cleanup.detect_clipping`) and the soft-rail test
(:func:`melisma.render.declip.detect_soft_clipping`) per case, the overshoot it measured, the
share of samples it calls clipped, its seconds, and the SDR gain in the clipped samples of the AR
repair at the level it found (against the waveform before the rail).

Run: ``.venv/bin/python tools/bench_restore.py [--data ../shared/data] [--only declip|air|brighter|pipeline|aac] [--plot out.png]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "firmware"))

from melisma.analysis.cleanup import detect_clipping  # noqa: E402
from melisma.audio_io import load_audio  # noqa: E402
from melisma.render.clean import declip as hermite_declip  # noqa: E402
from melisma.render.declip import ARDeclipper  # noqa: E402

from tools.corpus import degrade  # noqa: E402

SR = 48000
#: Real vocals (path under the data folder, seconds to use).
VOCALS = [
    ("stems_easton_ellises_falcon69/vocals.wav", 6.0),
    ("openair_anechoic_singing/singing_operatic_anechoic.wav", 4.9),
    ("gtsinger_demo/EN-Alto-2-Vibrato-Control.flac", 8.0),
    ("gtsinger_demo/EN-Tenor-1-Vibrato-Control.flac", 8.0),
    ("gtsinger_demo/fr02_Control.flac", 8.0),
]


def load_vocal(data: Path, rel: str, seconds: float) -> np.ndarray:
    """A real vocal as 48 kHz mono float32, peak 0.9."""
    y, _ = load_audio(data / rel, sr=SR, mono=True)
    y = np.asarray(y, np.float32).reshape(-1)[: int(seconds * SR)]
    return (0.9 * y / max(1e-9, float(np.max(np.abs(y))))).astype(np.float32)


def sdr(est: np.ndarray, ref: np.ndarray) -> float:
    """10 log10(energy of ``ref`` / energy of ``est - ref``) in dB."""
    ref, est = ref.astype(np.float64), est.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / (np.sum((est - ref) ** 2) + 1e-20)))


def spline_declip(x: np.ndarray, threshold: float) -> np.ndarray:
    """The simple peer: a cubic spline through every unclipped sample, read at the clipped ones."""
    from scipy.interpolate import CubicSpline

    clipped = np.abs(x) >= threshold
    keep = np.flatnonzero(~clipped)
    y = x.astype(np.float64).copy()
    y[clipped] = CubicSpline(keep, y[keep])(np.flatnonzero(clipped))
    return y.astype(np.float32)


def bench_declip(data: Path, max_seconds: float = 1e9) -> list[dict]:
    """The declipping table: one row per vocal, clip fraction and method (the first ``max_seconds`` of each)."""
    rows = []
    for rel, seconds in VOCALS:
        truth = load_vocal(data, rel, min(seconds, max_seconds))
        for fraction in (0.05, 0.10):
            clipped, drive_db = degrade.clip(truth, fraction=fraction)
            ref = (truth * np.float32(10 ** (drive_db / 20))).astype(np.float32)  # the waveform before the rail
            found = detect_clipping(clipped, sr=SR)
            thr = float(found["threshold"])
            where = np.abs(clipped) >= thr
            methods = {"raw": lambda x: x, "spline": lambda x, t=thr: spline_declip(x, t),
                       "hermite": lambda x, t=thr: hermite_declip(x, threshold=t),
                       "ar": lambda x, t=thr: ARDeclipper(threshold=t).declip(x, SR)}
            base = None
            for name, fn in methods.items():
                t0 = time.perf_counter()
                y = fn(clipped)
                dt = time.perf_counter() - t0
                region = sdr(y[where], ref[where])
                base = region if base is None else base
                rows.append({"vocal": Path(rel).stem[:28], "clipped": fraction, "found_pct": 100 * found["fraction"],
                             "runs": found["regions"], "method": name, "sdr_clipped_db": region,
                             "gain_db": region - base, "sdr_overall_db": sdr(y, ref), "rtf": dt / (truth.size / SR),
                             "unclipped_same": bool(np.array_equal(y[~where], clipped[~where]))})
    return rows


def print_declip(rows: list[dict]) -> None:
    """Print the declipping table and the means per clip fraction and method."""
    print("\n== declipping (SDR in the clipped samples / overall, dB; gain over the raw take) ==")
    print(f"{'vocal':28s} {'clip':>5s} {'found%':>6s} {'runs':>5s} {'method':8s} {'SDRclip':>8s} {'gain':>6s} "
          f"{'SDRall':>7s} {'x RT':>7s} same")
    for r in rows:
        print(f"{r['vocal']:28s} {100 * r['clipped']:4.0f}% {r['found_pct']:6.2f} {r['runs']:5d} {r['method']:8s} "
              f"{r['sdr_clipped_db']:8.2f} {r['gain_db']:6.2f} {r['sdr_overall_db']:7.2f} {r['rtf']:7.4f} "
              f"{'yes' if r['unclipped_same'] else 'NO'}")
    print("\nmeans over the vocals:")
    print(f"{'clip':>5s} {'method':8s} {'SDRclip':>8s} {'gain':>6s} {'SDRall':>7s}")
    for fraction in sorted({r["clipped"] for r in rows}):
        for method in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["clipped"] == fraction and r["method"] == method]
            print(f"{100 * fraction:4.0f}% {method:8s} {np.mean([r['sdr_clipped_db'] for r in sel]):8.2f} "
                  f"{np.mean([r['gain_db'] for r in sel]):6.2f} {np.mean([r['sdr_overall_db'] for r in sel]):7.2f}")


BANDS = {"2-5k": (2000.0, 5000.0), "5-9k": (5000.0, 9000.0), "9-16k": (9000.0, 16000.0)}
REFERENCE_BAND = (500.0, 2000.0)


def band_levels(y: np.ndarray) -> dict[str, float]:
    """Long-term band levels (Welch, 4096) in dB relative to the 0.5-2 kHz band."""
    from scipy.signal import welch

    y = y.mean(axis=0) if y.ndim == 2 else y
    f, p = welch(y.astype(np.float64), fs=SR, nperseg=4096)

    def level(lo: float, hi: float) -> float:
        return float(10 * np.log10(np.sum(p[(f >= lo) & (f < hi)]) + 1e-30))

    ref = level(*REFERENCE_BAND)
    return {k: level(lo, hi) - ref for k, (lo, hi) in BANDS.items()}


def phone_take(y: np.ndarray) -> np.ndarray:
    """A studio vocal as a phone takes it: phone microphone (low-pass 7.5 kHz) and AAC at 64 kbit/s."""
    return degrade.aac_round_trip(degrade.band_limit(y, SR, low_hz=100.0, high_hz=7500.0), SR, bit_rate=64000)


def sibilant_frames(y: np.ndarray, block: int = 480) -> np.ndarray:
    """10 ms blocks where 5-9 kHz holds more energy than 0.2-3 kHz (an ess), as a boolean per block."""
    from scipy import signal

    hi = signal.sosfilt(signal.butter(4, [5000, 7400], "bandpass", fs=SR, output="sos"), y)
    lo = signal.sosfilt(signal.butter(2, [200, 3000], "bandpass", fs=SR, output="sos"), y)
    n = y.size // block
    p_hi = (hi[: n * block].reshape(n, block) ** 2).mean(axis=1)
    p_lo = (lo[: n * block].reshape(n, block) ** 2).mean(axis=1)
    return (p_hi > p_lo) & (p_hi > 1e-7)


def band_energy_db(y: np.ndarray, blocks: np.ndarray, lo: float, hi: float, block: int = 480) -> float:
    """Energy of ``y`` in ``lo``..``hi`` Hz summed over the chosen 10 ms blocks (dB)."""
    from scipy import signal

    y = y.mean(axis=0) if y.ndim == 2 else y
    z = signal.sosfilt(signal.butter(4, [lo, min(hi, 0.45 * SR)], "bandpass", fs=SR, output="sos"), y)
    n = blocks.size
    e = (z[: n * block].reshape(n, block) ** 2).sum(axis=1)
    return float(10 * np.log10(np.sum(e[blocks]) + 1e-30))


def bench_air(data: Path, plot: Path | None) -> list[dict]:
    """The air table: band levels of studio, phone and restored vocals; the air and brighter checks."""
    from melisma.analysis.voice import analyze_voice
    from melisma.render.chain import DeEsser, build_vocal_chain
    from melisma.render.exciter import BandwidthExtender
    from melisma.render.stages import Chain
    from melisma.semantic import resolve_settings

    def chain_of(take: np.ndarray, sliders: dict, *, extend: bool = True, deess: bool = True) -> np.ndarray:
        chain, _ = build_vocal_chain(resolve_settings("neutral", sliders), analyze_voice(take, sr=SR), sr=SR)
        keep = [s for s in chain.stages if (extend or not isinstance(s, BandwidthExtender))
                and (deess or not isinstance(s, DeEsser))]
        # the dry vocal chain without its space: reverb tails would blur the band levels
        keep = [s for s in keep if type(s).__name__ != "Space"]
        return Chain(keep)(take, SR)

    rows = []
    for rel, seconds in VOCALS:
        studio = 0.5 * load_vocal(data, rel, seconds)
        phone = phone_take(studio)
        t0 = time.perf_counter()
        restored = BandwidthExtender()(phone, SR)
        rtf = (time.perf_counter() - t0) / (phone.size / SR)
        row = {"vocal": Path(rel).stem[:28], "rtf": rtf, "levels": {
            "studio": band_levels(studio), "phone": band_levels(phone), "phone+ext": band_levels(restored),
            "studio+ext": band_levels(BandwidthExtender()(studio, SR))}}
        for ext in (False, True):
            base = chain_of(phone, {}, extend=ext)
            air = chain_of(phone, {"air": 1.0}, extend=ext)
            row[f"air_effect_9_16_db_{'ext' if ext else 'noext'}"] = band_levels(air)["9-16k"] - band_levels(base)["9-16k"]
        # brighter (warmth -1) after the de-esser, on the phone take's esses
        ess = sibilant_frames(phone)
        row["ess_blocks"] = int(ess.sum())
        if ess.any():
            plain = chain_of(phone, {})
            bright = chain_of(phone, {"warmth": -1.0})
            no_deess = chain_of(phone, {}, deess=False)
            row["deesser_cut_db"] = band_energy_db(no_deess, ess, 5000, 9000) - band_energy_db(plain, ess, 5000, 9000)
            row["brighter_lift_db"] = band_energy_db(bright, ess, 5000, 9000) - band_energy_db(plain, ess, 5000, 9000)
            row["ext_on_ess_9_16_db"] = (band_energy_db(restored, ess, 9000, 16000)
                                         - band_energy_db(phone, ess, 9000, 16000))
        rows.append(row)
    if plot is not None:
        plot_air(rows, plot)
    return rows


def voiced_frames(y: np.ndarray, block: int = 480) -> np.ndarray:
    """10 ms blocks of sung sound: 0.2-3 kHz at least 15 dB over 5-9 kHz and above -50 dBFS."""
    from scipy import signal

    hi = signal.sosfilt(signal.butter(4, [5000, 9000], "bandpass", fs=SR, output="sos"), y)
    lo = signal.sosfilt(signal.butter(2, [200, 3000], "bandpass", fs=SR, output="sos"), y)
    n = y.size // block
    p_hi = (hi[: n * block].reshape(n, block) ** 2).mean(axis=1)
    p_lo = (lo[: n * block].reshape(n, block) ** 2).mean(axis=1)
    return (p_lo > 10 ** 1.5 * p_hi) & (p_lo > 1e-5)


def bench_brighter(data: Path) -> list[dict]:
    """``brighter`` 0 / +0.5 / +1 on the phone takes: esses' 5-9 kHz against the de-essed-only chain
    (brighter 0), and the sung frames' 2.5-6 kHz lift; the old static peak (``keyed_peak`` as a plain
    ``peak``) in the same run.
    """
    from melisma.analysis.voice import analyze_voice
    from melisma.render.chain import DeEsser, build_vocal_chain
    from melisma.render.stages import Chain
    from melisma.semantic import resolve_settings

    def chain_of(take: np.ndarray, voice: dict, sliders: dict, *, static: bool = False, deess: bool = True) -> np.ndarray:
        settings = resolve_settings("neutral", sliders)
        if static:
            for band in settings.eq_bands:
                band.type = "peak" if band.type == "keyed_peak" else band.type
        chain, _ = build_vocal_chain(settings, voice, sr=SR)
        keep = [s for s in chain.stages if type(s).__name__ != "Space" and (deess or not isinstance(s, DeEsser))]
        return Chain(keep)(take, SR)

    rows = []
    for rel, seconds in VOCALS:
        phone = phone_take(0.5 * load_vocal(data, rel, seconds))
        voice = analyze_voice(phone, sr=SR)
        ess, sung = sibilant_frames(phone), voiced_frames(phone)
        plain = chain_of(phone, voice, {})
        row: dict = {"vocal": Path(rel).stem[:28], "ess_blocks": int(ess.sum()), "sung_blocks": int(sung.sum())}
        row["deesser_cut_db"] = (band_energy_db(chain_of(phone, voice, {}, deess=False), ess, 5000, 9000)
                                 - band_energy_db(plain, ess, 5000, 9000)) if ess.any() else float("nan")
        for name, amount, static in (("b0.5", 0.5, False), ("b1", 1.0, False), ("static1", 1.0, True)):
            y = chain_of(phone, voice, {"warmth": -amount}, static=static)
            row[f"ess_{name}"] = (band_energy_db(y, ess, 5000, 9000) - band_energy_db(plain, ess, 5000, 9000)
                                  if ess.any() else float("nan"))
            row[f"sung_{name}"] = band_energy_db(y, sung, 2500, 6000) - band_energy_db(plain, sung, 2500, 6000)
        rows.append(row)
    return rows


def print_brighter(rows: list[dict]) -> None:
    """Print the brighter / de-esser table."""
    print("\n== brighter (warmth -) on the phone takes' esses and sung frames (dry chain, style neutral, dB "
          "against brighter 0 = de-essed only) ==")
    print(f"{'vocal':28s} {'ess':>4s} {'sung':>5s} {'de-ess cut':>10s} | esses 5-9k: {'+0.5':>5s} {'+1':>5s} "
          f"{'old +1':>6s} | sung 2.5-6k: {'+0.5':>5s} {'+1':>5s} {'old +1':>6s}")
    for r in rows:
        print(f"{r['vocal']:28s} {r['ess_blocks']:4d} {r['sung_blocks']:5d} {r['deesser_cut_db']:10.1f} | "
              f"{'':12s}{r['ess_b0.5']:+5.1f} {r['ess_b1']:+5.1f} {r['ess_static1']:+6.1f} | "
              f"{'':13s}{r['sung_b0.5']:+5.1f} {r['sung_b1']:+5.1f} {r['sung_static1']:+6.1f}")


def bench_pipeline(data: Path, fraction: float = 0.05, work: Path | None = None) -> list[dict]:
    """Clipped 44.1 kHz takes with bleed, as a WAV and as an AAC .m4a, through the decoder and the
    whole analysis: runs found at the file's rate (the new path) and at 48 kHz (where the old
    clean-up looked), runs the report says were repaired, SDR in the clipped samples.
    """
    import tempfile

    from melisma.audio_io import decode, probe, resample
    from melisma.pipeline import analyze
    from melisma.pipeline.inputs import declip_at_file_rate

    sr = 44100
    folder = Path(work or tempfile.mkdtemp(prefix="bench-declip-"))
    loop, _ = load_audio(data / "backing_cc0_sonicpi" / "loop_compus.flac", sr=sr, mono=False)
    rows = []
    for rel, seconds in VOCALS[:1] + VOCALS[2:4]:
        vocal = resample(0.5 * load_vocal(data, rel, min(seconds, 6.0)), orig_sr=SR, target_sr=sr)
        n = vocal.size
        backing = np.tile(np.atleast_2d(loop), (1, n // np.atleast_2d(loop).shape[1] + 1))[:, :n]
        backing = np.ascontiguousarray(np.broadcast_to(backing, (2, n)) if backing.shape[0] == 1 else backing[:2])
        backing = (0.3 * backing / np.max(np.abs(backing))).astype(np.float32)
        take = vocal + degrade.speaker_bleed(backing, sr, bleed_db=-14.0, reference=vocal)
        clipped, drive_db = degrade.clip(take, fraction=fraction)
        ref48 = resample((take * np.float32(10 ** (drive_db / 20))).astype(np.float32), orig_sr=sr, target_sr=SR)
        back_path = folder / f"{Path(rel).stem}-backing.wav"
        degrade.write_aligned(back_path, backing, sr)
        for fmt, kbps in (("wav", None), ("m4a", 128)):
            path = folder / f"{Path(rel).stem}-take.{fmt}"
            degrade.write_aligned(path, clipped, sr, bit_rate=kbps * 1000 if kbps else None)
            plain = decode(path, sr=SR, channels=1)
            repaired, found = declip_at_file_rate(path, probe(path))
            assert plain.audio is not None and repaired.audio is not None
            m = min(ref48.size, plain.n_samples)
            where = np.abs(ref48[:m]) > 1.0
            raw_sdr = sdr(plain.audio[0, :m][where], ref48[:m][where])
            fixed_sdr = sdr(repaired.audio[0, :m][where], ref48[:m][where])
            plan = analyze(path, back_path, pitch=False, accept_alignment_guess=True)
            actions = plan.record["cleanup"]["actions"]
            declip = next((a for a in actions if a["action"] == "declip"), None)
            del plan  # its work folder goes with it
            rows.append({"vocal": Path(rel).stem[:28], "format": fmt, "runs_file_rate": found["clipping"]["regions"],
                         "runs_48k": detect_clipping(plain.audio[0], sr=SR)["regions"],
                         "reported": declip["regions"] if declip else 0, "sdr_raw_db": raw_sdr,
                         "gain_db": fixed_sdr - raw_sdr})
    return rows


def print_pipeline(rows: list[dict]) -> None:
    """Print the declipping-through-the-pipeline table."""
    print("\n== clipped 44.1 kHz takes with bleed (-14 dB) through the decoder and the analysis (5 % clipped) ==")
    print(f"{'vocal':28s} {'fmt':4s} {'runs@file sr':>12s} {'runs@48k (old)':>14s} {'reported':>8s} "
          f"{'SDRclip raw':>11s} {'gain':>6s}")
    for r in rows:
        print(f"{r['vocal']:28s} {r['format']:4s} {r['runs_file_rate']:12d} {r['runs_48k']:14d} {r['reported']:8d} "
              f"{r['sdr_raw_db']:11.2f} {r['gain_db']:6.2f}")


def print_air(rows: list[dict]) -> None:
    """Print the band levels and the air / brighter checks."""
    print("\n== top octave: band levels against 0.5-2 kHz (dB); phone = low-pass 7.5 kHz + AAC 64k ==")
    print(f"{'vocal':28s} {'version':11s} " + " ".join(f"{b:>7s}" for b in BANDS) + "  9-16k vs studio")
    for r in rows:
        for name, lv in r["levels"].items():
            gap = lv["9-16k"] - r["levels"]["studio"]["9-16k"]
            print(f"{r['vocal']:28s} {name:11s} " + " ".join(f"{lv[b]:7.1f}" for b in BANDS) + f"  {gap:+7.1f}")
    print("\nmeans over the vocals (dB against 0.5-2 kHz; gap to studio at 9-16 kHz):")
    for name in rows[0]["levels"]:
        mean = {b: np.mean([r["levels"][name][b] for r in rows]) for b in BANDS}
        gap = np.mean([r["levels"][name]["9-16k"] - r["levels"]["studio"]["9-16k"] for r in rows])
        print(f"  {name:11s} " + " ".join(f"{b} {mean[b]:6.1f}" for b in BANDS) + f"   gap {gap:+5.1f}")
    print("\n== sliders on the phone take (dry chain, style neutral) ==")
    print(f"{'vocal':28s} {'air+1 @9-16k':>13s} {'(no ext)':>9s} {'ess blk':>7s} {'de-ess cut':>10s} "
          f"{'brighter lift':>13s} {'ext on esses':>12s} {'ext x RT':>8s}")
    for r in rows:
        print(f"{r['vocal']:28s} {r['air_effect_9_16_db_ext']:13.1f} {r['air_effect_9_16_db_noext']:9.1f} "
              f"{r['ess_blocks']:7d} {r.get('deesser_cut_db', float('nan')):10.1f} "
              f"{r.get('brighter_lift_db', float('nan')):13.1f} {r.get('ext_on_ess_9_16_db', float('nan')):12.1f} "
              f"{r['rtf']:8.4f}")


def plot_air(rows: list[dict], path: Path) -> None:
    """The band-level curves, one panel per vocal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2), sharey=True, constrained_layout=True)
    for ax, r in zip(np.atleast_1d(axes), rows, strict=True):
        for name, style in (("studio", "k-"), ("phone", "C0--"), ("phone+ext", "C3-")):
            ax.plot(list(BANDS), [r["levels"][name][b] for b in BANDS], style, marker="o", label=name)
        ax.set_title(r["vocal"], fontsize=8)
        ax.set_xlabel("band")
    np.atleast_1d(axes)[0].set_ylabel("dB against 0.5-2 kHz")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bench_aac(data: Path, work: Path | None = None) -> list[dict]:
    """Clipped, limited and clean real vocals through AAC: what the exact and the soft-rail tests find, and the repair's gain."""
    import tempfile

    from melisma.audio_io import decode
    from melisma.render.declip import detect_soft_clipping
    from melisma.render.limiter import TruePeakLimiter

    folder = Path(work or tempfile.mkdtemp(prefix="bench-aac-clip-"))
    rows = []
    for rel, seconds in VOCALS:
        voice = 0.5 * load_vocal(data, rel, seconds)
        cases: dict[str, tuple[np.ndarray, np.ndarray | None]] = {"unclipped": (voice / np.max(np.abs(voice)) * 0.95, None)}
        for fraction in (0.01, 0.05, 0.10):
            clipped, drive_db = degrade.clip(voice, fraction=fraction)
            cases[f"clipped {100 * fraction:.0f} %"] = (clipped, voice * np.float32(10 ** (drive_db / 20)))
        for drive in (6, 12, 18):
            loud = (voice / np.max(np.abs(voice)) * np.float32(10 ** (drive / 20))).astype(np.float32)
            cases[f"limited +{drive} dB"] = (TruePeakLimiter(ceiling_dbtp=-1.0, release_ms=50.0).limit(loud, SR), None)
        for case, (y, truth) in cases.items():
            path = folder / "take.m4a"
            degrade.write_aligned(str(path), y.astype(np.float32), SR, bit_rate=128000)
            d = decode(path, sr=SR, channels=1)
            assert d.audio is not None
            x = d.audio[0][: y.size]
            t0 = time.perf_counter()
            soft = detect_soft_clipping(x, sr=SR)
            dt = time.perf_counter() - t0
            gain = None
            if truth is not None and soft["regions"]:
                fixed = ARDeclipper(threshold=soft["threshold"]).declip(x, SR)
                where = np.abs(truth[: x.size]) > 1.0
                gain = sdr(fixed[where], truth[: x.size][where]) - sdr(x[where], truth[: x.size][where])
            rows.append({"vocal": Path(rel).stem[:28], "case": case, "exact_runs": detect_clipping(x, sr=SR)["regions"],
                         "soft_runs": soft["regions"], "overshoot_db": soft["overshoot_db"], "found_pct": 100 * soft["fraction"],
                         "seconds": dt, "gain_db": gain, "clipped": truth is not None})
    return rows


def print_aac(rows: list[dict]) -> None:
    """Print the AAC clipping table and its summary."""
    print("\n== clipping under AAC 128 kbit/s: exact rail test vs soft-rail test; repair gain in the clipped samples ==")
    print(f"{'vocal':28s} {'case':16s} {'exact':>5s} {'soft':>5s} {'over dB':>7s} {'found%':>6s} {'s':>5s} {'gain dB':>7s}")
    for r in rows:
        gain = "" if r["gain_db"] is None else f"{r['gain_db']:+7.1f}"
        print(f"{r['vocal']:28s} {r['case']:16s} {r['exact_runs']:5d} {r['soft_runs']:5d} {r['overshoot_db']:7.2f} "
              f"{r['found_pct']:6.2f} {r['seconds']:5.1f} {gain:>7s}")
    clipped = [r for r in rows if r["clipped"]]
    limited = [r for r in rows if r["case"].startswith("limited")]
    clean = [r for r in rows if r["case"] == "unclipped"]
    gains = [r["gain_db"] for r in clipped if r["gain_db"] is not None]
    print(f"clipped takes found: {sum(r['soft_runs'] > 0 for r in clipped)}/{len(clipped)} (exact test: "
          f"{sum(r['exact_runs'] > 0 for r in clipped)}); limited called clipped: {sum(r['soft_runs'] > 0 for r in limited)}/"
          f"{len(limited)}; unclipped called clipped: {sum(r['soft_runs'] > 0 for r in clean)}/{len(clean)}; "
          f"repair gain mean {np.mean(gains) if gains else float('nan'):+.2f} dB (min {min(gains, default=float('nan')):+.1f})")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--only", choices=["declip", "air", "brighter", "pipeline", "aac"])
    ap.add_argument("--plot", type=Path, help="draw the band-level curves of the air section to this PNG")
    ap.add_argument("--seconds", type=float, default=1e9, help="declip only the first SECONDS of each vocal (quicker)")
    args = ap.parse_args(argv)
    if args.only in (None, "declip"):
        print_declip(bench_declip(args.data, args.seconds))
    if args.only in (None, "air"):
        print_air(bench_air(args.data, args.plot))
    if args.only in (None, "brighter"):
        print_brighter(bench_brighter(args.data))
    if args.only in (None, "pipeline"):
        print_pipeline(bench_pipeline(args.data))
    if args.only in (None, "aac"):
        print_aac(bench_aac(args.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
