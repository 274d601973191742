"""Test scenarios: a backing, a synthetic sung take over it, phone degradations, exact truth.

The take is built the way a phone records a singer who sings along to the backing:

1. the clean vocal lies on the backing's timeline (``clean_vocal``);
2. with ``bleed_db`` the phone speaker's backing (band-limited, small) is added at that level
   relative to the voice (``bleed_db=None``: headphones, no bleed);
3. ``rir``: both go through the room;
4. ``offset_ms``: voice and bleed move later together (positive = the take is late);
5. ``snr_db`` noise (relative to the voice as it reaches the mic), ``hum_hz`` hum (``hum_db``
   relative to the voice);
6. ``mic='phone'``: the phone microphone's band limit (100 Hz - 7 kHz with a resonance);
7. ``clip_fraction``: driven into the converter so that fraction of samples clips;
8. ``aac_kbps``: AAC round trip, priming delay removed so the offset stays exact.

Every intermediate part is kept in ``Scenario.components`` on the take's timeline (before
steps 6-8), and ``Scenario.truth`` holds offset, key, tempo, notes, ornaments, the f0 track
(on the backing's timeline; add ``offset_ms`` for the take) and every degradation parameter.

Examples
--------
>>> from tools.corpus import make_scenario
>>> sc = make_scenario(seed=3, duration_s=4.0, sr=16000, offset_ms=120.0, backing_renderer="numpy")
>>> sc.take.shape, sc.backing.shape, sc.truth["offset_samples"]
((64000,), (2, 64000), 1920)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import degrade
from ._util import CorpusError, rms, rng_for
from .backing import DEFAULT_SOUNDFONT, make_backing, midi_bytes
from .melody import MODES, PITCH_NAMES, Key, generate_melody, melody_to_midi
from .voice import synthesize_voice

TRUTH_VERSION = 1


@dataclass
class Scenario:
    """A degraded take, its backing, the clean vocal and the ground truth (see module doc)."""

    take: np.ndarray  # (samples,) float32 at sr
    backing: np.ndarray  # (2, samples) float32 at sr
    clean_vocal: np.ndarray  # (samples,) float32, on the backing's timeline
    sr: int
    truth: dict[str, Any]
    melody_midi: Any  # mido.MidiFile of the intended melody
    backing_midi: Any  # mido.MidiFile of the backing
    components: dict[str, np.ndarray] = field(default_factory=dict)
    take_before_codec: np.ndarray | None = None

    @property
    def f0_hz(self) -> np.ndarray:
        """The truth f0 on the backing's timeline (hop ``truth['f0']['hop_s']``)."""
        return np.asarray(self.truth["f0"]["f0_hz"], dtype=np.float64)

    @property
    def hop_s(self) -> float:
        return float(self.truth["f0"]["hop_s"])

    @property
    def offset_ms(self) -> float:
        return float(self.truth["offset_ms"])


def _pick(rng: np.random.Generator, options: list[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def make_scenario(
    *,
    seed: int,
    duration_s: float = 10.0,
    sr: int = 48000,
    offset_ms: float = 0.0,
    bleed_db: float | None = None,
    snr_db: float | None = None,
    noise: str | os.PathLike = "pink",
    hum_hz: float | None = None,
    hum_db: float = -30.0,
    clip_fraction: float = 0.0,
    rir: str | os.PathLike | None = None,
    rt60_s: float = 0.4,
    aac_kbps: int | None = None,
    mic: str | None = "phone",
    key: Key | str | None = None,
    tempo_bpm: float | None = None,
    voice: str | None = None,
    ornaments: bool = True,
    ornament_rate: float = 1.0,
    detune_cents_max: float = 40.0,
    backing_renderer: str = "auto",
    fluidsynth_bin: str = "fluidsynth",
    soundfont: str = DEFAULT_SOUNDFONT,
    backing_db: float = -16.0,
    vocal_peak: float = 0.5,
) -> Scenario:
    """Build a scenario; everything follows from ``seed`` and the arguments.

    Parameters
    ----------
    seed : int
        Chooses key, tempo and voice when not given, the melody, ornaments and all noise.
    duration_s, sr : float, int
        Length and sample rate of take, backing and truth (any rate from 8 kHz).
    offset_ms : float
        How late the take is relative to the backing (negative: early). Applied in whole
        samples; ``truth['offset_ms']`` is the exact applied value.
    bleed_db : float or None
        Backing heard through the phone speaker, RMS relative to the voice (e.g. -10).
        None: headphones, no bleed.
    snr_db : float or None
        Voice-to-noise power ratio. ``noise``: 'pink', 'white', 'babble', 'fan' or a noise file.
    hum_hz, hum_db : mains hum at 50/60 Hz (+ harmonics), RMS relative to the voice.
    clip_fraction : fraction of samples driven past full scale (0: no clipping).
    rir : None, 'synthetic' (with ``rt60_s``) or a room impulse response file (channel 0).
    aac_kbps : None or an AAC bit rate in kb/s (e.g. 64) for a round trip.
    mic : 'phone' (band limit 100 Hz-7 kHz with a resonance) or None (flat).
    key, tempo_bpm, voice : musical choices (random from ``seed`` when None). ``key`` like
        'A minor' or 'D shang'; ``voice`` 'female', 'male' or 'child'.
    ornaments, ornament_rate, detune_cents_max : passed to the melody generator.
    backing_renderer : 'auto', 'fluidsynth' or 'numpy' (see :func:`tools.corpus.backing.render_midi`).
    backing_db : backing RMS in dBFS.
    vocal_peak : peak of the clean vocal.
    """
    if duration_s < 2.0:
        raise CorpusError(f"duration_s={duration_s}: use at least 2 s (a bar of backing and a phrase)")
    choice = rng_for(seed, "scenario")
    if key is None:
        key = Key(int(choice.integers(12)), _pick(choice, list(MODES)))
    key = Key.parse(key)
    if tempo_bpm is None:
        tempo_bpm = float(choice.integers(76, 128))
    if voice is None:
        voice = _pick(choice, ["female", "female", "male", "male", "child"])
    # the first phrase starts after one bar, but never later than a quarter of the take
    lead_in = min(240.0 / tempo_bpm, 0.25 * duration_s)
    melody = generate_melody(key, tempo_bpm=tempo_bpm, duration_s=duration_s, seed=seed, voice=voice,
                             ornaments=ornaments, ornament_rate=ornament_rate, detune_cents_max=detune_cents_max,
                             lead_in_s=lead_in)
    vocal = synthesize_voice(melody.notes, sr=sr, duration_s=duration_s, voice=voice, seed=seed, peak=vocal_peak)
    backing = make_backing(key, tempo_bpm=tempo_bpm, duration_s=duration_s, sr=sr, chords=melody.chords, seed=seed,
                           renderer=backing_renderer, fluidsynth_bin=fluidsynth_bin, soundfont=soundfont,
                           gain_db=backing_db)
    clean = vocal.audio
    components: dict[str, np.ndarray] = {}

    voice_at_mic = clean
    bleed = None
    if bleed_db is not None:
        bleed = degrade.speaker_bleed(backing.audio, sr, bleed_db=bleed_db, reference=clean, seed=seed)
    if rir is not None:
        voice_at_mic = degrade.add_reverb(voice_at_mic, sr, rir=rir, rt60_s=rt60_s, seed=seed)
        if bleed is not None:
            bleed = degrade.add_reverb(bleed, sr, rir=rir, rt60_s=rt60_s, seed=seed)
    voice_at_mic = degrade.apply_offset(voice_at_mic, sr, offset_ms=offset_ms)
    components["voice"] = voice_at_mic
    mix = voice_at_mic.copy()
    if bleed is not None:
        bleed = degrade.apply_offset(bleed, sr, offset_ms=offset_ms)
        components["bleed"] = bleed
        mix += bleed
    if snr_db is not None:
        noisy = degrade.add_noise(mix, sr, snr_db=snr_db, noise=noise, seed=seed, reference=voice_at_mic)
        components["noise"] = noisy - mix
        mix = noisy
    if hum_hz is not None:
        hummed = degrade.add_hum(mix, sr, hum_hz=hum_hz, hum_db=hum_db, seed=seed, reference=voice_at_mic)
        components["hum"] = hummed - mix
        mix = hummed
    if mic == "phone":
        mix = degrade.band_limit(mix, sr)
    elif mic is not None:
        raise CorpusError(f"mic={mic!r}: use 'phone' or None")
    drive_db = 0.0
    if clip_fraction > 0:
        mix, drive_db = degrade.clip(mix, fraction=clip_fraction)
    before_codec = mix.astype(np.float32)
    take = before_codec
    if aac_kbps is not None:
        take = degrade.aac_round_trip(before_codec, sr, bit_rate=int(aac_kbps * 1000))

    shift = degrade.offset_samples(offset_ms, sr)
    truth: dict[str, Any] = {
        "version": TRUTH_VERSION,
        "seed": seed,
        "sr": sr,
        "duration_s": duration_s,
        "offset_ms": shift * 1000.0 / sr,
        "offset_samples": shift,
        "offset_convention": "take[t + offset] = vocal[t]: positive means the take is late",
        "key": key.as_dict(),
        "tempo_bpm": melody.tempo_bpm,
        "beats_per_bar": melody.beats_per_bar,
        "chords": [[PITCH_NAMES[pc] for pc in chord] for chord in melody.chords],
        "voice": vocal.voice,
        "phrases": [{"start_s": a, "end_s": b} for a, b in melody.phrases],
        "notes": vocal.notes,
        "ornaments": vocal.ornaments,
        "consonants": vocal.consonants,
        "breaths": vocal.breaths,
        "f0": {"hop_s": vocal.hop_s, "timeline": "backing", "f0_hz": [round(float(f), 4) for f in vocal.f0_hz]},
        "backing": {"renderer": backing.renderer, "soundfont": Path(backing.soundfont).name if backing.soundfont else None,
                    "rms_dbfs": backing_db},
        "degradations": {
            "bleed_db": bleed_db, "snr_db": snr_db, "noise": str(noise) if snr_db is not None else None,
            "hum_hz": hum_hz, "hum_db": hum_db if hum_hz is not None else None,
            "clip_fraction": clip_fraction, "clip_drive_db": drive_db,
            "rir": (str(rir) if rir is not None else None), "rt60_s": rt60_s if str(rir) == "synthetic" else None,
            "aac_kbps": aac_kbps, "mic": mic,
        },
    }
    return Scenario(take=take, backing=backing.audio, clean_vocal=clean, sr=sr, truth=truth,
                    melody_midi=melody_to_midi(melody), backing_midi=backing.midi, components=components,
                    take_before_codec=before_codec)


def write_scenario(
    scenario: Scenario,
    directory: str | os.PathLike,
    *,
    take_format: str = "m4a",
    backing_format: str = "m4a",
    take_kbps: int | None = None,
    backing_kbps: int = 128,
    include_clean: bool = False,
    include_backing_midi: bool = True,
) -> dict[str, str]:
    """Write ``take.<fmt>``, ``backing.<fmt>``, ``melody.mid``, ``backing.mid`` (unless not
    ``include_backing_midi``), ``truth.json`` (and ``clean_vocal.flac`` with ``include_clean``)
    into ``directory``; returns the paths by name (take, backing, melody, backing_midi, truth, ...).

    Compressed files are written with the codec's priming delay removed, so that
    :func:`melisma.audio_io.load_audio` reads them on the truth's timeline. A take whose
    scenario had an AAC round trip is encoded once from the pre-codec signal at that bit rate
    (not twice); ``take_kbps`` overrides it.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for fmt in (take_format, backing_format):
        if fmt not in ("m4a", "wav", "flac", "mp3", "ogg"):
            raise CorpusError(f"format {fmt!r}: use m4a, wav, flac, mp3 or ogg")
    sr = scenario.sr
    paths = {}
    lossy = take_format in ("m4a", "mp3", "ogg")
    kbps = take_kbps or scenario.truth["degradations"].get("aac_kbps") or 128
    take = scenario.take_before_codec if (lossy and scenario.take_before_codec is not None
                                          and scenario.truth["degradations"].get("aac_kbps")) else scenario.take
    paths["take"] = str(out / f"take.{take_format}")
    degrade.write_aligned(paths["take"], take, sr, bit_rate=int(kbps * 1000) if lossy else None)
    paths["backing"] = str(out / f"backing.{backing_format}")
    degrade.write_aligned(paths["backing"], scenario.backing, sr,
                          bit_rate=int(backing_kbps * 1000) if backing_format in ("m4a", "mp3", "ogg") else None)
    if include_clean:
        paths["clean_vocal"] = str(out / "clean_vocal.flac")
        degrade.write_aligned(paths["clean_vocal"], scenario.clean_vocal, sr)
    midis = [("melody", scenario.melody_midi)] + ([("backing_midi", scenario.backing_midi)] if include_backing_midi else [])
    for name, mid in midis:
        path = out / ("melody.mid" if name == "melody" else "backing.mid")
        path.write_bytes(midi_bytes(mid))
        paths[name] = str(path)
    truth = dict(scenario.truth)
    truth["files"] = {k: Path(v).name for k, v in paths.items()}
    paths["truth"] = str(out / "truth.json")
    Path(paths["truth"]).write_text(json.dumps(truth, indent=1, default=_json_default) + "\n", encoding="utf-8")
    return paths


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load_truth(directory_or_file: str | os.PathLike) -> dict[str, Any]:
    """Read a truth.json written by :func:`write_scenario`."""
    p = Path(directory_or_file)
    if p.is_dir():
        p = p / "truth.json"
    return json.loads(p.read_text(encoding="utf-8"))


def voice_rms_db(scenario: Scenario) -> float:
    """RMS of the voice at the mic in dBFS (handy for level checks)."""
    return 20 * np.log10(rms(scenario.components["voice"]) + 1e-20)
