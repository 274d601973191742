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
    "CorpusError", "hz_to_midi", "midi_to_hz",
    "Backing", "RenderedMidi", "fluidsynth_available", "make_backing", "make_backing_midi", "render_midi",
    "aac_round_trip", "add_hum", "add_noise", "add_reverb", "apply_offset", "band_limit", "clip",
    "codec_delay_samples", "make_noise", "phone_speaker", "speaker_bleed", "synthetic_rir", "write_aligned",
    "MODES", "Key", "Melody", "chord_progression", "generate_melody", "melody_to_midi",
    "Scenario", "load_truth", "make_scenario", "write_scenario",
    "F0_HOP_S", "ORNAMENT_DEFAULTS", "ORNAMENT_TYPES", "VOICES", "NoteSpec", "VoicePreset", "VoiceTake",
    "synthesize_voice",
]
