"""Decoding, resampling and atomic writing of audio.

Audio arrays are float32, shaped ``(channels, samples)``; mono helpers return ``(samples,)``.
Everything phones produce (m4a/AAC, mp3, ogg/opus, amr, wav, flac) is decoded by PyAV, which
carries its own FFmpeg, so no system ffmpeg is needed. Resampling uses libsoxr at very high
quality (a proper band-limited filter, not interpolation).

Examples
--------
>>> import numpy as np, tempfile, os
>>> from melisma import audio_io
>>> sr = 48000
>>> y = 0.1 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr).astype(np.float32)
>>> path = os.path.join(tempfile.mkdtemp(), "tone.flac")
>>> audio_io.write_audio(path, y, sr=sr)
>>> z, z_sr = audio_io.load_audio(path, sr=16000, mono=True)
>>> z_sr, z.shape
(16000, (16000,))
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import AudioContentError, AudioIOError, DecodeError, OutputExistsError

#: Longest input accepted, in seconds. A song is rarely over 10 minutes; a two-hour file is
#: almost certainly the wrong file and would exhaust a Pi Zero's memory.
MAX_DURATION_S = 15 * 60.0

#: Output containers by extension: (container format, codec, sample format, bit rate).
OUTPUT_FORMATS = {
    ".wav": ("wav", "pcm_s24le", "s32", None),
    ".flac": ("flac", "flac", "s32", None),
    ".m4a": ("ipod", "aac", "fltp", 192_000),
    ".mp3": ("mp3", "libmp3lame", "fltp", 192_000),
    ".ogg": ("ogg", "libopus", "flt", 128_000),
    ".opus": ("ogg", "libopus", "flt", 128_000),
}
#: Codecs whose encoders accept only some sample rates: rate to encode at if the input's is not allowed.
_ENCODER_RATES = {"libopus": (48000,), "libmp3lame": (32000, 44100, 48000), "aac": None}


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, as read from its container before decoding."""

    path: str
    codec: str
    sr: int
    channels: int
    duration_s: float | None


def _check_readable(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise DecodeError(f"{p}: no such file; give the path of an audio file (m4a, mp3, ogg, amr, wav, flac)")
    if p.is_dir():
        raise DecodeError(f"{p}: is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise DecodeError(f"{p}: the file is empty (0 bytes); was the upload cut off?")
    return p


@contextlib.contextmanager
def _open_container(p: Path) -> Iterator["object"]:
    import av

    try:
        container = av.open(str(p), mode="r")
    except av.FFmpegError as exc:  # corrupt, truncated, or not audio at all
        raise DecodeError(
            f"{p}: cannot be read as audio ({exc.strerror or type(exc).__name__}); "
            "the file is corrupt, truncated or not an audio file"
        ) from None
    try:
        if not container.streams.audio:
            raise DecodeError(f"{p}: contains no audio stream")
        yield container
    finally:
        container.close()


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read a file's codec, sample rate, channel count and duration without decoding it."""
    p = _check_readable(path)
    with _open_container(p) as container:
        stream = container.streams.audio[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        return AudioInfo(
            path=str(p),
            codec=stream.codec_context.name,
            sr=int(stream.codec_context.sample_rate or stream.rate or 0),
            channels=int(stream.codec_context.channels or 0),
            duration_s=duration,
        )


def load_audio(
    path: str | os.PathLike,
    *,
    sr: int | None = None,
    mono: bool = False,
    max_duration_s: float = MAX_DURATION_S,
    allow_nonfinite: bool = False,
) -> tuple[np.ndarray, int]:
    """Decode an audio file to float32.

    Parameters
    ----------
    path : path-like
        Any format phones produce: m4a/AAC, mp3, ogg/opus, amr, wav, flac, ...
    sr : int, optional
        Resample to this rate (libsoxr, very high quality). ``None`` keeps the file's rate.
    mono : bool
        Average the channels and return a 1-D array.
    max_duration_s : float
        Refuse longer files with :class:`~melisma.errors.AudioContentError`.
    allow_nonfinite : bool
        Accept NaN/Inf samples (otherwise they raise AudioContentError).

    Returns
    -------
    y : np.ndarray
        ``(channels, samples)`` float32, or ``(samples,)`` when ``mono``.
    sr : int
        Sample rate of ``y``.

    Raises
    ------
    DecodeError
        Missing, empty, truncated, corrupt or non-audio file.
    AudioContentError
        Too long, or NaN/Inf samples.
    """
    import av

    p = _check_readable(path)
    _check_wav_complete(p)
    chunks: list[np.ndarray] = []
    with _open_container(p) as container:
        stream = container.streams.audio[0]
        file_sr = int(stream.codec_context.sample_rate or 0)
        if file_sr <= 0:
            raise DecodeError(f"{p}: the audio stream has no sample rate; the file is damaged")
        declared = probe_duration = None
        if stream.duration is not None and stream.time_base is not None:
            probe_duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            probe_duration = container.duration / 1_000_000
        declared = probe_duration
        if declared is not None and declared > max_duration_s:
            raise AudioContentError(
                f"{p}: is {declared / 60:.1f} min long; the longest take or backing Melisma accepts "
                f"is {max_duration_s / 60:.0f} min. Trim it to the song (ffmpeg -t) and try again"
            )
        limit = int(max_duration_s * file_sr) + file_sr
        total = 0
        try:
            for frame in container.decode(stream):
                arr = _frame_to_float(frame)
                chunks.append(arr)
                total += arr.shape[1]
                if total > limit:
                    raise AudioContentError(
                        f"{p}: is longer than {max_duration_s / 60:.0f} min, the longest take or backing "
                        "Melisma accepts; trim it to the song and try again"
                    )
        except av.FFmpegError as exc:
            if not chunks:
                raise DecodeError(
                    f"{p}: cannot be decoded ({exc.strerror or type(exc).__name__}); the file is corrupt or not audio"
                ) from None
            raise DecodeError(
                f"{p}: decoding failed after {sum(c.shape[1] for c in chunks) / file_sr:.1f} s "
                f"({exc.strerror or type(exc).__name__}); the file is truncated or damaged — upload it again"
            ) from None
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise DecodeError(f"{p}: holds no audio samples (empty or truncated file)")
    channels = max(c.shape[0] for c in chunks)
    y = np.concatenate([c if c.shape[0] == channels else np.repeat(c[:1], channels, axis=0) for c in chunks], axis=1)
    del chunks
    if declared is not None and declared > 2.0 and y.shape[1] < 0.9 * declared * file_sr - file_sr:
        raise DecodeError(
            f"{p}: the container says {declared:.1f} s but only {y.shape[1] / file_sr:.1f} s decoded; "
            "the file is truncated — upload it again"
        )
    if not allow_nonfinite:
        check_finite(y, name=str(p))
    if mono:
        y = y.mean(axis=0, dtype=np.float32) if y.shape[0] > 1 else y[0]
    if sr is not None and sr != file_sr:
        y = resample(y, orig_sr=file_sr, target_sr=sr)
        file_sr = sr
    return np.ascontiguousarray(y, dtype=np.float32), file_sr


def _check_wav_complete(p: Path) -> None:
    """Refuse a RIFF/WAVE file whose data chunk claims more bytes than the file holds.

    FFmpeg quietly clamps such a file to its size, so a cut-off upload would otherwise be mixed
    as if it were the whole take. Streaming writers that leave the size as 0 or 0xFFFFFFFF are
    accepted.
    """
    import struct

    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):
                    return
                if pos + 8 + chunk_size > size:
                    raise DecodeError(
                        f"{p}: the WAV header promises {chunk_size} bytes of audio but the file holds only "
                        f"{size - pos - 8}; the file is truncated — upload it again"
                    )
                return
            pos += 8 + chunk_size + (chunk_size & 1)


_SAMPLE_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0, "flt": 1.0, "dbl": 1.0}


def _frame_to_float(frame) -> np.ndarray:
    """A decoded frame as (channels, samples) float32.

    Done by hand rather than with av.AudioResampler, which crashes on layouts FFmpeg cannot
    name (e.g. an 8-channel WAV without a channel mask).
    """
    fmt = frame.format.name
    base = fmt.rstrip("p")
    if base not in _SAMPLE_SCALE:
        raise DecodeError(f"unsupported sample format {fmt!r} in the audio stream")
    channels = frame.layout.nb_channels
    arr = frame.to_ndarray()
    if not frame.format.is_planar:
        arr = arr.reshape(-1, channels).T
    out = arr.astype(np.float32)
    if base == "u8":
        out -= 128.0
    if _SAMPLE_SCALE[base] != 1.0:
        out *= np.float32(1.0 / _SAMPLE_SCALE[base])
    return out


def check_finite(y: np.ndarray, *, name: str = "audio") -> None:
    """Raise :class:`AudioContentError` if ``y`` holds NaN or Inf samples."""
    bad = ~np.isfinite(y)
    if bad.any():
        first = int(np.argwhere(bad)[0][-1])
        raise AudioContentError(
            f"{name}: contains {int(bad.sum())} NaN/Inf samples (first at sample {first}); "
            "the file is damaged — re-export it from the recording app"
        )


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample along the last axis with libsoxr (very high quality, linear phase).

    >>> import numpy as np
    >>> resample(np.zeros(44100, np.float32), orig_sr=44100, target_sr=48000).shape
    (48000,)
    """
    import soxr

    if orig_sr <= 0 or target_sr <= 0:
        raise AudioIOError(f"sample rates must be positive, got orig_sr={orig_sr}, target_sr={target_sr}")
    if orig_sr == target_sr:
        return y
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 1:
        return soxr.resample(y, orig_sr, target_sr, quality="VHQ").astype(np.float32, copy=False)
    # soxr wants (samples, channels)
    out = soxr.resample(np.ascontiguousarray(y.T), orig_sr, target_sr, quality="VHQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (to tell whether a plan's inputs changed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Atomic writes


def check_writable(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Fail early (before any work) if ``path`` exists and may not be overwritten, or its folder is missing."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p}: already exists; pass --force to overwrite it, or choose another name")
    if p.is_dir():
        raise OutputExistsError(f"{p}: is a directory; give a file name such as {p / 'mix.m4a'}")
    if not p.parent.exists():
        raise AudioIOError(f"{p.parent}: no such directory for the output {p.name}; create it first")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place atomically.

    Nothing is left behind on failure, and an existing file is replaced only when ``overwrite``.
    The no-overwrite case uses a hard link, so it cannot clobber a file created meanwhile.
    """
    p = check_writable(path, overwrite=overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part" + p.suffix, dir=p.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if overwrite:
            os.replace(tmp_path, p)
        else:
            try:
                os.link(tmp_path, p)
            except FileExistsError:
                raise OutputExistsError(f"{p}: appeared while writing; pass --force to overwrite it") from None
            except OSError:  # file systems without hard links (FAT on a USB stick)
                if p.exists():
                    raise OutputExistsError(f"{p}: already exists; pass --force to overwrite it") from None
                os.replace(tmp_path, p)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> None:
    """Write bytes atomically (temporary file, fsync, rename)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def output_format(path: str | os.PathLike) -> tuple[str, str, str, int | None]:
    """The (container, codec, sample format, bit rate) used for an output path, by its extension."""
    ext = Path(path).suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise AudioIOError(
            f"{path}: cannot write '{ext or 'no extension'}'; use one of {', '.join(sorted(OUTPUT_FORMATS))}"
        )
    return OUTPUT_FORMATS[ext]


def write_audio(
    path: str | os.PathLike,
    y: np.ndarray,
    *,
    sr: int,
    overwrite: bool = False,
    bit_rate: int | None = None,
    float_wav: bool = False,
) -> None:
    """Encode ``y`` to ``path`` atomically; the format follows the extension.

    wav (24-bit PCM, or 32-bit float with ``float_wav`` for stems that may exceed full scale),
    flac (24-bit), m4a (AAC), mp3, ogg/opus. ``y`` is ``(samples,)`` or ``(channels, samples)``
    float; fixed-point formats clip at ±1.
    """
    output_format(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        encode_audio(tmp, y, sr=sr, bit_rate=bit_rate, float_wav=float_wav)


def encode_audio(
    path: str | os.PathLike, y: np.ndarray, *, sr: int, bit_rate: int | None = None, float_wav: bool = False
) -> None:
    """Encode ``y`` straight to ``path`` (not atomic: use :func:`write_audio` unless staging yourself)."""
    container_fmt, codec, sample_fmt, default_rate = output_format(path)
    if float_wav and container_fmt == "wav":
        codec = "pcm_f32le"
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 1:
        y = y[None, :]
    if y.ndim != 2 or y.shape[0] > 2 or y.shape[1] == 0:
        raise AudioIOError(f"can write mono or stereo audio shaped (samples,) or (channels, samples), got shape {y.shape}")
    check_finite(y, name=f"output for {path}")
    allowed = _ENCODER_RATES.get(codec)
    enc_sr = sr
    if allowed and sr not in allowed:
        enc_sr = min((r for r in allowed if r >= sr), default=max(allowed))
        y = resample(y, orig_sr=sr, target_sr=enc_sr)
    _encode(Path(path), y, enc_sr, container_fmt, codec, sample_fmt, bit_rate or default_rate)


def _encode(tmp: Path, y: np.ndarray, sr: int, container_fmt: str, codec: str, sample_fmt: str, bit_rate: int | None) -> None:
    import av

    layout = {1: "mono", 2: "stereo"}.get(y.shape[0])
    if layout is None:
        raise AudioIOError(f"can write mono or stereo, got {y.shape[0]} channels; mix down first")
    if codec != "pcm_f32le":
        y = np.clip(y, -1.0, 1.0)
    try:
        with av.open(str(tmp), mode="w", format=container_fmt) as out:
            stream = out.add_stream(codec, rate=sr)
            stream.codec_context.layout = layout
            if bit_rate:
                stream.codec_context.bit_rate = bit_rate
            if codec in ("pcm_s24le", "flac"):
                stream.codec_context.format = "s32"
            elif codec == "pcm_f32le":
                stream.codec_context.format = "flt"
            block = 4096
            for start in range(0, y.shape[1], block):
                seg = np.ascontiguousarray(y[:, start : start + block])
                frame = av.AudioFrame.from_ndarray(seg, format="fltp", layout=layout)
                frame.sample_rate = sr
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    except av.FFmpegError as exc:
        raise AudioIOError(f"encoding {codec} failed: {exc}") from None
