"""Synthetic test corpus: a singing voice with exactly known f0 and ornaments, song-like
backings from MIDI, phone-recording degradations and complete scenarios with ground truth.

Examples
--------
>>> from tools.corpus import make_scenario
>>> sc = make_scenario(seed=1, duration_s=4.0, sr=16000, offset_ms=180.0, snr_db=15.0,
...                    hum_hz=50, backing_renderer="numpy")
>>> sc.truth["offset_ms"], sc.take.dtype
(180.0, dtype('float32'))
"""

from ._util import CorpusError, hz_to_midi, midi_to_hz
from .backing import Backing, RenderedMidi, fluidsynth_available, make_backing, make_backing_midi, render_midi
from .degrade import (
    aac_round_trip,
    add_hum,
    add_noise,
    add_reverb,
    apply_offset,
    band_limit,
    clip,
    codec_delay_samples,
    make_noise,
    phone_speaker,
    speaker_bleed,
    synthetic_rir,
    write_aligned,
)
from .melody import MODES, Key, Melody, chord_progression, generate_melody, melody_to_midi
from .scenarios import Scenario, load_truth, make_scenario, write_scenario
from .voice import F0_HOP_S, ORNAMENT_DEFAULTS, ORNAMENT_TYPES, VOICES, NoteSpec, VoicePreset, VoiceTake, synthesize_voice

__all__ = [
    "F0_HOP_S",
    "MODES",
    "ORNAMENT_DEFAULTS",
    "ORNAMENT_TYPES",
    "VOICES",
    "Backing",
    "CorpusError",
    "Key",
    "Melody",
    "NoteSpec",
    "RenderedMidi",
    "Scenario",
    "VoicePreset",
    "VoiceTake",
    "aac_round_trip",
    "add_hum",
    "add_noise",
    "add_reverb",
    "apply_offset",
    "band_limit",
    "chord_progression",
    "clip",
    "codec_delay_samples",
    "fluidsynth_available",
    "generate_melody",
    "hz_to_midi",
    "load_truth",
    "make_backing",
    "make_backing_midi",
    "make_noise",
    "make_scenario",
    "melody_to_midi",
    "midi_to_hz",
    "phone_speaker",
    "render_midi",
    "speaker_bleed",
    "synthesize_voice",
    "synthetic_rir",
    "write_aligned",
    "write_scenario",
]
