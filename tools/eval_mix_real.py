"""Measure the one-tap mix engine (melisma.pipeline.mix_files) on phone takes built from real recordings.

Every take is made from real material in ``../shared/data`` with known degradations, so the
truth is known:

* ``stems``: the real vocal of a multitrack (stems_easton_ellises_falcon69) over its own band
  (drums + bass + other), with the band played back through a phone speaker (bleed), a measured
  room response, real noise, a known recording offset, a phone microphone's band limit and an
  AAC 64 kb/s file. One looped to about 30 s.
* ``solo``: real solo singing (vocadito, phone sight-singing from ssvd_v2, the anechoic operatic
  voice through a measured room) over a backing looped from the CC0 Sonic Pi loops, with bleed
  and an offset, or without bleed (headphones) and the app's calibrated latency (true offset
  ± a few ms) passed as ``latency_ms``.

For each case the script runs ``mix_files`` and measures: the alignment error against the true
offset, what clean-up detected (hum, noise, clipping), the integrated loudness and true peak of
the written mix (decoded again), the vocal-to-backing loudness of the written stems against the
preset's target, the pitch analysis (notes, key, median correction) and the time taken. It also
reports the loudness of the finished CC BY song in mixed_songs as a reference for levels, and
the tuning (cents from A440) of the stems' band against the correction the engine applied.

Nothing from the data folder is copied into the project: every temporary file goes under
``--work`` (default: a fresh folder in /tmp).

Usage::

    .venv/bin/python tools/eval_mix_real.py                   # all cases (~2-4 min on 2 cores)
    .venv/bin/python tools/eval_mix_real.py --only stems      # cases whose name contains 'stems'
    .venv/bin/python tools/eval_mix_real.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from melisma import pipeline  # noqa: E402
from melisma.analysis.loudness import integrated_lufs, true_peak_dbtp  # noqa: E402
from melisma.audio_io import load_audio, write_audio  # noqa: E402

from tools.corpus import degrade  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
STEMS = "stems_easton_ellises_falcon69"
LOOPS = "backing_cc0_sonicpi"
#: Alignment within this is inaudible in a mix (the project's requirement).
ALIGN_TOL_MS = 5.0
#: Rooms (measured RIRs, channel 0) and noises used, cycled through the cases.
ROOMS = (
    "rirs/mit_ir_survey/h010_Livingroom_31txts.wav",
    "rirs/openair_toobamp/Genesis 6 Studio Live Room.wav",
    "rirs/openair_quantumverb/medium_chamber.wav",
    "rirs/smstools/impulse-response.wav",
    "rirs/audiomentations_demo/rir48000.wav",
)
NOISES = (
    "noise/speech_commands_bg/doing_the_dishes.wav",
    "noise/smstools/rain.wav",
    "noise/speech_commands_bg/exercise_bike.wav",
    "noise/sonicpi_cc0/vinyl_hiss.flac",
    "noise/sonicpi_cc0/ambi_sauna.flac",
)
#: Highest sample peak of a backing file (a finished backing never clips).
BACKING_PEAK = 0.89
#: Peak level of a take after the phone's input gain (AGC), dBFS.
TAKE_PEAK_DBFS = -3.0


@dataclass
class Case:
    """One phone take with its backing and the truth about it."""

    name: str
    take: np.ndarray           # (n,) float32 at ``sr``
    backing: np.ndarray        # (2, n) float32 at ``sr``
    sr: int
    offset_ms: float           # true offset of the take (positive: late), as the engine reports it
    bleed: bool                # the backing is audible in the take
    latency_ms: float | None = None  # what the app's calibration says (headphone cases)
    style: str = "neutral"
    recipe: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Building takes


def loop_to(y: np.ndarray, n: int) -> np.ndarray:
    """Repeat ``y`` (last axis) until it is ``n`` samples long."""
    reps = int(math.ceil(n / y.shape[-1]))
    return np.ascontiguousarray(np.tile(y, (1,) * (y.ndim - 1) + (reps,))[..., :n])


def _stereo(y: np.ndarray) -> np.ndarray:
    return np.repeat(y[None, :], 2, axis=0) if y.ndim == 1 else y[:2]


def _rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) + 1e-20


def stems_voice_and_backing(data: Path, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """The multitrack's vocal (mono) and its band: drums + bass + other (stereo)."""
    folder = data / STEMS
    voice, _ = load_audio(folder / "vocals.wav", sr=sr, mono=True)
    parts = [_stereo(load_audio(folder / f"{name}.wav", sr=sr)[0]) for name in ("drums", "bass", "other")]
    band = np.sum(parts, axis=0)
    # Each stem peaks at full scale, so their sum reaches about 3: scale both (keeping their
    # balance) so the backing file does not clip.
    gain = np.float32(min(1.0, BACKING_PEAK / float(np.max(np.abs(band)))))
    return (voice * gain).astype(np.float32), (band * gain).astype(np.float32)


def loop_backing(data: Path, n: int, sr: int, *, loops: tuple[str, ...], level_lufs: float = -16.0) -> np.ndarray:
    """A stereo backing of ``n`` samples: each CC0 loop repeated to length, summed at equal
    loudness, then set to ``level_lufs`` (loops of different lengths make it non-periodic)."""
    total = np.zeros((2, n), np.float32)
    for name in loops:
        y, _ = load_audio(data / LOOPS / f"{name}.flac", sr=sr)
        y = loop_to(_stereo(y), n)
        total += y * np.float32(10 ** ((-20.0 - integrated_lufs(y, sr=sr)) / 20.0))
    total *= np.float32(10 ** ((level_lufs - integrated_lufs(total, sr=sr)) / 20.0))
    return (total * np.float32(min(1.0, BACKING_PEAK / float(np.max(np.abs(total)))))).astype(np.float32)


def phone_take(
    voice: np.ndarray, backing: np.ndarray, sr: int, *, offset_ms: float, bleed_db: float | None,
    room: Path | None, noise: Path | None, snr_db: float | None, band_limit: bool = True, seed: int = 0,
) -> np.ndarray:
    """What a phone records: (voice + speaker bleed) in a room, plus noise, late by ``offset_ms``,
    through the phone microphone's band limit, at ``TAKE_PEAK_DBFS`` peak. Every step keeps the
    timeline (the RIRs are trimmed to their direct sound), so the true offset is ``offset_ms``.
    The AAC file is written by :func:`write_take`."""
    recorded = voice.astype(np.float32)
    if room is not None:
        recorded = degrade.add_reverb(recorded, sr, rir=room)
    if bleed_db is not None:
        bleed = degrade.speaker_bleed(backing, sr, bleed_db=bleed_db, reference=voice, seed=seed)
        if room is not None:
            bleed = degrade.add_reverb(bleed, sr, rir=room)
        recorded = recorded + bleed
    recorded = degrade.apply_offset(recorded, sr, offset_ms=offset_ms)
    if noise is not None and snr_db is not None:
        recorded = degrade.add_noise(recorded, sr, snr_db=snr_db, noise=noise, seed=seed,
                                     reference=degrade.apply_offset(voice, sr, offset_ms=offset_ms))
    if band_limit:
        recorded = degrade.band_limit(recorded, sr)
    peak = float(np.max(np.abs(recorded))) + 1e-20
    return (recorded * np.float32(10 ** (TAKE_PEAK_DBFS / 20) / peak)).astype(np.float32)


def write_take(path: Path, take: np.ndarray, sr: int) -> None:
    """An AAC 64 kb/s .m4a on the take's timeline (the encoder's priming delay taken off, as a
    phone app's recorder does)."""
    degrade.write_aligned(path, take, sr, bit_rate=64000, overwrite=True)


# ----------------------------------------------------------------------------------------------
# The cases


def build_cases(data: Path, *, quick: bool = False) -> list[Case]:
    """The evaluation cases (``quick``: the three used by the test)."""
    rng = np.random.default_rng(2024)
    cases: list[Case] = []
    sr = 48000

    # 1. The multitrack: its real vocal over its real band, speaker bleed.
    voice, band = stems_voice_and_backing(data, sr)
    stem_params = [  # offset_ms, bleed_db, snr_db
        (150.0, -12.0, 20.0), (-80.0, -15.0, 15.0), (320.0, -18.0, 12.0), (45.0, -20.0, 10.0),
        (400.0, -22.0, 8.0), (210.0, -25.0, 5.0),
    ]
    styles = ("neutral", "cpop", "western", "ballad")
    for i, (offset, bleed_db, snr) in enumerate(stem_params[:1] if quick else stem_params):
        room, noise = data / ROOMS[i % len(ROOMS)], data / NOISES[i % len(NOISES)]
        take = phone_take(voice, band, sr, offset_ms=offset, bleed_db=bleed_db, room=room, noise=noise, snr_db=snr, seed=i)
        cases.append(Case(f"stems-bleed{int(-bleed_db)}", take, band, sr, offset, True, style=styles[i % len(styles)],
                          recipe={"voice": "stems vocal", "bleed_db": bleed_db, "room": room.stem, "noise": noise.stem, "snr_db": snr}))
    if not quick:
        # ~30 s: the 6-s multitrack looped five times.
        v30, b30 = loop_to(voice, 5 * voice.size), loop_to(band, 5 * voice.size)
        room, noise = data / ROOMS[0], data / NOISES[0]
        take = phone_take(v30, b30, sr, offset_ms=260.0, bleed_db=-20.0, room=room, noise=noise, snr_db=12.0, seed=7)
        cases.append(
            Case(
                "stems30s-bleed20",
                take,
                b30,
                sr,
                260.0,
                True,
                style="cpop",
                recipe={"voice": "stems vocal x5", "bleed_db": -20.0, "room": room.stem, "noise": noise.stem, "snr_db": 12.0},
            )
        )

    # 2. Solo singing over CC0 loops. vocadito (44.1 kHz, 33 s) kept at its own rate.
    vsr = 44100
    vocadito, _ = load_audio(data / "vocadito" / "Audio" / "vocadito_1.wav", sr=vsr, mono=True)
    vocadito = vocadito[: 20 * vsr]
    loops_a = ("loop_compus", "guit_em9")
    back_v = loop_backing(data, vocadito.size, vsr, loops=loops_a)
    take = phone_take(
        vocadito, back_v, vsr, offset_ms=180.0, bleed_db=-15.0, room=data / ROOMS[0], noise=data / NOISES[1], snr_db=15.0, seed=11
    )
    cases.append(
        Case(
            "vocadito-bleed15",
            take,
            back_v,
            vsr,
            180.0,
            True,
            style="ballad",
            recipe={
                "voice": "vocadito_1 0-20 s",
                "backing": "+".join(loops_a),
                "bleed_db": -15.0,
                "room": Path(ROOMS[0]).stem,
                "noise": Path(NOISES[1]).stem,
                "snr_db": 15.0,
            },
        )
    )
    if not quick:
        # Headphones: the vocadito voice (not from the stems) over the stems' band, calibrated latency.
        v6 = vocadito[5 * vsr : 5 * vsr + int(band.shape[1] * vsr / sr)]
        band44 = np.ascontiguousarray(
            np.stack([np.interp(np.arange(v6.size) * sr / vsr, np.arange(band.shape[1]), ch) for ch in band]).astype(np.float32)
        )
        take = phone_take(
            v6, band44, vsr, offset_ms=120.0, bleed_db=None, room=data / ROOMS[1], noise=data / NOISES[3], snr_db=18.0, seed=12
        )
        cases.append(
            Case(
                "vocadito/stemsband-hp",
                take,
                band44,
                vsr,
                120.0,
                False,
                latency_ms=120.0 + 3.0,
                style="western",
                recipe={
                    "voice": "vocadito_1 5-11 s",
                    "backing": "stems band",
                    "room": Path(ROOMS[1]).stem,
                    "noise": Path(NOISES[3]).stem,
                    "snr_db": 18.0,
                    "latency_error_ms": 3.0,
                },
            )
        )
        # The same without any calibration: the engine must not invent an offset.
        cases.append(
            Case(
                "vocadito/stemsband-hp-nocal",
                take,
                band44,
                vsr,
                120.0,
                False,
                latency_ms=None,
                style="western",
                recipe={"voice": "vocadito_1 5-11 s", "backing": "stems band", "note": "no bleed, no calibration"},
            )
        )

    # Phone sight-singing (real phones, real rooms): add bleed, an offset and the AAC file only.
    ssvd_ids = ("65567",) if quick else ("65567", "100620", "24541", "4179")
    for j, clip in enumerate(ssvd_ids):
        y, _ = load_audio(data / "ssvd_v2_subset" / "test" / f"{clip}.flac", sr=sr, mono=True)
        y = y[: 15 * sr]
        loops = (
            ("loop_safari", "bass_voxy_c"),
            ("loop_tabla", "guit_e_fifths"),
            ("loop_amen_full", "ambi_piano"),
            ("loop_breakbeat", "guit_em9"),
        )[j % 4]
        back = loop_backing(data, y.size, sr, loops=loops)
        offset = float(rng.uniform(-100, 400)) if not quick else 90.0
        if j == 1 and not quick:  # headphones with a calibrated latency
            take = phone_take(y, back, sr, offset_ms=offset, bleed_db=None, room=None, noise=None, snr_db=None, band_limit=False)
            jitter = float(rng.uniform(-4, 4))
            cases.append(
                Case(
                    f"ssvd{clip}-hp",
                    take,
                    back,
                    sr,
                    offset,
                    False,
                    latency_ms=offset + jitter,
                    style="cpop",
                    recipe={"voice": f"ssvd {clip} 0-15 s", "backing": "+".join(loops), "latency_error_ms": round(jitter, 2)},
                )
            )
            continue
        bleed_db = (-14.0, -20.0, -18.0, -24.0)[j % 4]
        take = phone_take(
            y,
            back,
            sr,
            offset_ms=offset,
            bleed_db=bleed_db,
            room=data / ROOMS[0],
            noise=None,
            snr_db=None,
            band_limit=False,
            seed=20 + j,
        )
        cases.append(
            Case(
                f"ssvd{clip}-bleed{int(-bleed_db)}",
                take,
                back,
                sr,
                offset,
                True,
                style="cpop",
                recipe={
                    "voice": f"ssvd {clip} 0-15 s",
                    "backing": "+".join(loops),
                    "bleed_db": bleed_db,
                    "room (bleed)": Path(ROOMS[0]).stem,
                },
            )
        )

    if not quick:
        # The anechoic operatic voice in real rooms, with and without bleed.
        opera, _ = load_audio(data / "openair_anechoic_singing" / "singing_operatic_anechoic.wav", sr=sr, mono=True)
        loops = ("guit_em9", "ambi_piano")
        back = loop_backing(data, opera.size, sr, loops=loops)
        for k, (room, bleed_db, offset) in enumerate(((ROOMS[2], -16.0, 60.0), (ROOMS[1], None, 250.0))):
            take = phone_take(
                opera,
                back,
                sr,
                offset_ms=offset,
                bleed_db=bleed_db,
                room=data / room,
                noise=data / NOISES[4],
                snr_db=14.0,
                seed=30 + k,
            )
            latency = None if bleed_db is not None else offset - 2.0
            name = f"opera-bleed{int(-bleed_db)}" if bleed_db is not None else "opera-hp"
            cases.append(
                Case(
                    name,
                    take,
                    back,
                    sr,
                    offset,
                    bleed_db is not None,
                    latency_ms=latency,
                    style="ballad",
                    recipe={
                        "voice": "anechoic operatic",
                        "backing": "+".join(loops),
                        "bleed_db": bleed_db,
                        "room": Path(room).stem,
                        "noise": Path(NOISES[4]).stem,
                        "snr_db": 14.0,
                    },
                )
            )
        # Rhythmic real noise (an exercise bike) in the same take: a chance correlation of the
        # noise with the backing competes with the reverberant bleed.
        take = phone_take(
            opera, back, sr, offset_ms=60.0, bleed_db=-16.0, room=data / ROOMS[2], noise=data / NOISES[2], snr_db=14.0, seed=30
        )
        cases.append(
            Case(
                "opera-bleed16-bike",
                take,
                back,
                sr,
                60.0,
                True,
                style="ballad",
                recipe={
                    "voice": "anechoic operatic",
                    "backing": "+".join(loops),
                    "bleed_db": -16.0,
                    "room": Path(ROOMS[2]).stem,
                    "noise": Path(NOISES[2]).stem,
                    "snr_db": 14.0,
                },
            )
        )
    return cases


# ----------------------------------------------------------------------------------------------
# Running and measuring


def file_loudness(path: Path) -> tuple[float, float]:
    """Integrated loudness (LUFS) and true peak (dBTP) of an audio file, decoded at its own rate."""
    y, sr = load_audio(path)
    return integrated_lufs(y, sr=sr), true_peak_dbtp(y, sr=sr)


def run_case(case: Case, work: Path) -> dict[str, Any]:
    """Write the case's files, run the one-tap mix and measure the result."""
    folder = work / case.name.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    take_path, backing_path = folder / "take.m4a", folder / "backing.flac"
    write_take(take_path, case.take, case.sr)
    write_audio(backing_path, case.backing, sr=case.sr, overwrite=True)
    start = time.perf_counter()
    report = pipeline.mix_files(
        take_path,
        backing_path,
        folder / "mix.m4a",
        style=case.style,
        latency_ms=case.latency_ms,
        report_path=folder / "report.json",
        stems_dir=folder / "stems",
        overwrite=True,
    )
    wall_s = time.perf_counter() - start
    mix_lufs, mix_tp = file_loudness(folder / "mix.m4a")
    vocal, vsr = load_audio(folder / "stems" / "vocal.wav")
    backing, bsr = load_audio(folder / "stems" / "backing.wav")
    measured_balance = integrated_lufs(vocal, sr=vsr) - integrated_lufs(backing, sr=bsr)
    analysis = report["cleanup"]["analysis"]
    pitch = report.get("pitch", {})
    shifts = [abs(c["shift_cents"]) for c in pitch.get("corrections", [])]
    align = report["alignment"]
    return {
        "case": case.name,
        "bleed": case.bleed,
        "recipe": case.recipe,
        "duration_s": round(case.take.size / case.sr, 2),
        "true_offset_ms": round(case.offset_ms, 2),
        "latency_ms": case.latency_ms,
        "offset_ms": align["offset_ms"],
        "align_error_ms": round(align["offset_ms"] - degrade.offset_samples(case.offset_ms, case.sr) * 1000 / case.sr, 2),
        "method": align["method"],
        "confidence": align["confidence"],
        "hum": analysis["hum"]["fundamental_hz"] if analysis["hum"]["detected"] else None,
        "noise_snr_db": analysis["noise"].get("snr_db"),
        "clipping_fraction": analysis["clipping"]["fraction"],
        "actions": [a["action"] for a in report["cleanup"]["actions"]],
        "mix_lufs": round(mix_lufs, 2),
        "mix_true_peak_dbtp": round(mix_tp, 2),
        "report_lufs": round(report["loudness"]["integrated_lufs"], 2),
        "report_true_peak_dbtp": round(report["loudness"]["true_peak_dbtp"], 2),
        "style": case.style,
        "balance_target_lu": report["balance"]["target_lu"],
        "balance_measured_lu": round(measured_balance, 2),
        "notes": len(pitch.get("notes", [])),
        "ornaments": len(pitch.get("ornaments", [])),
        "key": (pitch.get("key") or {}).get("name"),
        "key_confidence": (pitch.get("key") or {}).get("confidence"),
        "median_shift_cents": round(float(np.median(shifts)), 1) if shifts else None,
        "median_abs_cents_error_after": pitch.get("median_abs_cents_error_after"),
        "warnings": report.get("warnings", []),
        "time_s": round(wall_s, 2),
    }


def tuning_cents(y: np.ndarray, sr: int, *, fmin_hz: float = 80.0, fmax_hz: float = 2000.0) -> float:
    """Where a recording's pitches sit relative to A440 equal temperament, in cents (−50…50):
    the magnitude-weighted circular mean of the deviation of its spectral peaks (parabolic
    interpolation on a 8192-point STFT) from the nearest semitone."""
    from scipy.signal import find_peaks, stft

    y = y.mean(axis=0) if y.ndim == 2 else y
    _, _, z = stft(y, fs=sr, nperseg=8192, noverlap=6144)
    mag = np.abs(z)
    angles, weights = [], []
    for frame in mag.T:
        peaks, _ = find_peaks(frame, height=frame.max() * 0.05 if frame.max() > 0 else 1.0)
        for k in peaks:
            if not 1 <= k < frame.size - 1:
                continue
            a, b, c = np.log(frame[k - 1 : k + 2] + 1e-12)
            delta = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
            f = (k + delta) * sr / 8192
            if fmin_hz <= f <= fmax_hz:
                angles.append(2 * np.pi * (12 * np.log2(f / 440.0)))
                weights.append(frame[k])
    if not weights:
        return float("nan")
    w = np.asarray(weights)
    mean = np.angle(np.sum(w * np.exp(1j * np.asarray(angles))))
    return float(mean / (2 * np.pi) * 100.0)


def reference_levels(data: Path) -> dict[str, Any]:
    """Loudness and true peak of the finished song, and the stems' tuning."""
    out: dict[str, Any] = {}
    songs = sorted((data / "mixed_songs").glob("*.ogg"))
    if songs:
        lufs, tp = file_loudness(songs[0])
        out["song"] = {"file": songs[0].name, "integrated_lufs": round(lufs, 2), "true_peak_dbtp": round(tp, 2)}
    voice, band = stems_voice_and_backing(data, 48000)
    out["stems_tuning_cents"] = {"band": round(tuning_cents(band, 48000), 1), "vocal": round(tuning_cents(voice, 48000), 1)}
    return out


def summarize(rows: list[dict[str, Any]]) -> list[str]:
    bleed = [r for r in rows if r["bleed"]]
    ok = [r for r in bleed if abs(r["align_error_ms"]) <= ALIGN_TOL_MS and r["method"] == "bleed"]
    hp_cal = [r for r in rows if not r["bleed"] and r["latency_ms"] is not None]
    hp_ok = [r for r in hp_cal if abs(r["align_error_ms"]) <= ALIGN_TOL_MS and r["method"].startswith("calibrated")]
    lines = [
        f"alignment within ±{ALIGN_TOL_MS:.0f} ms by bleed: {len(ok)}/{len(bleed)} bleed cases"
        + ("" if len(ok) == len(bleed) else f" (misses: {', '.join(r['case'] for r in bleed if r not in ok)})"),
        f"headphones with calibrated latency: {len(hp_ok)}/{len(hp_cal)} within ±{ALIGN_TOL_MS:.0f} ms",
    ]
    for r in rows:
        if not r["bleed"] and r["latency_ms"] is None:
            lines.append(
                f"headphones without calibration ({r['case']}): method {r['method']}, confidence {r['confidence']}, "
                f"offset {r['offset_ms']} ms"
            )
    hum = [r["case"] for r in rows if r["hum"]]
    lines.append(f"hum detected (none was added): {len(hum)}/{len(rows)}" + (f" ({', '.join(hum)})" if hum else ""))
    lufs = np.array([r["mix_lufs"] for r in rows])
    tp = np.array([r["mix_true_peak_dbtp"] for r in rows])
    bal = np.array([r["balance_measured_lu"] - r["balance_target_lu"] for r in rows])
    lines.append(
        f"mix loudness (decoded file): {lufs.min():.2f}…{lufs.max():.2f} LUFS, "
        f"{int(np.sum(np.abs(lufs + 14.0) <= 0.5))}/{len(rows)} within −14 ± 0.5"
    )
    lines.append(f"true peak (decoded file): max {tp.max():.2f} dBTP, {int(np.sum(tp <= -1.0))}/{len(rows)} ≤ −1 dBTP")
    lines.append(
        f"balance error (stems vs preset): max |{np.max(np.abs(bal)):.2f}| LU, {int(np.sum(np.abs(bal) <= 1.0))}/{len(rows)} within ±1 LU"
    )
    times = np.array([r["time_s"] for r in rows])
    secs = np.array([r["duration_s"] for r in rows])
    lines.append(
        f"time: {times.sum():.1f} s for {secs.sum():.0f} s of audio (real-time factor {times.sum() / secs.sum():.2f} on this machine)"
    )
    return lines


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'case':28} {'dur':>5} {'true':>7} {'err':>7} {'method':>18} {'conf':>5} {'hum':>4} {'snr':>5} "
        f"{'LUFS':>6} {'TP':>6} {'V/B':>5} {'tgt':>4} {'notes':>5} {'key':>10} {'shift':>5} {'after':>5} {'t_s':>5}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        hum = "-" if r["hum"] is None else f"{r['hum']:.0f}"
        out.append(
            f"{r['case']:28} {r['duration_s']:5.1f} {r['true_offset_ms']:7.1f} {r['align_error_ms']:7.2f} {r['method']:>18} "
            f"{r['confidence']:5.2f} {hum:>4} "
            f"{(r['noise_snr_db'] if r['noise_snr_db'] is not None else float('nan')):5.1f} "
            f"{r['mix_lufs']:6.2f} {r['mix_true_peak_dbtp']:6.2f} {r['balance_measured_lu']:5.2f} {r['balance_target_lu']:4.1f} "
            f"{r['notes']:5d} {r['key']!s:>10} {_num(r['median_shift_cents']):>5} {_num(r['median_abs_cents_error_after']):>5} "
            f"{r['time_s']:5.1f}"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared recordings folder")
    parser.add_argument("--work", type=Path, default=None, help="folder for temporary files (default: a new one in /tmp)")
    parser.add_argument("--only", default=None, help="run only cases whose name contains this")
    parser.add_argument("--quick", action="store_true", help="the three cases the test uses")
    parser.add_argument("--json", type=Path, default=None, help="write all rows and the reference levels here")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: not a folder; point it at the shared recordings (shared/data)")
    work = args.work or Path(tempfile.mkdtemp(prefix="melisma-eval-mix-"))
    ref = reference_levels(args.data)
    cases = [c for c in build_cases(args.data, quick=args.quick) if args.only is None or args.only in c.name]
    rows = []
    for case in cases:
        rows.append(run_case(case, work))
        r = rows[-1]
        print(
            f"  {r['case']}: err {r['align_error_ms']:+.2f} ms ({r['method']}, {r['confidence']:.2f}), "
            f"{r['mix_lufs']:.2f} LUFS, {r['mix_true_peak_dbtp']:.2f} dBTP, {r['time_s']:.1f} s",
            file=sys.stderr,
        )
    print(format_table(rows))
    print()
    if "song" in ref:
        print(
            f"reference song {ref['song']['file']}: {ref['song']['integrated_lufs']:.2f} LUFS, {ref['song']['true_peak_dbtp']:.2f} dBTP"
        )
    print(
        f"stems tuning vs A440: band {ref['stems_tuning_cents']['band']:+.1f} cents, vocal {ref['stems_tuning_cents']['vocal']:+.1f} cents"
    )
    for line in summarize(rows):
        print(line)
    for r in rows:
        if r["warnings"]:
            print(f"warnings {r['case']}: {'; '.join(r['warnings'])}")
    if args.json:
        args.json.write_text(json.dumps({"reference": ref, "rows": rows}, indent=1, default=str))
    print(f"(files in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
