"""Gapless (sample-exact) AAC in MP4: the iTunes ``iTunSMPB`` tag, written and read.

An AAC encoder starts every stream with *priming* samples (1024 for FFmpeg's encoder, 2112 for
Apple's) and pads the last frame. A player that knows how many can cut them off and give back
exactly the samples that went in; one that does not plays the file 21 ms late and a little long.
MP4 players look for that in two places, and Melisma writes both:

- the track's **edit list** (``moov/trak/edts/elst``: media time = priming, duration = the real
  sample count, in a movie timescale equal to the sample rate so it is exact), which FFmpeg,
  Apple's AVFoundation and Android's MediaExtractor honour; FFmpeg's muxer writes it when the
  encoded packets carry their timestamps;
- the iTunes **iTunSMPB** freeform tag (``moov/udta/meta/ilst/----``), a line of hex fields
  ``0 priming padding samples``, which iTunes, foobar2000, Rockbox and FFmpeg (priming only) read.

This module adds the tag to a file that FFmpeg's ``ipod`` muxer has just finished (its ``moov``
atom is the last one, after the audio, so growing it moves no audio and no chunk offset), and
parses it when reading.

Examples
--------
>>> smpb = itunsmpb_value(priming=1024, padding=219, samples=96037)
>>> smpb.split()[:4]
['00000000', '00000400', '000000DB', '0000000000017725']
>>> parse_itunsmpb(smpb)
(1024, 219, 96037)
>>> parse_itunsmpb("garbage") is None
True
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from .errors import AudioIOError


def itunsmpb_value(*, priming: int, padding: int, samples: int) -> str:
    """The iTunSMPB text for a stream: priming and padding samples and the real sample count."""
    if priming < 0 or padding < 0 or samples < 0:
        raise AudioIOError(f"iTunSMPB: priming={priming}, padding={padding}, samples={samples} must not be negative")
    return f" 00000000 {priming:08X} {padding:08X} {samples:016X}" + " 00000000" * 8


def parse_itunsmpb(value: str) -> tuple[int, int, int] | None:
    """``(priming, padding, samples)`` from an iTunSMPB value, or ``None`` if it is not one."""
    fields = str(value).split()
    if len(fields) < 4:
        return None
    try:
        priming, padding, samples = (int(f, 16) for f in fields[1:4])
    except ValueError:
        return None
    if samples <= 0 or not 0 <= priming < 1 << 16 or not 0 <= padding < 1 << 16:
        return None
    return priming, padding, samples


def _atom(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _freeform(name: str, value: str) -> bytes:
    """An iTunes freeform metadata item (``----`` with mean, name and a UTF-8 data atom)."""
    return _atom(
        b"----",
        _atom(b"mean", b"\0\0\0\0com.apple.iTunes")
        + _atom(b"name", b"\0\0\0\0" + name.encode("ascii"))
        + _atom(b"data", struct.pack(">II", 1, 0) + value.encode("ascii")),
    )


def _children(data: bytes | bytearray, start: int, end: int) -> list[tuple[bytes, int, int, int]]:
    """``(kind, offset, size, header)`` of the atoms in ``data[start:end]``."""
    out = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise AudioIOError(f"MP4 atom {kind!r} at byte {pos} has a bad size {size}")
        out.append((kind, pos, size, header))
        pos += size
    return out


def _find(moov: bytearray, path: list[bytes]) -> list[tuple[int, int, int]]:
    """Offsets ``(offset, size, header)`` of each atom along ``path`` below ``moov`` (stops at the first missing)."""
    found: list[tuple[int, int, int]] = []
    start, end = 8, len(moov)
    for kind in path:
        match = [c for c in _children(moov, start, end) if c[0] == kind]
        if not match:
            break
        _, off, size, header = match[0]
        found.append((off, size, header))
        start, end = off + header + (4 if kind == b"meta" else 0), off + size
    return found


def _insert(moov: bytearray, parents: list[tuple[int, int, int]], at: int, item: bytes) -> None:
    """Insert ``item`` at ``at`` and grow ``moov`` and each of ``parents`` by its length."""
    moov[at:at] = item
    for off, _, header in [(0, len(moov) - len(item), 8), *parents]:
        if header != 8:
            raise AudioIOError("MP4: 64-bit atom sizes inside moov are not supported here")
        size = struct.unpack(">I", moov[off:off + 4])[0]
        moov[off:off + 4] = struct.pack(">I", size + len(item))


def add_itunsmpb(path: str | os.PathLike, *, priming: int, padding: int, samples: int) -> None:
    """Add (or replace) the iTunSMPB tag of an MP4 file whose ``moov`` atom comes last.

    Parameters
    ----------
    path : path-like
        An ``.m4a`` just written by FFmpeg's ``ipod``/``mp4`` muxer (not fast-start).
    priming, padding : int
        Samples the encoder put before and after the audio.
    samples : int
        The real number of samples per channel.

    Raises
    ------
    AudioIOError
        The file is not laid out so (its ``moov`` is not the last atom).
    """
    p = Path(path)
    item = _freeform("iTunSMPB", itunsmpb_value(priming=priming, padding=padding, samples=samples))
    with open(p, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        pos = 0
        moov_at = None
        while pos + 8 <= size:  # walk the top level with seeks: the audio itself is never read
            f.seek(pos)
            head = f.read(16)
            atom_size, kind = struct.unpack(">I4s", head[:8])
            if atom_size == 1:
                atom_size = struct.unpack(">Q", head[8:16])[0]
            elif atom_size == 0:
                atom_size = size - pos
            if atom_size < 8:
                raise AudioIOError(f"{p}: MP4 atom {kind!r} at byte {pos} has a bad size {atom_size}")
            if kind == b"moov":
                moov_at = pos
            pos += atom_size
        if moov_at is None:
            raise AudioIOError(f"{p}: no moov atom; this is not a finished MP4 file")
        f.seek(moov_at)
        moov = bytearray(f.read())
        if struct.unpack(">I", moov[:4])[0] != len(moov):
            raise AudioIOError(f"{p}: the moov atom is not the last one in the file; cannot add the gapless tag in place")
        _replace_in_ilst(moov, item)
        f.seek(moov_at)
        f.write(moov)
        f.truncate()


def _replace_in_ilst(moov: bytearray, item: bytes) -> None:
    """Put ``item`` into ``moov/udta/meta/ilst``, creating what is missing and dropping an old iTunSMPB."""
    found = _find(moov, [b"udta", b"meta", b"ilst"])
    if len(found) == 3:
        ilst_off, ilst_size, ilst_header = found[2]
        for kind, off, size, _ in _children(moov, ilst_off + ilst_header, ilst_off + ilst_size):
            if kind == b"----" and b"iTunSMPB" in moov[off:off + size]:
                del moov[off:off + size]
                for p_off, _, _ in [(0, 0, 8), *found]:
                    old = struct.unpack(">I", moov[p_off:p_off + 4])[0]
                    moov[p_off:p_off + 4] = struct.pack(">I", old - size)
                break
        found = _find(moov, [b"udta", b"meta", b"ilst"])
        ilst_off, ilst_size, _ = found[2]
        _insert(moov, found, ilst_off + ilst_size, item)
        return
    hdlr = _atom(b"hdlr", b"\0" * 8 + b"mdirappl" + b"\0" * 9)
    if len(found) == 2:  # meta without ilst
        meta_off, meta_size, _ = found[1]
        _insert(moov, found, meta_off + meta_size, _atom(b"ilst", item))
    elif len(found) == 1:  # udta without meta
        udta_off, udta_size, _ = found[0]
        _insert(moov, found, udta_off + udta_size, _atom(b"meta", b"\0\0\0\0" + hdlr + _atom(b"ilst", item)))
    else:
        _insert(moov, [], len(moov), _atom(b"udta", _atom(b"meta", b"\0\0\0\0" + hdlr + _atom(b"ilst", item))))
