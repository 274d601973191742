"""Song-like backing tracks (chords, bass, drums) written as MIDI and rendered to audio.

Rendering uses fluidsynth with the General MIDI soundfont FluidR3_GM (Debian ``fluidsynth`` +
``fluid-soundfont-gm``, MIT) when installed, else a small pure-numpy synth that plays the same
MIDI (the result says which was used). Renders are cached on disk by content hash, so a test
suite that builds many scenarios runs fluidsynth once per distinct backing.

Examples
--------
>>> from tools.corpus.melody import Key
>>> from tools.corpus.backing import make_backing_midi, render_midi
>>> mid = make_backing_midi(Key.parse("A minor"), tempo_bpm=100, duration_s=4.0, seed=1)
>>> out = render_midi(mid, sr=16000, duration_s=4.0, renderer="numpy")
>>> out.audio.shape, out.renderer
((2, 64000), 'numpy')
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._util import CorpusError, rng_for
from .melody import Key, _append_events, chord_progression

DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
DRUM_CHANNEL = 9
KICK, SNARE, HAT_CLOSED, CRASH = 36, 38, 42, 49
#: GM programs: chords, bass.
CHORD_PROGRAM, BASS_PROGRAM = 4, 33  # Electric Piano 1, Electric Bass (finger)


def cache_dir() -> Path:
    """Where rendered backings are cached (``MELISMA_CORPUS_CACHE`` or a folder in the temp dir)."""
    path = Path(os.environ.get("MELISMA_CORPUS_CACHE", Path(tempfile.gettempdir()) / "melisma-corpus-cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_backing_midi(
    key: Key | str,
    *,
    tempo_bpm: float,
    duration_s: float,
    chords: list[list[int]] | None = None,
    seed: int = 0,
    ticks_per_beat: int = 480,
) -> Any:
    """A backing as a :class:`mido.MidiFile`: chords (electric piano), bass and a drum kit.

    One chord per 4/4 bar (default: :func:`~tools.corpus.melody.chord_progression`), the bass on
    the root with a passing fifth, kick on 1 and 3, snare on 2 and 4, closed hats on eighths,
    a crash on bar one. It runs ``duration_s`` and then lets the last chord ring out.
    """
    import mido

    key = Key.parse(key)
    beat = 60.0 / tempo_bpm
    bar = 4 * beat
    n_bars = max(1, int(np.ceil(duration_s / bar)))
    if chords is None:
        chords = chord_progression(key, n_bars, seed=seed)
    rng = rng_for(seed, "backing")
    mid = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    meta = mido.MidiTrack()
    mid.tracks.append(meta)
    meta.append(mido.MetaMessage("track_name", name="backing", time=0))
    meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
    meta.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    meta.append(mido.MetaMessage("key_signature", key=_midi_key_name(key), time=0))

    chord_events, bass_events, drum_events = [], [], []
    for b in range(n_bars):
        t0 = b * bar
        if t0 >= duration_s:
            break
        pcs = chords[b % len(chords)]
        root = pcs[0]
        voicing = sorted(_nearest(pc, 60) for pc in pcs)  # close voicing around middle C
        pattern = [(0.0, 2.0), (2.0, 1.5), (3.5, 0.5)] if rng.random() < 0.5 else [(0.0, 4.0)]
        for beat_pos, length in pattern:
            s, e = t0 + beat_pos * beat, min(duration_s, t0 + (beat_pos + length) * beat - 0.02)
            for m in voicing:
                vel = int(rng.integers(62, 78))
                chord_events += [(s, 1, m, vel), (e, 0, m, 0)]
        bass_root = _nearest(root, 40)
        for beat_pos, note in ((0, bass_root), (1.5, bass_root), (2, bass_root + 7 if rng.random() < 0.5 else bass_root),
                               (3, bass_root)):
            s = t0 + beat_pos * beat
            if s >= duration_s:
                continue
            e = min(duration_s, s + 0.45 * beat)
            bass_events += [(s, 1, note, int(rng.integers(85, 100))), (e, 0, note, 0)]
        for eighth in range(8):
            s = t0 + eighth * beat / 2
            if s >= duration_s:
                continue
            hits = [(HAT_CLOSED, 60 + 15 * (eighth % 2 == 0))]
            if eighth in (0, 4):
                hits.append((KICK, 105))
            if eighth == 5 and rng.random() < 0.3:
                hits.append((KICK, 85))
            if eighth in (2, 6):
                hits.append((SNARE, 100))
            if eighth == 0 and b == 0:
                hits.append((CRASH, 90))
            for note, vel in hits:
                drum_events += [(s, 1, note, vel), (s + 0.1, 0, note, 0)]

    for name, channel, program, events in (("chords", 0, CHORD_PROGRAM, chord_events),
                                           ("bass", 1, BASS_PROGRAM, bass_events),
                                           ("drums", DRUM_CHANNEL, None, drum_events)):
        track = mido.MidiTrack()
        mid.tracks.append(track)
        track.append(mido.MetaMessage("track_name", name=name, time=0))
        if program is not None:
            track.append(mido.Message("program_change", program=program, channel=channel, time=0))
        _append_events(track, events, tempo_bpm, ticks_per_beat, channel)
    return mid


def _nearest(pc: int, around: int) -> int:
    base = around - (around % 12) + pc
    return min((base - 12, base, base + 12), key=lambda m: abs(m - around))


def _midi_key_name(key: Key) -> str:
    names = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
    if key.mode == "minor":  # the spellings MIDI key signatures allow
        return ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")[key.tonic] + "m"
    if key.mode == "major":
        return names[key.tonic]
    gong = (key.tonic - {"gong": 0, "shang": 2, "jue": 4, "zhi": 7, "yu": 9}[key.mode]) % 12
    return names[gong]  # a pentatonic mode is written with its gong's major key signature


@dataclass
class RenderedMidi:
    """Stereo float32 audio of a MIDI file and how it was made."""

    audio: np.ndarray
    sr: int
    renderer: str  # 'fluidsynth' or 'numpy'
    soundfont: str | None


def midi_bytes(mid: Any) -> bytes:
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def fluidsynth_available(fluidsynth_bin: str = "fluidsynth", soundfont: str = DEFAULT_SOUNDFONT) -> bool:
    return shutil.which(fluidsynth_bin) is not None and Path(soundfont).is_file()


def render_midi(
    mid: Any,
    *,
    sr: int = 48000,
    duration_s: float | None = None,
    renderer: str = "auto",
    fluidsynth_bin: str = "fluidsynth",
    soundfont: str = DEFAULT_SOUNDFONT,
    gain_db: float = -14.0,
    use_cache: bool = True,
) -> RenderedMidi:
    """Render a :class:`mido.MidiFile` (or a path) to stereo float32 at ``sr``.

    ``renderer``: 'fluidsynth', 'numpy' or 'auto' (fluidsynth when ``fluidsynth_bin`` is on the
    PATH and ``soundfont`` exists, else numpy). Point ``fluidsynth_bin`` at a missing program to
    exercise the fallback. The output is cut or zero-padded to ``duration_s`` and scaled so its
    RMS is ``gain_db`` dBFS (peaks kept below 0.95).
    """
    import mido

    if not isinstance(mid, mido.MidiFile):
        mid = mido.MidiFile(str(mid))
    if renderer not in ("auto", "fluidsynth", "numpy"):
        raise CorpusError(f"renderer={renderer!r}: use 'auto', 'fluidsynth' or 'numpy'")
    have_fs = fluidsynth_available(fluidsynth_bin, soundfont)
    if renderer == "fluidsynth" and not have_fs:
        raise CorpusError(f"fluidsynth ({fluidsynth_bin}) or the soundfont {soundfont} is missing; "
                          "install Debian fluidsynth + fluid-soundfont-gm, or use renderer='numpy'")
    use_fs = renderer == "fluidsynth" or (renderer == "auto" and have_fs)
    if duration_s is None:
        duration_s = mid.length
    n = int(round(duration_s * sr))
    if use_fs:
        audio = _render_fluidsynth(mid, sr, fluidsynth_bin, soundfont, use_cache)
        used = "fluidsynth"
    else:
        audio = render_midi_numpy(mid, sr=sr)
        used = "numpy"
    if audio.shape[1] < n:
        audio = np.pad(audio, ((0, 0), (0, n - audio.shape[1])))
    audio = audio[:, :n].astype(np.float64)
    level = np.sqrt(np.mean(audio**2)) if audio.size else 0.0
    if level > 0:
        audio *= 10 ** (gain_db / 20.0) / level
        peak = np.max(np.abs(audio))
        if peak > 0.95:
            audio *= 0.95 / peak
    return RenderedMidi(audio=audio.astype(np.float32), sr=sr, renderer=used, soundfont=soundfont if use_fs else None)


def _render_fluidsynth(mid: Any, sr: int, fluidsynth_bin: str, soundfont: str, use_cache: bool) -> np.ndarray:
    from melisma.audio_io import load_audio

    data = midi_bytes(mid)
    digest = hashlib.sha256(data + f"|{sr}|{Path(soundfont).name}|{Path(soundfont).stat().st_size}".encode()).hexdigest()[:24]
    cached = cache_dir() / f"fs-{digest}.npy"
    if use_cache and cached.is_file():
        try:
            return np.load(cached)
        except (OSError, ValueError):
            pass
    with tempfile.TemporaryDirectory(prefix="melisma-fs-") as tmp:
        mid_path, wav_path = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        mid_path.write_bytes(data)
        cmd = [fluidsynth_bin, "-ni", "-q", "-o", "audio.file.format=float", "-F", str(wav_path), "-r", str(sr),
               soundfont, str(mid_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not wav_path.is_file():
            raise CorpusError(f"fluidsynth failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
        audio, file_sr = load_audio(wav_path)
    if file_sr != sr:
        from melisma.audio_io import resample

        audio = resample(audio, orig_sr=file_sr, target_sr=sr)
    if audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    if use_cache:
        tmp_path = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp_path, audio)
        os.replace(tmp_path, cached)
    return audio


def _midi_notes(mid: Any) -> list[tuple[float, float, int, int, int, int]]:
    """(start_s, end_s, channel, program, note, velocity) for every note in the file."""
    notes = []
    active: dict[tuple[int, int], tuple[float, int, int]] = {}
    program = {c: 0 for c in range(16)}
    now = 0.0
    for msg in mid:  # merged tracks, time in seconds
        now += msg.time
        if msg.type == "program_change":
            program[msg.channel] = msg.program
        elif msg.type == "note_on" and msg.velocity > 0:
            active[(msg.channel, msg.note)] = (now, msg.velocity, program[msg.channel])
        elif msg.type in ("note_off", "note_on"):
            start = active.pop((msg.channel, msg.note), None)
            if start is not None:
                notes.append((start[0], now, msg.channel, start[2], msg.note, start[1]))
    return notes


def render_midi_numpy(mid: Any, *, sr: int = 48000, tail_s: float = 1.0) -> np.ndarray:
    """A small pure-numpy GM-ish synth: enough for a backing with chords, bass and drums.

    Melodic channels: a few decaying harmonics (piano-like for chords, round for bass); drums:
    pitched-down sine kick, noise+tone snare, high-passed noise hats, long noise crash.
    Stereo by fixed panning per channel. Deterministic.
    """
    from scipy.signal import butter, sosfilt

    notes = _midi_notes(mid)
    end = max((n[1] for n in notes), default=0.0) + tail_s
    out = np.zeros((2, int(np.ceil(end * sr)) + 1))
    rng = rng_for(0, "numpy-synth")
    hp = butter(2, min(7000.0, 0.4 * sr) / (sr / 2), btype="highpass", output="sos")
    for start, stop, channel, program, note, vel in notes:
        a = int(start * sr)
        amp = (vel / 127.0) ** 1.5
        if channel == DRUM_CHANNEL:
            if note in (35, KICK):
                length = int(0.25 * sr)
                t = np.arange(length) / sr
                freq = 50.0 + 90.0 * np.exp(-t / 0.03)
                sig = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / 0.12) * 1.2
            elif note in (38, 40):
                length = int(0.2 * sr)
                t = np.arange(length) / sr
                sig = (0.6 * rng.standard_normal(length) + 0.5 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t / 0.06)
            elif note in (49, 57):
                length = int(1.2 * sr)
                t = np.arange(length) / sr
                sig = sosfilt(hp, rng.standard_normal(length)) * np.exp(-t / 0.5) * 0.6
            else:
                length = int(0.06 * sr)
                t = np.arange(length) / sr
                sig = sosfilt(hp, rng.standard_normal(length)) * np.exp(-t / 0.02) * 0.5
            pan = 0.5 if note in (35, KICK, 38, 40) else 0.65
        else:
            f0 = 440.0 * 2 ** ((note - 69) / 12)
            is_bass = 32 <= program <= 39
            length = int((stop - start + (0.08 if is_bass else 0.3)) * sr)
            t = np.arange(length) / sr
            harmonics = (1.0, 0.35, 0.1) if is_bass else (1.0, 0.5, 0.3, 0.15, 0.08)
            decay = 1.5 if is_bass else 0.9
            sig = np.zeros(length)
            for k, g in enumerate(harmonics, start=1):
                if k * f0 < 0.45 * sr:
                    sig += g * np.sin(2 * np.pi * k * f0 * t) * np.exp(-t * k / decay)
            release = np.clip((stop - start + (0.08 if is_bass else 0.3) - t) / (0.08 if is_bass else 0.3), 0, 1)
            attack = np.clip(t / 0.005, 0, 1)
            sig *= release * attack * (0.9 if is_bass else 0.35)
            pan = 0.5 if is_bass else (0.35 if channel % 2 == 0 else 0.65)
        b = min(out.shape[1], a + sig.size)
        sig = sig[: b - a] * amp
        out[0, a:b] += sig * np.sqrt(1 - pan)
        out[1, a:b] += sig * np.sqrt(pan)
    return out.astype(np.float32)


@dataclass
class Backing:
    """A rendered backing with its MIDI and musical truth."""

    audio: np.ndarray  # (2, samples) float32
    sr: int
    midi: Any  # mido.MidiFile
    key: Key
    tempo_bpm: float
    chords: list[list[int]]
    renderer: str
    soundfont: str | None


def make_backing(
    key: Key | str,
    *,
    tempo_bpm: float,
    duration_s: float,
    sr: int = 48000,
    chords: list[list[int]] | None = None,
    seed: int = 0,
    renderer: str = "auto",
    fluidsynth_bin: str = "fluidsynth",
    soundfont: str = DEFAULT_SOUNDFONT,
    gain_db: float = -14.0,
) -> Backing:
    """Write the backing MIDI and render it (see :func:`make_backing_midi`, :func:`render_midi`)."""
    key = Key.parse(key)
    n_bars = max(1, int(np.ceil(duration_s / (240.0 / tempo_bpm))))
    if chords is None:
        chords = chord_progression(key, n_bars, seed=seed)
    mid = make_backing_midi(key, tempo_bpm=tempo_bpm, duration_s=duration_s, chords=chords, seed=seed)
    out = render_midi(mid, sr=sr, duration_s=duration_s, renderer=renderer, fluidsynth_bin=fluidsynth_bin,
                      soundfont=soundfont, gain_db=gain_db)
    return Backing(audio=out.audio, sr=sr, midi=mid, key=key, tempo_bpm=float(tempo_bpm), chords=chords,
                   renderer=out.renderer, soundfont=out.soundfont)
