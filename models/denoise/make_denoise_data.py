"""Training mixtures for the learned denoiser: voice + non-stationary noise, with ideal band gains.

Only permissively licensed recordings are used (each one's licence is in its folder's SOURCE.txt
under ``../shared/data``, or in ``EXTRA_VOICES`` for the few taken from public repositories); the
eval-only material (vocadito 1, SSVD, the MUSDB stems, GTSinger, the OpenAIR operatic voice) and the
HELD-OUT noises (``EVAL_NOISES``: doing the dishes, rain, the sauna, hens) are never read here.

Voice, per 4 s clip: 90 % (``REAL_VOICE_SHARE``) a real recording from ``TRAIN_VOICES`` and
``EXTRA_VOICES`` (3.1 min: 2.8 min of it singing; each drawn with a weight of its duration, up
to 20 s; a random excerpt placed at a random time, silence around it) made into another singer's
take by :func:`augment_real_voice` (resampled by up to ±4 semitones, sometimes band-limited to
4-16 kHz as a phone's codec does, sometimes tilted), 10 % a synthetic sung line (``tools.corpus``
melody + additive harmonic voice: vibrato, slides, grace notes, breaths, sibilant onsets,
jitter/shimmer). ``EXTRA_VOICES`` are not in ``../shared/data``: ``--get-extra MIRROR`` copies
them into ``build/denoise/voices`` (``MELISMA_EXTRA_VOICES``) from clones of their repositories.
Half the clips are convolved with a measured room (``TRAIN_RIRS``); the reverberant voice is the
target, so reverb tails are kept.

Noise, per clip: one or two of the real ``TRAIN_NOISES`` (random excerpts) and synthetic kinds
(pink/white/babble/fan through a random tilt, amplitude-modulated at 0.1-3 Hz; clatter: damped
resonances at random times, dish-like), at an SNR drawn from -5..25 dB (5 % noise-free, 5 % voice-free).

Per clip it stores the model's input features (:class:`melisma.render.learned_denoise.FeatureState`
on the noisy mix, with the silent context rows in front as at the start of a stream), the target
band gains sqrt(P_voice / P_mix) clipped to 1, a weight (0 in digital silence) and, per band, the
sums the loss needs to know the cleaned frame's error for any band gain and comb depth
(:func:`features_and_targets`). In 40 % of the
clips (``SPECTRAL_INPUT_SHARE``) the "mix" is the spectral denoiser's output on the noisy mix, as
the clean-up's 'hybrid' feeds the model, so the one model serves both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from scipy import signal

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from melisma.audio_io import load_audio  # noqa: E402
from melisma.render import learned_denoise as ld  # noqa: E402

from tools.corpus._util import smooth_noise  # noqa: E402
from tools.corpus.degrade import make_noise  # noqa: E402
from tools.corpus.melody import generate_melody  # noqa: E402
from tools.corpus.voice import synthesize_voice  # noqa: E402

DATA = Path(os.environ.get("MELISMA_DATA", REPO.parent / "shared" / "data"))
SR = ld.SR
CLIP_S = 4.0

#: (path under DATA, licence): real voice used for training.
TRAIN_VOICES = [
    ("smstools_sounds/singing-female.wav", "CC BY 4.0"),
    ("smstools_sounds/soprano-E4.wav", "CC BY 4.0"),
    ("smstools_sounds/vignesh.wav", "CC BY 4.0"),
    ("smstools_sounds/tibetan-chant.wav", "CC BY 4.0"),
    ("smstools_sounds/speech-female.wav", "CC BY 4.0"),
    ("smstools_sounds/speech-male.wav", "CC BY 4.0"),
    ("debian_voice_misc/puredata_voice.wav", "BSD-3-Clause"),
    ("debian_voice_misc/puredata_voice2.wav", "BSD-3-Clause"),
    ("debian_voice_misc/sonicpi_ambi_choir.flac", "CC0"),
]
#: Real voice used for training that is not in ``../shared/data``: (path under ``EXTRA_DIR``, licence,
#: where it comes from). ``python models/denoise/make_denoise_data.py --get-extra MIRROR`` copies them
#: there from a clone of each repository; the clips are not made without them.
EXTRA_VOICES = [
    ("spotify+basic-pitch/vocadito_10.wav", "CC BY 4.0 (vocadito, Bittner et al. 2021; singer S7, English)",
     "github.com/spotify/basic-pitch @ fa5997af0a8210982619003269994a1be25eddf3: tests/resources/vocadito_10.wav"),
    ("spotify+basic-pitch/vocadito_14.wav", "CC BY 4.0 (vocadito, Bittner et al. 2021; singer S11, English)",
     "github.com/spotify/basic-pitch @ fa5997af0a8210982619003269994a1be25eddf3: tests/resources/vocadito_14.wav"),
    # NIT SONG070 F001 (HTS Working Group, Nagoya Institute of Technology): one female singer, Japanese
    # children's songs, studio, dry; the licence is in nnsvs' tests/data/COPYING.
    ("nnsvs+nnsvs/nitech_jp_song070_f001_004.wav", "CC BY 3.0 (NIT SONG070 F001, HTS Working Group)",
     "github.com/nnsvs/nnsvs @ 4415519486422e01df875f2a8afd69aed76286dc: tests/data/nitech_jp_song070_f001_004.wav"),
    ("nnsvs+nnsvs/nitech_jp_song070_f001_007.wav", "CC BY 3.0 (NIT SONG070 F001, HTS Working Group)",
     "github.com/nnsvs/nnsvs @ 4415519486422e01df875f2a8afd69aed76286dc: tests/data/wav/nitech_jp_song070_f001_007.wav"),
    ("seaniezhao+torch_npss/nitech_jp_song070_f001_029.wav", "CC BY 3.0 (NIT SONG070 F001, HTS Working Group)",
     "github.com/seaniezhao/torch_npss @ c49dcb97e6fc11b5ac026799fcbed14aa0ed34aa: data/raw/nitech_jp_song070_f001_029.raw"),
    # VCTK speaker p286, the clean half of CSTR's noisy-speech database, as audiomentations' demo ships it
    ("iver56+audiomentations/p286_011.wav", "CC BY 4.0 (CSTR, University of Edinburgh; demo/p286_011_license)",
     "github.com/iver56/audiomentations @ 73b94488279feda6542a2813c70ed0d00b49ee4f: demo/p286_011.wav"),
]
EXTRA_DIR = Path(os.environ.get("MELISMA_EXTRA_VOICES", REPO / "build" / "denoise" / "voices"))
#: A real recording is drawn with a weight of its duration up to this (s), so a one-second sample is
#: not repeated as often as a song.
VOICE_WEIGHT_CAP_S = 20.0
#: Real noise used for training.
TRAIN_NOISES = [
    ("noise/speech_commands_bg/exercise_bike.wav", "CC BY 4.0"),
    ("noise/smstools/ocean.wav", "CC BY 4.0"),
    ("noise/sonicpi_cc0/vinyl_hiss.flac", "CC0"),
    ("noise/sonicpi_cc0/ambi_lunar_land.flac", "CC0"),
]
#: Held out: never used in training; tools/bench_denoise.py evaluates on them.
EVAL_NOISES = [
    ("noise/speech_commands_bg/doing_the_dishes.wav", "CC BY 4.0"),
    ("noise/smstools/rain.wav", "CC BY 4.0"),
    ("noise/sonicpi_cc0/ambi_sauna.flac", "CC0"),
    ("noise/audiomentations_demo/hens.ogg", "undocumented origin (MIT repo): evaluation only"),
]
#: Measured rooms used for training (channel 0 of multi-channel files).
TRAIN_RIRS = [
    ("rirs/spatialaudio_clap/rir_clap.wav", "CC0"),
    ("rirs/openair_toobamp/Arthur Sykes Rymer Auditorium.wav", "CC BY 4.0"),
    ("rirs/openair_toobamp/Genesis 6 Studio Live Room.wav", "CC BY 4.0"),
    ("rirs/openair_toobamp/Jack Lyons Hall, University of York.wav", "CC BY 4.0"),
    ("rirs/openair_toobamp/St. Margaret's Church.wav", "CC BY 4.0"),
]
#: Share of clips whose voice is a real recording (the rest: generated singing).
REAL_VOICE_SHARE = 0.9
#: Share of clips whose model input is the spectral denoiser's output (what the 'hybrid' clean-up feeds
#: the model) instead of the noisy take itself; the target gains are then relative to that output.
SPECTRAL_INPUT_SHARE = 0.4
#: Bumped whenever the clips change, so a cached set of another version is not reused.
DATA_VERSION = 5
SYNTH_NOISES = ("pink", "white", "babble", "fan", "clatter")
KEYS = ("C major", "D major", "E minor", "F major", "G major", "A minor", "Bb major", "B minor", "Eb major", "F# minor")

_CACHE: dict[str, np.ndarray] = {}


def load(rel: str, *, root: Path = DATA) -> np.ndarray:
    """A recording under ``root`` (DATA by default) as mono float32 at 48 kHz (cached)."""
    key = str(root / rel)
    if key not in _CACHE:
        if not (root / rel).is_file():
            hint = ("copy the extra voices there with `make_denoise_data.py --get-extra MIRROR` (see EXTRA_VOICES)"
                    if root == EXTRA_DIR else "point MELISMA_DATA at the shared data")
            raise SystemExit(f"training voice/noise {root / rel} is missing: {hint}")
        x, _ = load_audio(root / rel, sr=SR, mono=True)
        x = np.asarray(x, np.float64)
        _CACHE[key] = (x - x.mean()).astype(np.float32)
    return _CACHE[key]


def real_voices() -> tuple[list[np.ndarray], np.ndarray]:
    """Every real training voice and the probability of drawing each (its duration, capped)."""
    voices = [load(rel) for rel, _ in TRAIN_VOICES] + [load(rel, root=EXTRA_DIR) for rel, _, _ in EXTRA_VOICES]
    weights = np.array([min(v.size / SR, VOICE_WEIGHT_CAP_S) for v in voices])
    return voices, weights / weights.sum()


def _excerpt(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    start = int(rng.integers(0, x.size))
    reps = int(np.ceil((n + start) / x.size)) + 1
    return np.tile(x, reps)[start : start + n]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)) + 1e-12)


def augment_real_voice(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A real recording made into another singer's take: resampled by up to ±4 semitones (pitch, formants
    and tempo move together), sometimes band-limited as a phone's codec does (4-16 kHz) and tilted."""
    ratio = 2.0 ** (rng.uniform(-4.0, 4.0) / 12.0)
    n_out = int(round(x.size / ratio))
    y = signal.resample_poly(x.astype(np.float64), 1000, int(round(1000 * ratio)))[:n_out] if abs(ratio - 1) > 1e-3 else x.astype(np.float64)
    if rng.random() < 0.5:
        sos = signal.butter(8, rng.uniform(4000.0, 16000.0), "lowpass", fs=SR, output="sos")
        y = signal.sosfilt(sos, y)
    if rng.random() < 0.5:
        pole = rng.uniform(-0.5, 0.5)  # a gentle spectral tilt (mic and room colour)
        y = signal.lfilter([1.0 - pole], [1.0, -pole], y) if pole > 0 else signal.lfilter([1.0, pole], [1.0 + pole], y)
    return y.astype(np.float32)


def make_voice(n: int, rng: np.random.Generator) -> np.ndarray:
    """A voice clip of ``n`` samples (real excerpt or synthetic line), peak 1-ish, possibly reverberant."""
    if rng.random() < REAL_VOICE_SHARE:
        voices, p = real_voices()
        src = augment_real_voice(voices[int(rng.choice(len(voices), p=p))], rng)
        length = int(min(src.size, rng.uniform(0.5, 1.0) * n))
        seg = _excerpt(src, length, rng)
        seg = seg * np.minimum(1.0, np.minimum(np.arange(length), np.arange(length)[::-1]) / (0.01 * SR))
        v = np.zeros(n, np.float32)
        at = int(rng.integers(0, n - length + 1))
        v[at : at + length] = seg
    else:
        voice = str(rng.choice(["female", "male", "child"], p=[0.45, 0.45, 0.1]))
        mel = generate_melody(str(rng.choice(KEYS)), tempo_bpm=float(rng.uniform(60, 160)), duration_s=CLIP_S + 1.0,
                              seed=int(rng.integers(1 << 30)), voice=voice, ornament_rate=float(rng.uniform(0.5, 2.0)),
                              lead_in_s=float(rng.uniform(0.0, 1.0)))
        take = synthesize_voice(mel.notes, sr=SR, voice=voice, seed=int(rng.integers(1 << 30)),
                                max_harmonic_hz=float(rng.uniform(7000, 18000)), duration_s=CLIP_S + 1.0)
        v = _excerpt(take.audio, n, rng) if take.audio.size < n else take.audio[int(rng.integers(0, take.audio.size - n + 1)):][:n]
    if rng.random() < 0.5:
        rir = load(TRAIN_RIRS[int(rng.integers(len(TRAIN_RIRS)))][0])
        rir = rir[int(np.argmax(np.abs(rir))):]  # from the direct sound on
        rir = rir / (np.abs(rir[0]) + 1e-9)
        wet = signal.fftconvolve(v, rir[: int(1.5 * SR)])[:n]
        mix = rng.uniform(0.1, 0.7)
        v = (1.0 - mix) * v + mix * wet * (_rms(v) / _rms(wet))
    return (v / (np.abs(v).max() + 1e-9)).astype(np.float32)


def _clatter(n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    for _ in range(int(rng.poisson(rng.uniform(1.0, 8.0) * n / SR)) + 1):
        length = int(rng.uniform(0.02, 0.25) * SR)
        t = np.arange(length) / SR
        burst = np.zeros(length)
        for _k in range(int(rng.integers(1, 4))):
            f = rng.uniform(700, 9000)
            burst += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) * np.exp(-t / rng.uniform(0.005, 0.08))
        burst += 0.3 * rng.standard_normal(length) * np.exp(-t / 0.004)
        at = int(rng.integers(0, n))
        seg = burst[: n - at] * rng.uniform(0.1, 1.0)
        out[at : at + seg.size] += seg
    return out


def make_noise_clip(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS non-stationary noise: one or two real or synthetic sources, modulated."""
    out = np.zeros(n)
    for _ in range(1 + int(rng.random() < 0.4)):
        if rng.random() < 0.45:
            x = _excerpt(load(TRAIN_NOISES[int(rng.integers(len(TRAIN_NOISES)))][0]), n, rng).astype(np.float64)
        else:
            kind = str(rng.choice(SYNTH_NOISES))
            if kind == "clatter":
                x = _clatter(n, rng)
            else:
                x = make_noise(kind, n, SR, seed=int(rng.integers(1 << 30))).astype(np.float64)
                pole = rng.uniform(-0.9, 0.95)  # a random spectral tilt
                x = signal.lfilter([1.0], [1.0, -pole], x)
        if rng.random() < 0.6:  # swells and fades (traffic, a tap running, a fan turned)
            env = np.exp(rng.uniform(0.3, 1.5) * smooth_noise(n, rate_hz=float(rng.uniform(0.1, 3.0)), sr=SR, rng=rng))
            x = x * env
        out += x / _rms(x) * rng.uniform(0.3, 1.0)
    return (out / _rms(out)).astype(np.float32)


def clip_arrays(seed: int) -> dict[str, np.ndarray]:
    """One training clip: features (past + frames, N_FEATURES), target gains and weights (frames - lookahead, N_BANDS)."""
    rng = np.random.default_rng([seed, 20251202])
    n = int(CLIP_S * SR)
    u = rng.random()
    voice = make_voice(n, rng) if u >= 0.05 else np.zeros(n, np.float32)
    noise = make_noise_clip(n, rng)
    level = 10 ** (rng.uniform(-32, -3) / 20.0)
    voice *= level
    active = np.abs(voice) > 0.01 * level
    v_rms = _rms(voice[active]) if active.any() else level * 0.2
    snr = 60.0 if u > 0.95 else rng.uniform(-5, 25)
    noise *= v_rms * 10 ** (-snr / 20.0)
    mix = voice + noise
    peak = np.abs(mix).max()
    if peak > 0.99:
        mix, voice = mix * (0.99 / peak), voice * (0.99 / peak)
    mix = mix.astype(np.float32)
    if rng.random() < SPECTRAL_INPUT_SHARE:
        mix = spectral_denoise(mix)
    return features_and_targets(mix, voice.astype(np.float32))


def spectral_denoise(x: np.ndarray) -> np.ndarray:
    """The spectral denoiser as the 'hybrid' clean-up runs it before the model (its own noise profile, 12 dB)."""
    from melisma.analysis.cleanup import analyze_cleanup
    from melisma.render.clean import SpectralDenoiser

    noise = analyze_cleanup(x, sr=SR)["noise"]
    return np.asarray(SpectralDenoiser(reduction_db=12.0, noise=noise).denoise(x, SR), np.float32)


def stft_power(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames as the stage makes them (a hop of zeros in front): complex spectra and power."""
    padded = np.concatenate([np.zeros(ld.N_FFT - ld.HOP, np.float32), x])
    m = (padded.size - ld.N_FFT) // ld.HOP + 1
    frames = np.lib.stride_tricks.sliding_window_view(padded, ld.N_FFT)[:: ld.HOP][:m]
    spec = np.fft.rfft(frames * ld._WINDOW, axis=1).astype(np.complex64)
    return spec, ld.frame_power(spec)


def features_and_targets(mix: np.ndarray, voice: np.ndarray) -> dict[str, np.ndarray]:
    """Model input rows for ``mix``, the ideal band gains that turn it into ``voice``, and the comb's error terms.

    ``r`` (frames, 6 * N_BANDS) holds, per band, the sums over its bins (triangle-weighted) of
    ``P_voice``, ``u P_voice``, ``u^2 P_voice``, then the same of the noise (``mix - voice``), where
    ``u = 1 - comb_shape(f0)`` on the mix's own f0 pick; each over the frame's mix power. With them
    the training loss knows, for any band gain ``g`` and comb depth ``c``, how much voice the band
    loses (``sum (1 - g m)^2 P_voice``, ``m = 1 - c u``) and how much noise it keeps
    (``sum g^2 m^2 P_noise``): the cleaned frame's error, as the stage would make it.
    """
    s_mix, p_mix = stft_power(mix)
    s_voice, p_voice = stft_power(voice)
    past = ld.CONTEXT_FRAMES - 1 - ld.LOOKAHEAD_FRAMES
    features, f0 = ld.FeatureState().features_and_f0(p_mix)
    rows = np.concatenate([np.repeat(ld.pad_features()[None], past, axis=0), features])
    b_mix = p_mix @ ld._WEIGHTS_T
    b_voice = p_voice @ ld._WEIGHTS_T
    gains = np.sqrt(np.clip(b_voice / np.maximum(b_mix, 1e-20), 0.0, 1.0))
    weight = (b_mix > 1e-9 * ld.N_BINS / ld.N_BANDS).astype(np.float32)
    u = 1.0 - ld.comb_shape(f0)
    p_noise = ld.frame_power(s_mix - s_voice)
    terms = [(p * u**k) @ ld._WEIGHTS_T for p in (p_voice, p_noise) for k in (0, 1, 2)]
    total = np.maximum(b_mix.sum(axis=1, keepdims=True), 1e-12)
    m = p_mix.shape[0] - ld.LOOKAHEAD_FRAMES
    r = np.concatenate(terms, axis=1) / total
    return {"x": rows.astype(np.float16), "y": gains[:m].astype(np.float16), "w": weight[:m].astype(np.float16),
            "r": r[:m].astype(np.float16)}


def make_dataset(n_clips: int, *, seed: int = 0, workers: int = 2, verbose: bool = False) -> dict[str, np.ndarray]:
    """``n_clips`` clips stacked: x (n, rows, N_FEATURES), y and w (n, frames, N_BANDS), r (n, frames, 6 * N_BANDS)."""
    seeds = [seed * 1_000_003 + i for i in range(n_clips)]
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            clips = []
            for i, c in enumerate(pool.imap(clip_arrays, seeds, chunksize=8)):
                clips.append(c)
                if verbose and (i + 1) % 200 == 0:
                    print(f"  {i + 1}/{n_clips} clips", flush=True)
    else:
        clips = [clip_arrays(s) for s in seeds]
    return {k: np.stack([c[k] for c in clips]) for k in ("x", "y", "w", "r")}


def get_extra(mirror: Path) -> None:
    """Copy EXTRA_VOICES into EXTRA_DIR from ``mirror``/<owner+name>/ (a clone, or a bare mirror in its ``repo/``)."""
    import subprocess
    import wave

    for rel, _, origin in EXTRA_VOICES:
        repo_dir = mirror / rel.split("/")[0]
        commit, path = origin.split(" @ ")[1].split(": ")
        bare = repo_dir / "repo" if (repo_dir / "repo" / "HEAD").is_file() else repo_dir
        where = [f"--git-dir={bare}"] if (bare / "HEAD").is_file() else ["-C", str(repo_dir)]
        try:
            blob = subprocess.run(["git", *where, "cat-file", "-p", f"{commit}:{path}"], check=True,
                                  capture_output=True).stdout
        except (OSError, subprocess.CalledProcessError):
            raise SystemExit(f"{origin}: not found under {repo_dir}; clone the repository there") from None
        out = EXTRA_DIR / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".part")
        if path.endswith(".raw"):  # headerless 16-bit little-endian mono at 48 kHz, as HTS ships it
            with wave.open(str(tmp), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(48000)
                w.writeframes(blob)
        else:
            tmp.write_bytes(blob)
        tmp.replace(out)
        print(f"{out} <- {origin}")


if __name__ == "__main__":
    import time

    if len(sys.argv) == 3 and sys.argv[1] == "--get-extra":
        get_extra(Path(sys.argv[2]))
        raise SystemExit(0)

    t0 = time.time()
    d = make_dataset(8, workers=1)
    print({k: v.shape for k, v in d.items()}, f"{time.time() - t0:.1f} s for 8 clips",
          "mean target gain", float(d["y"].astype(np.float32).mean()))
