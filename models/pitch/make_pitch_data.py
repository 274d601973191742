"""Training and held-out data for the pitch model: synthetic singing with exact f0, damaged like phone takes.

Every clip is drawn from its seed alone (so the data set is reproducible):

* a melody from ``tools.corpus.melody.generate_melody`` in a random key and mode, tempo
  60-150 bpm, ornaments at 0.5-2x the default rate (vibrato, slides, portamento, grace notes,
  trills, mordents, drift, detune up to 60 cents), transposed so the voices together cover
  C2 (65 Hz) to E6 (1.3 kHz);
* sung by ``tools.corpus.voice.synthesize_voice`` with a male, female or child preset whose
  formant scale, spectral tilt, breathiness (aspiration), jitter and singer's formant are varied;
  all five vowels, consonants and breaths as the generator draws them;
* a random tone colour (shelves, a peak, sometimes a low-pass leaving little more than the
  fundamental, like a hummed or nasal sound);
* with p = 0.3 the backing track (chords, bass, drums from ``tools.corpus.backing``) leaking from
  the phone's speaker at -25 to -8 dB re the voice: pitched sound that is not the singer;
* then damaged like a phone take (each with a probability): room reverb from the measured
  impulse responses in ``$MELISMA_SHARED_DATA/rirs`` (used at training time only, never copied)
  or a synthetic room; noise (pink, white, babble, fan, or real recordings from
  ``$MELISMA_SHARED_DATA/noise``) at 0-35 dB SNR; mains hum; a phone microphone's band limit;
  clipping; an AAC round trip at 32-128 kb/s; and a random level.

With ``--real-clips N`` it adds N clips of real voices (:data:`REAL_TRAINING_VOICES`, permissively
licensed recordings from ``$MELISMA_SHARED_DATA``, never evaluation recordings), transposed,
given backing bleed and damaged the same way, labelled by a teacher (:func:`real_voice_teacher`).
The committed model used none.

Output: one ``.npz`` with ``x`` (frames, 5, 128) float16 model inputs (three spectral context
rows and two level rows, see :mod:`melisma.analysis.pitch_model`; a model without level input
trains on the first three), ``f0_hz`` (frames,) truth at the frame centres
(0 = unvoiced; with ``--release-end-db`` the faded end of each phrase's release is 0 too, see
:func:`trim_releases`), ``voicing_ignore`` (frames,) frames left out of the voicing loss (see
:func:`voicing_ignore`), ``clip`` (frames,) clip index, and the per-clip settings as JSON.

Training seeds are ``0 .. n-1`` (+ ``--seed-base``); the benchmark's generated held-out set uses
``--seed-base 900000`` and is never used for training.

Usage::

    nice python models/pitch/make_pitch_data.py --clips 1000 --out /tmp/pitch_train.npz
    nice python models/pitch/make_pitch_data.py --clips 24 --seed-base 900000 --out /tmp/pitch_heldout.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from melisma.analysis.pitch_model import (  # noqa: E402
    HOP_LENGTH,
    SR,
    level_features,
    model_inputs,
    spectrogram_features,
)

from tools.corpus import degrade  # noqa: E402
from tools.corpus.backing import make_backing  # noqa: E402
from tools.corpus.melody import MODES, Key, generate_melody  # noqa: E402
from tools.corpus.voice import VOICES, synthesize_voice  # noqa: E402

SHARED = Path(os.environ.get("MELISMA_SHARED_DATA", REPO.parent / "shared" / "data"))

#: Transposition range (semitones) per voice: together C2..E6.
TRANSPOSE = {"male": (-12, 4), "female": (-5, 7), "child": (-4, 7)}


def _rir_files() -> list[Path]:
    d = SHARED / "rirs"
    return sorted(p for p in d.rglob("*.wav")) if d.is_dir() else []


def _noise_files() -> list[Path]:
    d = SHARED / "noise"
    if not d.is_dir():
        return []
    return sorted(p for p in d.rglob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"))


#: Real-voice clips (``--real-clips``) draw from seeds this far above the synthetic ones.
REAL_SEED_OFFSET = 5_000_000

#: ``--varied-releases``: phrase-end fades of 30-200 ms that get up to 30 dB breathier, and legato
#: dips from 0.15 to 0.8 of the note's level (the voice's defaults: 70 ms, no extra breath, 0.55).
VARIED_RELEASES = {"release_ms": (30.0, 200.0), "release_breath_db": (0.0, 30.0), "legato_dip": (0.15, 0.8)}


def make_clip(seed: int, *, duration_s: float = 8.0, return_dry: bool = False, bleed_p: float = 0.3,
              snr_power: float = 1.0, varied_releases: bool = False):
    """One damaged synthetic take at 16 kHz: (audio, f0 truth at hop 5 ms, settings), and with
    ``return_dry`` also the dry synthetic voice (before bleed and damage).

    ``bleed_p``: probability of backing bleed. ``snr_power``: the noise SNR is 35 dB times a
    uniform draw to this power (1: uniform 0-35 dB; 2: median 8.75 dB, more low-SNR clips).
    ``varied_releases``: vary how phrases end and how deep legato dips are
    (:data:`VARIED_RELEASES`). The defaults give the same clips as before these options existed."""
    rng = np.random.default_rng([seed, 20240611])
    voice = str(rng.choice(["male", "female", "child"], p=[0.42, 0.42, 0.16]))
    base = VOICES[voice]
    preset = dataclasses.replace(
        base,
        name=voice,
        formant_scale=float(rng.uniform(0.88, 1.15)),
        tilt=float(base.tilt * rng.uniform(0.7, 1.4)),
        aspiration_db=float(rng.uniform(-38.0, -10.0)),
        jitter_cents=float(rng.uniform(1.0, 15.0)),
        shimmer_db=float(rng.uniform(0.3, 1.5)),
        singer_formant_gain=float(rng.uniform(0.0, 0.5)),
    )
    key = Key(int(rng.integers(12)), str(rng.choice(list(MODES))))
    melody = generate_melody(key, tempo_bpm=float(rng.uniform(60, 150)), duration_s=duration_s, seed=seed,
                             voice=voice, ornament_rate=float(rng.uniform(0.5, 2.0)), detune_cents_max=60.0,
                             lead_in_s=float(rng.uniform(0.2, 1.0)))
    shift = int(rng.integers(TRANSPOSE[voice][0], TRANSPOSE[voice][1] + 1))
    notes = melody.notes
    for n in notes:
        n.midi = float(n.midi + shift)
    take = synthesize_voice(notes, sr=SR, duration_s=duration_s, voice=preset, seed=seed,
                            **(VARIED_RELEASES if varied_releases else {}))
    y = take.audio.astype(np.float32)
    dry = y.copy()
    info: dict = {"seed": seed, "voice": voice, "shift": shift, "key": key.name,
                  "notes": [(n["start_s"], n["end_s"], n["midi"]) for n in take.notes]}

    if rng.random() < bleed_p:
        # the backing heard through the phone's speaker: pitched, but not the singer (unvoiced)
        backing = make_backing(key, tempo_bpm=melody.tempo_bpm, duration_s=duration_s, sr=SR,
                               chords=melody.chords, seed=seed, renderer="numpy")
        bleed_db = float(rng.uniform(-25.0, -8.0))
        y = y + degrade.speaker_bleed(backing.audio, SR, bleed_db=bleed_db, reference=y, seed=seed)
        info["bleed_db"] = bleed_db

    y = phone_damage(y, rng, info, seed=seed, snr_power=snr_power)
    if return_dry:
        return y.astype(np.float32), take.f0_hz.astype(np.float64), info, dry
    return y.astype(np.float32), take.f0_hz.astype(np.float64), info


def phone_damage(y: np.ndarray, rng: np.random.Generator, info: dict, *, seed: int, snr_power: float = 1.0) -> np.ndarray:
    """Damage a take like a phone recording, each step with its probability (see the module
    docstring): room reverb, tone colour, noise, mains hum, band limit, level, clipping, AAC.
    Draws from ``rng`` and notes what it did in ``info``."""
    if rng.random() < 0.5:
        rirs = _rir_files()
        if rirs and rng.random() < 0.7:
            rir = rirs[int(rng.integers(len(rirs)))]
            info["rir"] = rir.name
        else:
            rir = "synthetic"
            info["rir"] = "synthetic"
        rt60 = float(rng.uniform(0.2, 1.2))
        wet = degrade.add_reverb(y, SR, rir=rir, rt60_s=rt60, seed=seed)
        mix = float(rng.uniform(0.3, 1.0))  # a close phone mic hears some of the dry voice
        y = (mix * wet + (1 - mix) * y).astype(np.float32)
        info["reverb_mix"] = mix
    if rng.random() < 0.7:
        y = random_eq(y, rng, info)
    if rng.random() < 0.75:
        kinds: list = ["pink", "white", "babble", "fan", *_noise_files()]
        noise = kinds[int(rng.integers(len(kinds)))]
        snr = 35.0 * float(rng.uniform(0.0, 1.0)) ** snr_power
        y = degrade.add_noise(y, SR, snr_db=snr, noise=noise, seed=seed)
        info["noise"] = Path(str(noise)).name
        info["snr_db"] = snr
    if rng.random() < 0.2:
        y = degrade.add_hum(y, SR, hum_hz=float(rng.choice([50.0, 60.0])), hum_db=float(rng.uniform(-40, -15)),
                            seed=seed)
        info["hum"] = True
    if rng.random() < 0.6:
        lo, hi = float(rng.uniform(80, 300)), float(rng.uniform(3000, 7500))
        y = degrade.band_limit(y, SR, low_hz=lo, high_hz=hi, resonance_db=float(rng.uniform(0, 8)))
        info["band_hz"] = [lo, hi]
    peak = float(10 ** (rng.uniform(-30, -1) / 20))
    y = (y * peak / max(float(np.abs(y).max()), 1e-9)).astype(np.float32)
    if rng.random() < 0.1:
        y, drive = degrade.clip(y, fraction=float(rng.uniform(0.001, 0.03)))
        info["clip_drive_db"] = drive
    if rng.random() < 0.3:
        kbps = int(rng.choice([32, 48, 64, 96, 128]))
        y = degrade.aac_round_trip(y, SR, bit_rate=kbps * 1000)
        info["aac_kbps"] = kbps
    return y.astype(np.float32)


#: Real voices that may be used for training (``--real-clips``): permissively licensed recordings
#: under ``$MELISMA_SHARED_DATA``, read at training time and never copied into the repository.
#: None of them is an evaluation recording (vocadito, SSVD and the generated clips are). Left out on
#: purpose: GTSinger and the stems (non-commercial), the OpenAIR voice (share-alike), the Csound,
#: ALSA and SuperCollider files (GFDL / GPL), the Sonic Pi choir (not one voice), and three whose
#: teacher labels are wrong: sms-tools' carnatic.wav (a drone under the voice; the tracker calls 94 %
#: of it unvoiced), tibetan-chant.wav (overtone chant; 99 % unvoiced) and Pure Data's voice2.wav
#: (tracked at 805 Hz, not a speaking voice).
REAL_TRAINING_VOICES: tuple[tuple[str, str], ...] = (
    ("smstools_sounds/singing-female.wav", "CC BY 4.0, freesound pack xserra/13038"),
    ("smstools_sounds/vignesh.wav", "CC BY 4.0, freesound pack xserra/13038"),
    ("smstools_sounds/soprano-E4.wav", "CC BY 4.0, freesound pack xserra/13038"),
    ("smstools_sounds/speech-female.wav", "CC BY 4.0, freesound pack xserra/13038"),
    ("smstools_sounds/speech-male.wav", "CC BY 4.0, freesound pack xserra/13038"),
    ("debian_voice_misc/puredata_voice.wav", "BSD-3-Clause, Pure Data documentation"),
)

#: Teacher frames (10 ms) whose torchcrepe-full pitch is further than this from the DSP tracker's
#: are not trusted: left out of both losses.
TEACHER_AGREEMENT_CENTS = 50.0


def import_torchcrepe():
    """``(torch, torchcrepe)`` from the training environment. PyPI's torchaudio does not load with
    every torch build and torchcrepe needs only its name, so a stand-in from ``bench_stubs`` (on
    this folder's path only) takes its place when the real one fails."""
    try:
        import torchaudio  # noqa: F401
    except Exception:
        for mod in [m for m in sys.modules if m.split(".")[0] == "torchaudio"]:
            del sys.modules[mod]
        sys.path.insert(0, str(Path(__file__).resolve().parent / "bench_stubs"))
    import torch
    import torchcrepe

    return torch, torchcrepe


def _crepe_full_f0(y: np.ndarray) -> np.ndarray:
    """torchcrepe 'full' f0 (Hz, every 10 ms frame, no voicing decision) of 16 kHz audio."""
    torch, torchcrepe = import_torchcrepe()
    with torch.no_grad():
        f0 = torchcrepe.predict(torch.from_numpy(np.asarray(y, np.float32))[None], SR, hop_length=HOP_LENGTH,
                                fmin=50.0, fmax=1500.0, model="full", batch_size=256, device="cpu")
    return f0[0].numpy().astype(np.float64)


@functools.cache
def real_voice_teacher(rel_path: str, *, crepe: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real recording at 16 kHz mono with teacher labels per 10 ms frame (frame i centred at i * 10 ms):
    (audio, f0 Hz with 0 = unvoiced, trusted).

    Voicing and f0 come from the pYIN-style DSP tracker on the clean recording (its voicing edges
    are where human annotators draw them: on vocadito its note ends sit a median 2.5 ms from the
    annotation). With ``crepe``, voiced frames where torchcrepe 'full' disagrees with it by more than
    :data:`TEACHER_AGREEMENT_CENTS` are not trusted."""
    from melisma.audio_io import load_audio

    path = SHARED / rel_path
    if not path.exists():
        raise FileNotFoundError(f"real training voice {path} is missing: --real-clips needs $MELISMA_SHARED_DATA "
                                f"(now {SHARED}) with the recordings in REAL_TRAINING_VOICES")
    y, _ = load_audio(path, sr=SR, mono=True)
    y = np.asarray(y, np.float32)
    n = len(y) // HOP_LENGTH + 1
    f0 = dsp_teacher_f0(y, n)
    trusted = np.ones(n, bool)
    if crepe:
        c = _crepe_full_f0(y)
        c = np.pad(c, (0, max(0, n - len(c))), mode="edge")[:n]
        voiced = f0 > 0
        cents = np.abs(1200 * np.log2(np.where(voiced, f0, 1.0) / np.where(voiced, np.maximum(c, 1.0), 1.0)))
        trusted &= ~voiced | (cents <= TEACHER_AGREEMENT_CENTS)
    return y, f0, trusted


def real_clip_arrays(seed: int, duration_s: float = 8.0, *, reverb_tail_s: float = 0.1, snr_power: float = 1.0,
                     bleed_p: float = 0.3, crepe: bool = True,
                     voices: tuple[tuple[str, str], ...] = REAL_TRAINING_VOICES,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Like :func:`clip_arrays`, from real voices: stretches of the recordings in ``voices``, each
    transposed by -4..+4 semitones (resampled, so it also runs faster or slower) and set 0.15-0.8 s
    apart, with backing bleed as often as the synthetic clips (``bleed_p``; a backing in a random
    key, since the voices sing no set key), then damaged like a phone take (:func:`phone_damage`). Labels come
    from :func:`real_voice_teacher`; untrusted frames, and voiced frames within 50 ms of a cut
    made to fit the clip, are left out of both losses."""
    import soxr

    rng = np.random.default_rng([seed, 31337])
    n_frames = round(duration_s * SR) // HOP_LENGTH
    total = n_frames * HOP_LENGTH
    y = np.zeros(total, np.float32)
    f0 = np.zeros(n_frames)
    untrusted = np.zeros(n_frames, bool)
    teachers = [real_voice_teacher(rel, crepe=crepe) for rel, _ in voices]
    weights = np.array([len(t[0]) for t in teachers], float)
    info: dict = {"seed": seed, "real": []}
    edge = round(0.05 * SR / HOP_LENGTH)
    at = int(rng.uniform(0.1, 0.6) * SR) // HOP_LENGTH  # frame where the next stretch starts
    while at < n_frames - round(0.5 * SR / HOP_LENGTH):
        k = int(rng.choice(len(teachers), p=weights / weights.sum()))
        audio, t_f0, t_ok = teachers[k]
        semitones = float(rng.uniform(-4.0, 4.0))
        ratio = 2.0 ** (semitones / 12)
        shifted = soxr.resample(audio, SR * ratio, SR).astype(np.float32)  # plays ratio x higher and faster
        # frame j of the shifted audio is frame j * ratio of the original
        m = len(shifted) // HOP_LENGTH + 1
        src = np.clip(np.round(np.arange(m) * ratio).astype(int), 0, len(t_f0) - 1)
        s_f0, s_ok = t_f0[src] * ratio, t_ok[src]
        room = n_frames - at
        longest = min(room, round(float(rng.uniform(2.0, 5.0)) * SR / HOP_LENGTH))
        first = int(rng.integers(0, max(1, m - longest)))
        take = min(longest, m - first)
        cut_start, cut_end = first > 0, first + take < m
        seg = shifted[first * HOP_LENGTH : (first + take) * HOP_LENGTH]
        fade = np.ones(len(seg), np.float32)
        ramp = min(160, len(seg) // 2)
        if cut_start:
            fade[:ramp] = np.linspace(0.0, 1.0, ramp)
        if cut_end:
            fade[len(seg) - ramp :] = np.linspace(1.0, 0.0, ramp)
        gain = float(10 ** (rng.uniform(-6.0, 0.0) / 20))
        y[at * HOP_LENGTH : at * HOP_LENGTH + len(seg)] += gain * seg * fade / max(float(np.abs(audio).max()), 1e-9)
        f0[at : at + take] = s_f0[first : first + take]
        untrusted[at : at + take] |= ~s_ok[first : first + take]
        if cut_start:
            untrusted[at : at + edge] |= f0[at : at + edge] > 0
        if cut_end:
            untrusted[at + take - edge : at + take] |= f0[at + take - edge : at + take] > 0
        info["real"].append({"file": voices[k][0], "semitones": round(semitones, 2), "at_s": at * HOP_LENGTH / SR,
                             "seconds": take * HOP_LENGTH / SR})
        at += take + round(float(rng.uniform(0.15, 0.8)) * SR / HOP_LENGTH)
    if rng.random() < bleed_p:
        key = Key(int(rng.integers(12)), str(rng.choice(list(MODES))))
        tempo = float(rng.uniform(60, 150))
        chords = generate_melody(key, tempo_bpm=tempo, duration_s=duration_s, seed=seed).chords
        backing = make_backing(key, tempo_bpm=tempo, duration_s=duration_s, sr=SR, chords=chords, seed=seed,
                               renderer="numpy")
        bleed_db = float(rng.uniform(-25.0, -8.0))
        y = y + degrade.speaker_bleed(backing.audio, SR, bleed_db=bleed_db, reference=y, seed=seed)[: len(y)]
        info["bleed_db"] = bleed_db
    y = phone_damage(y, rng, info, seed=seed, snr_power=snr_power)
    feats, _, level_db = spectrogram_features(y)
    n = min(len(feats), n_frames)
    x = model_inputs(feats[:n], level_features(level_db[:n])[0]).astype(np.float16)
    f0 = np.where(untrusted, 0.0, f0)[:n].astype(np.float32)
    ignore = voicing_ignore(f0, reverb="rir" in info, tail_s=reverb_tail_s) | untrusted[:n]
    return x, f0, ignore, info


def random_eq(y: np.ndarray, rng: np.random.Generator, info: dict) -> np.ndarray:
    """A random tone colour (different mics, mouths, nasal or hummed sounds): shelves and a peak,
    sometimes a steep low-pass that leaves little more than the fundamental."""
    import pedalboard as pb

    fx = [
        pb.LowShelfFilter(cutoff_frequency_hz=float(rng.uniform(150, 600)), gain_db=float(rng.uniform(-12, 12))),
        pb.HighShelfFilter(cutoff_frequency_hz=float(rng.uniform(1000, 4000)), gain_db=float(rng.uniform(-18, 6))),
        pb.PeakFilter(cutoff_frequency_hz=float(rng.uniform(300, 3000)), gain_db=float(rng.uniform(-10, 10)),
                      q=float(rng.uniform(0.7, 2.0))),
    ]
    if rng.random() < 0.2:
        cutoff = float(rng.uniform(300, 900))
        fx += [pb.LowpassFilter(cutoff_frequency_hz=cutoff), pb.LowpassFilter(cutoff_frequency_hz=cutoff)]
        info["hummed_lowpass_hz"] = cutoff
    info["eq"] = True
    out = pb.Pedalboard(fx)(np.ascontiguousarray(y, dtype=np.float32), SR)
    return out.astype(np.float32)


def voicing_ignore(f0: np.ndarray, *, reverb: bool, tail_s: float = 0.1, voice_level_db: np.ndarray | None = None,
                   faint_db: float | None = None) -> np.ndarray:
    """Frames whose voicing label is ambiguous, left out of the voicing loss: in a reverberant
    room, the first ``tail_s`` after a voiced stretch ends (it still sounds pitched although the
    singer stopped); with ``faint_db``, voiced frames where the dry voice (``voice_level_db``, per
    frame) is more than ``faint_db`` below its median over the voiced frames (the fade at a note's
    start and end, where the synthesiser's f0 is still defined but the voice is barely audible and
    human annotators usually call it unvoiced). Other frames at a voicing change keep their label,
    so the model learns sharp voicing edges (human annotations mark them tightly)."""
    v = f0 > 0
    ignore = np.zeros(len(v), bool)
    if faint_db is not None and voice_level_db is not None and v.any():
        ignore |= v & (voice_level_db < np.median(voice_level_db[v]) - faint_db)
    if not reverb:
        return ignore
    tail = int(round(tail_s / (HOP_LENGTH / SR)))
    for c in np.flatnonzero(v[:-1] & ~v[1:]):
        end = c + 1
        while end < len(v) and end <= c + tail and not v[end]:
            end += 1
        ignore[c + 1 : end] = True
    return ignore


def trim_releases(f0_frames: np.ndarray, voice_level_db: np.ndarray, *, end_db: float,
                  window_s: float = 0.3) -> np.ndarray:
    """``f0_frames`` with the quiet end of each phrase's release set to 0 (unvoiced).

    The synthetic voice stays voiced until its release has faded to nothing, but human annotators
    end a note near the start of its decay. A voiced stretch here ends at its last frame whose dry
    voice (``voice_level_db``, per frame) is within ``end_db`` of the loudest frame in the stretch's
    last ``window_s``; the frames after it, still fading, are labelled unvoiced."""
    out = np.asarray(f0_frames, np.float32).copy()
    v = out > 0
    w = max(1, round(window_s / (HOP_LENGTH / SR)))
    for last in np.flatnonzero(v & ~np.r_[v[1:], False]):
        first = last
        while first > 0 and v[first - 1] and first > last - w + 1:
            first -= 1
        ref = voice_level_db[first : last + 1].max()
        k = last
        while k > first and voice_level_db[k] < ref - end_db:
            k -= 1
        out[k + 1 : last + 1] = 0.0
    return out


def trim_to_teacher(f0_frames: np.ndarray, teacher_voiced: np.ndarray, *, max_trim_s: float = 0.15) -> np.ndarray:
    """``f0_frames`` with the end of each voiced stretch set to 0 (unvoiced) where a teacher
    tracker, run on the clean dry voice, already calls it unvoiced (at most ``max_trim_s`` per
    stretch, so a stretch the teacher misses entirely keeps its labels). Only note ends move:
    the teacher decides where a fading note stops being pitched, the synthesiser's truth the rest."""
    out = np.asarray(f0_frames, np.float32).copy()
    v = out > 0
    most = max(1, round(max_trim_s / (HOP_LENGTH / SR)))
    for last in np.flatnonzero(v & ~np.r_[v[1:], False]):
        k = last
        while k > last - most and v[k] and not teacher_voiced[k]:
            k -= 1
        if k > last - most and v[k]:  # the teacher is voiced here: the stretch ends at k
            out[k + 1 : last + 1] = 0.0
    return out


def dsp_teacher_f0(y: np.ndarray, n_frames: int) -> np.ndarray:
    """f0 (Hz, 0 = unvoiced) of the pYIN-style DSP tracker (``melisma.analysis.pitch.DspPitchTracker``,
    range widened to the training range) on clean audio, at the model's frame centres."""
    from melisma.analysis.pitch import DspPitchTracker

    track = DspPitchTracker(fmax_hz=1400.0).track(y, sr=SR)
    idx = np.clip(np.round(np.arange(n_frames) * (HOP_LENGTH / SR) / track.hop_s).astype(int), 0, len(track.hz) - 1)
    return np.asarray(track.hz, np.float64)[idx]


def dsp_teacher_voicing(dry: np.ndarray, n_frames: int) -> np.ndarray:
    """Voicing of :func:`dsp_teacher_f0` on the dry voice."""
    return dsp_teacher_f0(dry, n_frames) > 0


def frame_level_db(y: np.ndarray, n_frames: int, window_s: float = 0.02) -> np.ndarray:
    """RMS level (dB) of ``y`` in a ``window_s`` window centred on each model frame (i * 10 ms)."""
    w = round(window_s * SR)
    yp = np.pad(np.asarray(y, np.float64), (w // 2, n_frames * HOP_LENGTH + w))
    c = np.concatenate([[0.0], np.cumsum(yp ** 2)])
    starts = np.arange(n_frames) * HOP_LENGTH
    return 10.0 * np.log10((c[starts + w] - c[starts]) / w + 1e-12)


def frame_truth(f0_hz: np.ndarray, n_frames: int, truth_hop_s: float = 0.005) -> np.ndarray:
    """Truth f0 at the model's frame centres (frame i at i * 10 ms)."""
    idx = np.round(np.arange(n_frames) * (HOP_LENGTH / SR) / truth_hop_s).astype(int)
    out = np.zeros(n_frames, np.float32)
    ok = idx < len(f0_hz)
    out[ok] = f0_hz[idx[ok]]
    return out


def frame_labels(f0_hz: np.ndarray, dry: np.ndarray, n_frames: int, *, release_end_db: float | None = None,
                 end_teacher: str | None = None) -> np.ndarray:
    """The f0 label (0 = unvoiced) of each model frame: the truth (:func:`frame_truth`), with the
    note ends moved as ``release_end_db`` (:func:`trim_releases`) and ``end_teacher``
    (:func:`trim_to_teacher`) ask; ``dry`` is the clean synthetic voice."""
    f0_frames = frame_truth(f0_hz, n_frames)
    if release_end_db is not None:
        f0_frames = trim_releases(f0_frames, frame_level_db(dry, n_frames), end_db=release_end_db)
    if end_teacher == "dsp":
        f0_frames = trim_to_teacher(f0_frames, dsp_teacher_voicing(dry, n_frames))
    return f0_frames


def clip_arrays(seed: int, duration_s: float = 8.0, *, faint_db: float | None = None, reverb_tail_s: float = 0.1,
                bleed_p: float = 0.3, snr_power: float = 1.0, release_end_db: float | None = None,
                varied_releases: bool = False, end_teacher: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One clip's model inputs, f0 labels, voicing-ignore mask and settings (options: :data:`DATA_OPTIONS`)."""
    y, f0, info, dry = make_clip(seed, duration_s=duration_s, return_dry=True, bleed_p=bleed_p, snr_power=snr_power,
                                 varied_releases=varied_releases)
    feats, _, level_db = spectrogram_features(y)
    x = model_inputs(feats, level_features(level_db)[0]).astype(np.float16)
    f0_frames = frame_labels(f0, dry, len(feats), release_end_db=release_end_db, end_teacher=end_teacher)
    level_db = frame_level_db(dry, len(feats)) if faint_db is not None else None  # only the faint rule reads it
    ignore = voicing_ignore(f0_frames, reverb="rir" in info, tail_s=reverb_tail_s, voice_level_db=level_db,
                            faint_db=faint_db)
    return x, f0_frames, ignore, info


#: The options that change what goes into a data file (how clips are made and labelled), with
#: their argparse settings; ``train_pitch.py`` offers the same ones for its training clips.
DATA_OPTIONS: dict[str, dict] = {
    "faint_db": {"type": float, "default": None,
                 "help": "also leave out of the voicing loss voiced frames whose dry voice is this many dB "
                         "below its median (faint note starts and ends); default: off"},
    "reverb_tail_s": {"type": float, "default": 0.1,
                      "help": "in reverberant clips, leave this much after each voiced stretch out of the voicing "
                              "loss (0: label reverb tails unvoiced, as the dry reference does)"},
    "release_end_db": {"type": float, "default": None,
                       "help": "label the end of each phrase's release unvoiced once the dry voice has faded this "
                               "many dB (default: voiced until silent)"},
    "varied_releases": {"action": "store_true", "default": False,
                        "help": "vary phrase-end fades (30-200 ms, up to 30 dB breathier) and legato dips "
                                "(default: the voice's fixed ones)"},
    "end_teacher": {"choices": ["dsp"], "default": None,
                    "help": "end each voiced stretch where the pYIN-style DSP tracker, run on the dry voice, "
                            "stops (default: the synthesiser's truth)"},
    "bleed_p": {"type": float, "default": 0.3, "help": "probability of backing bleed in a clip"},
    "snr_power": {"type": float, "default": 1.0,
                  "help": "noise SNR = 35 dB x uniform^power (1: uniform 0-35 dB; 2: more low-SNR clips)"},
    "real_clips": {"type": int, "default": 0,
                   "help": "add this many clips made from the real voices in REAL_TRAINING_VOICES, labelled by "
                           "a teacher (the DSP tracker, checked by torchcrepe full; default: none)"},
}


def add_data_options(ap: argparse.ArgumentParser, *, scope: str = "") -> None:
    """Add :data:`DATA_OPTIONS` to ``ap`` (``scope`` prefixes each help text)."""
    for name, kw in DATA_OPTIONS.items():
        ap.add_argument("--" + name.replace("_", "-"), **{**kw, "help": scope + kw["help"]})


def data_option_defaults() -> dict:
    """Every option of :data:`DATA_OPTIONS` at its default."""
    return {name: kw["default"] for name, kw in DATA_OPTIONS.items()}


def data_options(args: argparse.Namespace) -> dict:
    """The :data:`DATA_OPTIONS` values in parsed ``args``."""
    return {name: getattr(args, name) for name in DATA_OPTIONS}


def data_options_argv(options: dict) -> list[str]:
    """Command-line flags for the options that differ from their defaults."""
    argv: list[str] = []
    for name, value in options.items():
        if value == DATA_OPTIONS[name]["default"]:
            continue
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def data_options_tag(options: dict) -> str:
    """A file-name tag for the options that differ from their defaults ('' for none)."""
    def text(value) -> str:
        return "" if value is True else f"{value:g}" if isinstance(value, float) else str(value)

    return "".join(f"_{name.replace('_', '')}{text(value)}"
                   for name, value in options.items() if value != DATA_OPTIONS[name]["default"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=1000)
    ap.add_argument("--seed-base", type=int, default=0)
    ap.add_argument("--duration-s", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=2)
    add_data_options(ap)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    seeds = [args.seed_base + i for i in range(args.clips)]
    t0 = time.time()
    options = data_options(args)
    real_clips = options.pop("real_clips")
    if real_clips < 0:
        ap.error(f"--real-clips {real_clips} is negative; use 0 (none) or more")
    one_clip = functools.partial(clip_arrays, duration_s=args.duration_s, **options)
    one_real = functools.partial(real_clip_arrays, duration_s=args.duration_s, reverb_tail_s=options["reverb_tail_s"],
                                 snr_power=options["snr_power"], bleed_p=options["bleed_p"])
    real_seeds = [REAL_SEED_OFFSET + args.seed_base + i for i in range(real_clips)]
    if args.workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers) as ex:
            results = list(ex.map(one_clip, seeds, chunksize=4)) + list(ex.map(one_real, real_seeds, chunksize=4))
    else:
        results = [one_clip(s) for s in seeds] + [one_real(s) for s in real_seeds]
    x = np.concatenate([r[0] for r in results])
    f0 = np.concatenate([r[1] for r in results])
    clip = np.concatenate([np.full(len(r[1]), i, np.int32) for i, r in enumerate(results)])
    ignore = np.concatenate([r[2] for r in results])
    infos = [r[3] for r in results]
    # written under a temporary name and renamed, so an interrupted run leaves no half file
    # that a later run would take for finished data
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.npz")
    np.savez(partial, x=x, f0_hz=f0, voicing_ignore=ignore, clip=clip, info=json.dumps(infos))
    partial.replace(out)
    print(f"{len(seeds)} synthetic + {len(real_seeds)} real-voice clips, {len(f0)} frames ({np.mean(f0 > 0):.2f} voiced, {np.mean(ignore):.3f} voicing-ignored) in {time.time() - t0:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
