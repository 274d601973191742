"""Reading a reference melody (a standard MIDI file) into timed notes.

Times are in seconds, following every tempo change (mido converts ticks with the tempo map when a
file is iterated). All tracks and channels are read except the General MIDI drum channel (10); a
note-on with velocity 0 counts as a note-off. Overlapping notes are kept as they are: the matching
in :func:`melisma.analysis.notes.assign_targets` picks the best overlap.

Examples
--------
>>> import mido, tempfile, os
>>> mid = mido.MidiFile(ticks_per_beat=480)
>>> tr = mido.MidiTrack(); mid.tracks.append(tr)
>>> tr.append(mido.MetaMessage("set_tempo", tempo=500000))  # 120 bpm
>>> tr += [mido.Message("note_on", note=60, velocity=90, time=0), mido.Message("note_off", note=60, time=480)]
>>> path = os.path.join(tempfile.mkdtemp(), "m.mid"); mid.save(path)
>>> load_melody(path)
[MelodyNote(start_s=0.0, end_s=0.5, midi=60)]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import AnalysisError, ConfigError

__all__ = ["MelodyNote", "load_melody"]

_DRUM_CHANNEL = 9


@dataclass(frozen=True)
class MelodyNote:
    """One note of the reference melody."""

    start_s: float
    end_s: float
    midi: int

    def to_dict(self) -> dict:
        return {"start_s": round(self.start_s, 4), "end_s": round(self.end_s, 4), "midi": int(self.midi)}


def load_melody(path: str | os.PathLike, *, channel: int | None = None) -> list[MelodyNote]:
    """Notes of a MIDI file, sorted by start time.

    Parameters
    ----------
    path : path-like
        A standard MIDI file (.mid / .midi).
    channel : int, optional
        Read only this channel (0-15); default: every channel but drums.

    Raises
    ------
    ConfigError
        The file is missing or not a MIDI file.
    AnalysisError
        The file holds no notes (on the chosen channel).
    """
    import mido

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such melody file; give a standard MIDI file (.mid) with the tune")
    if channel is not None and not 0 <= channel <= 15:
        raise ConfigError(f"channel={channel}: MIDI channels are 0-15")
    try:
        mid = mido.MidiFile(str(p))
        messages = list(mid)  # times in seconds, tempo map applied
    except (OSError, EOFError, ValueError, KeyError, IndexError) as exc:
        raise ConfigError(f"{p}: not a readable MIDI file ({exc}); export the melody as a standard MIDI file") from None
    now = 0.0
    sounding: dict[tuple[int, int], list[float]] = {}
    notes: list[MelodyNote] = []
    for msg in messages:
        now += float(msg.time)
        if msg.type not in ("note_on", "note_off"):
            continue
        if msg.channel == _DRUM_CHANNEL and channel is None:
            continue
        if channel is not None and msg.channel != channel:
            continue
        key = (msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            sounding.setdefault(key, []).append(now)
        else:
            starts = sounding.get(key)
            if starts:
                start = starts.pop(0)
                if now > start:
                    notes.append(MelodyNote(start_s=round(start, 6), end_s=round(now, 6), midi=int(msg.note)))
    for (_ch, note), starts in sounding.items():  # notes never switched off end with the file
        for start in starts:
            if now > start:
                notes.append(MelodyNote(start_s=round(start, 6), end_s=round(now, 6), midi=int(note)))
    if not notes:
        where = f" on channel {channel}" if channel is not None else ""
        raise AnalysisError(f"{p}: the MIDI file holds no notes{where}; give the file with the vocal melody")
    notes.sort(key=lambda n: (n.start_s, n.midi))
    return notes
