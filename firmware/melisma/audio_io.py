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
import errno
import hashlib
import math
import os
import stat
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:  # PyAV is imported only when a file is read or written (start-up time)
    import av.audio.stream
    import av.container

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
#: Samples of the audio's start, mirrored, that an AAC stream carries before time zero (skipped
#: by the edit list and iTunSMPB like the encoder's own priming), so no real sample falls in the
#: encoder's first frame.
AAC_PREROLL = 1024
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
    if not os.access(p, os.R_OK):
        raise DecodeError(f"{p}: permission denied; this user may not read it (check its owner and mode, e.g. chmod a+r)")
    return p


@contextlib.contextmanager
def _open_container(p: Path) -> Iterator[av.container.InputContainer]:
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


#: The most samples (at the file's rate) a decode drops from the end to honour a gapless
#: sample count; more than that means the count is wrong, and nothing is dropped.
_MAX_END_TRIM = 8192


def _gapless_samples(container, stream, file_sr: int) -> int | None:
    """The real sample count of an MP4 audio stream, when the file says it: the iTunSMPB tag,
    else the track's edit list (the stream duration FFmpeg reads from it).

    FFmpeg already skips the priming both signal; it does not drop the encoder's padding at the
    end, which this count lets :func:`decode` do. ``None`` for other containers.
    """
    from .mp4_gapless import parse_itunsmpb

    if "mp4" not in container.format.name.split(","):
        return None
    for meta in (stream.metadata, container.metadata):
        if "iTunSMPB" in meta:
            smpb = parse_itunsmpb(meta["iTunSMPB"])
            if smpb is not None:
                return smpb[2]
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return round(stream.duration * stream.time_base * file_sr)
    return None


class _EndTrim:
    """Cuts a stream of decoded blocks at ``keep`` samples (the encoder's padding goes).

    Samples past ``keep`` are held back; if more than :data:`_MAX_END_TRIM` of them come, the
    count was wrong, and they are all passed on after all (and everything after them).
    """

    def __init__(self, keep: int | None):
        self.keep = keep
        self.seen = 0
        self.held: list[np.ndarray] = []
        self.held_n = 0

    def __call__(self, arr: np.ndarray) -> list[np.ndarray]:
        """The blocks that may be passed on now."""
        if self.keep is None:
            return [arr]
        out = []
        start = self.seen
        self.seen += arr.shape[1]
        if start < self.keep:
            take = min(arr.shape[1], self.keep - start)
            out.append(arr if take == arr.shape[1] else arr[:, :take])
            arr = arr[:, take:]
        if arr.shape[1]:
            self.held.append(arr)
            self.held_n += arr.shape[1]
            if self.held_n > _MAX_END_TRIM:  # not padding: the count is wrong, keep everything
                out += self.held
                self.held, self.keep = [], None
        return out


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

    Decoding and resampling stream block by block into one preallocated array (see
    :func:`decode`), so the file's own-rate signal is never held whole.

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
    decoded = decode(path, sr=sr, channels=1 if mono else None, max_duration_s=max_duration_s,
                     allow_nonfinite=allow_nonfinite)
    y = decoded.audio
    assert y is not None  # no npy_path was given, so the samples are in memory
    return (y[0] if mono else y), decoded.sr


@dataclass
class DecodedAudio:
    """What :func:`decode` produced.

    ``audio`` is ``(channels, samples)`` float32 at ``sr``, or ``None`` when the samples went to
    ``npy_path`` instead. ``peak`` is the largest sample magnitude of the output (a silence check
    needs no further pass over it). ``analysis`` is the optional mono copy at ``analysis_sr``.
    """

    audio: np.ndarray | None
    sr: int
    n_samples: int
    channels: int
    file_sr: int
    file_channels: int
    peak: float
    npy_path: Path | None = None
    analysis: np.ndarray | None = None
    analysis_sr: int | None = None

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sr


#: Samples (at the file's rate) gathered from decoded frames before they are converted and resampled.
DECODE_BLOCK = 1 << 15


def decode(
    path: str | os.PathLike,
    *,
    sr: int | None = None,
    channels: int | None = None,
    npy_path: str | os.PathLike | None = None,
    analysis_sr: int | None = None,
    analysis_quality: str = "HQ",
    analysis_buffer: Callable[[int], np.ndarray] | None = None,
    max_duration_s: float = MAX_DURATION_S,
    allow_nonfinite: bool = False,
) -> DecodedAudio:
    """Decode and resample a file block by block, into one preallocated array or a ``.npy`` file.

    Frames are gathered into blocks of :data:`DECODE_BLOCK` samples, mapped to the wanted channel
    count and resampled by a streaming libsoxr resampler (the same filter as :func:`resample`, the
    output is identical), so neither the file-rate signal nor a list of chunks is ever held whole.
    The output array is sized from the container's declared duration (grown if the file holds
    more, trimmed in place at the end).

    Parameters
    ----------
    path : path-like
        Any format phones produce.
    sr : int, optional
        Output rate (libsoxr VHQ); ``None`` keeps the file's rate.
    channels : int, optional
        ``None``: the file's channel count. 1: the average of all channels. 2: mono is duplicated;
        more than two channels are folded (odd-numbered to the left, even to the right, averaged).
    npy_path : path-like, optional
        Write the output to this ``.npy`` file block by block (plain file writes: page cache, not
        process memory) instead of returning it; ``audio`` is then ``None``. The file holds
        ``(samples,)`` for one channel, else ``(channels, samples)`` in Fortran order (samples
        interleaved, so it can be appended to); read it with :class:`NpyBlockReader` or ``np.load``.
    analysis_sr : int, optional
        Also return a mono copy at this rate (e.g. 16000 for alignment or pitch), resampled from the
        file's own rate at ``analysis_quality``.
    analysis_buffer : callable, optional
        ``analysis_buffer(capacity)`` returns a 1-D float32 array of that many samples for the mono
        copy to be written into as it is decoded (e.g. a file-backed mapping, so a long take's copy
        never sits in the process's memory); called again with a larger capacity if the file holds
        more than its container declared. ``analysis`` is then a view of the first samples of the
        last buffer. Default: an ordinary array.
    max_duration_s, allow_nonfinite
        As in :func:`load_audio`.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "tone.wav")
    >>> write_audio(path, np.zeros((2, 44100), np.float32), sr=44100)
    >>> d = decode(path, sr=48000, channels=2, analysis_sr=16000)
    >>> d.audio.shape, d.analysis.shape, d.peak
    ((2, 48000), (16000,), 0.0)
    """
    import av

    p = _check_readable(path)
    _check_wav_complete(p)
    if channels is not None and channels not in (1, 2):
        raise AudioIOError(f"decode: channels={channels}; use None (as in the file), 1 (mono) or 2 (stereo)")
    with _open_container(p) as container:
        stream = container.streams.audio[0]
        file_sr = int(stream.codec_context.sample_rate or 0)
        if file_sr <= 0:
            raise DecodeError(f"{p}: the audio stream has no sample rate; the file is damaged")
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            declared = container.duration / 1_000_000
        if declared is not None and declared > max_duration_s:
            raise AudioContentError(
                f"{p}: is {declared / 60:.1f} min long; the longest take or backing Melisma accepts "
                f"is {max_duration_s / 60:.0f} min. Trim it to the song (ffmpeg -t) and try again"
            )
        out_sr = int(sr) if sr is not None else file_sr
        if out_sr <= 0:
            raise AudioIOError(f"decode: sr={sr} must be a positive sample rate")
        limit = int(max_duration_s * file_sr) + file_sr
        file_channels = int(stream.codec_context.channels or 0)
        pipe: _DecodePipe | None = None
        pending: list[np.ndarray] = []
        pending_n = 0
        trim = _EndTrim(_gapless_samples(container, stream, file_sr))
        try:
            for arr in _trimmed_frames(container, stream, trim):
                if pipe is None:
                    file_channels = file_channels or arr.shape[0]
                    pipe = _DecodePipe(p, file_sr=file_sr, out_sr=out_sr, file_channels=file_channels,
                                       channels=channels, npy_path=npy_path, declared_s=declared,
                                       analysis_sr=analysis_sr, analysis_quality=analysis_quality,
                                       analysis_buffer=analysis_buffer, allow_nonfinite=allow_nonfinite)
                if arr.shape[0] != file_channels:  # a damaged file may change its layout midway
                    arr = arr[:file_channels] if arr.shape[0] > file_channels else \
                        np.concatenate([arr, np.repeat(arr[:1], file_channels - arr.shape[0], axis=0)])
                pending.append(arr)
                pending_n += arr.shape[1]
                if pipe.file_samples + pending_n > limit:
                    raise AudioContentError(
                        f"{p}: is longer than {max_duration_s / 60:.0f} min, the longest take or backing "
                        "Melisma accepts; trim it to the song and try again"
                    )
                if pending_n >= DECODE_BLOCK:
                    pipe.push(np.concatenate(pending, axis=1) if len(pending) > 1 else pending[0])
                    pending, pending_n = [], 0
            if pipe is not None and pending_n:
                pipe.push(np.concatenate(pending, axis=1))
                pending = []
        except av.FFmpegError as exc:
            done = (pipe.file_samples if pipe else 0) + pending_n
            if pipe is not None:
                pipe.abort()
            if not done:
                raise DecodeError(
                    f"{p}: cannot be decoded ({exc.strerror or type(exc).__name__}); the file is corrupt or not audio"
                ) from None
            raise DecodeError(
                f"{p}: decoding failed after {done / file_sr:.1f} s "
                f"({exc.strerror or type(exc).__name__}); the file is truncated or damaged — upload it again"
            ) from None
        except BaseException:
            if pipe is not None:
                pipe.abort()
            raise
    if pipe is None or pipe.file_samples == 0:
        if pipe is not None:
            pipe.abort()
        raise DecodeError(f"{p}: holds no audio samples (empty or truncated file)")
    if declared is not None and declared > 2.0 and pipe.file_samples < 0.9 * declared * file_sr - file_sr:
        pipe.abort()
        raise DecodeError(
            f"{p}: the container says {declared:.1f} s but only {pipe.file_samples / file_sr:.1f} s decoded; "
            "the file is truncated — upload it again"
        )
    return pipe.finish()


class _DecodePipe:
    """Channel mapping, checks, streaming resampling and the output sink for :func:`decode`."""

    def __init__(self, p: Path, *, file_sr: int, out_sr: int, file_channels: int, channels: int | None,
                 npy_path: str | os.PathLike | None, declared_s: float | None, analysis_sr: int | None,
                 analysis_quality: str, allow_nonfinite: bool, analysis_buffer: Callable[[int], np.ndarray] | None = None):
        import soxr

        self.p, self.file_sr, self.out_sr = p, file_sr, out_sr
        self.file_channels = file_channels
        self.channels = file_channels if channels is None else channels
        self.allow_nonfinite = allow_nonfinite
        self.file_samples = 0
        self.peak = 0.0
        self._resampler = (soxr.ResampleStream(file_sr, out_sr, self.channels, dtype="float32", quality="VHQ")
                           if out_sr != file_sr else None)
        self.analysis_sr = analysis_sr
        self._analysis_resampler = None
        self._analysis: _ArraySink | None = None
        if analysis_sr is not None:
            if analysis_sr <= 0:
                raise AudioIOError(f"decode: analysis_sr={analysis_sr} must be a positive sample rate")
            if analysis_sr != file_sr:
                self._analysis_resampler = soxr.ResampleStream(file_sr, analysis_sr, 1, dtype="float32",
                                                               quality=analysis_quality)
            self._analysis = _ArraySink(1, _capacity(declared_s, analysis_sr), allocate=analysis_buffer)
        if npy_path is not None:
            self._sink: _ArraySink | NpyWriter = NpyWriter(npy_path, channels=self.channels)
        else:
            self._sink = _ArraySink(self.channels, _capacity(declared_s, out_sr))

    def _map_channels(self, block: np.ndarray) -> np.ndarray:
        have, want = block.shape[0], self.channels
        if have == want:
            return block
        if want == 1:
            return block.mean(axis=0, dtype=np.float32)[None, :]
        if have == 1:
            return np.repeat(block, 2, axis=0)
        return np.stack([block[0::2].mean(axis=0, dtype=np.float32), block[1::2].mean(axis=0, dtype=np.float32)])

    def push(self, block: np.ndarray, last: bool = False) -> None:
        if block.shape[1] and not self.allow_nonfinite:
            bad = ~np.isfinite(block)
            if bad.any():
                first = self.file_samples + int(np.argwhere(bad)[0][-1])
                raise AudioContentError(
                    f"{self.p}: contains NaN/Inf samples (first at sample {first}); "
                    "the file is damaged — re-export it from the recording app"
                )
        self.file_samples += block.shape[1]
        if self._analysis is not None:
            mono = block.mean(axis=0, dtype=np.float32) if block.shape[0] > 1 else block[0]
            if self._analysis_resampler is not None:
                mono = self._analysis_resampler.resample_chunk(np.ascontiguousarray(mono), last=last)
            self._analysis.append(mono[None, :])
        out = self._map_channels(block)
        if self._resampler is not None:
            out = self._resampler.resample_chunk(np.ascontiguousarray(out.T), last=last).T
        if out.shape[1]:
            self.peak = max(self.peak, float(np.max(np.abs(out))))
        self._sink.append(out)

    def abort(self) -> None:
        if isinstance(self._sink, NpyWriter):
            self._sink.abort()

    def finish(self) -> DecodedAudio:
        if self._resampler is not None or self._analysis_resampler is not None:
            self.push(np.zeros((self.file_channels, 0), np.float32), last=True)
        analysis = self._analysis.finish()[0] if self._analysis is not None else None
        n = self._sink.n
        if isinstance(self._sink, NpyWriter):
            self._sink.close()
            audio, npy = None, self._sink.path
        else:
            audio, npy = self._sink.finish(), None
        return DecodedAudio(audio=audio, sr=self.out_sr, n_samples=n, channels=self.channels, file_sr=self.file_sr,
                            file_channels=self.file_channels, peak=self.peak, npy_path=npy, analysis=analysis,
                            analysis_sr=self.analysis_sr)


def _capacity(declared_s: float | None, sr: int) -> int:
    if declared_s is None or not math.isfinite(declared_s) or declared_s <= 0:
        return 60 * sr
    return int(declared_s * sr * 1.01) + sr // 2 + 4096


class _ArraySink:
    """A growable (channels, n) float32 array in one flat allocation, trimmed in place at the end.

    With ``allocate`` (``allocate(size)`` gives a flat float32 array, e.g. a file-backed mapping)
    the samples go into what it gives, and the result is a view of its first samples (not trimmed).
    """

    def __init__(self, channels: int, capacity: int, *, allocate: Callable[[int], np.ndarray] | None = None):
        self.channels = channels
        self.capacity = max(int(capacity), 1)
        self._allocate = allocate
        self._flat = self._new(channels * self.capacity)
        self.n = 0

    def _new(self, size: int) -> np.ndarray:
        if self._allocate is None:
            return np.empty(size, np.float32)
        flat = self._allocate(size)
        if flat.dtype != np.float32 or flat.ndim != 1 or flat.size < size:
            raise AudioIOError(f"decode: analysis_buffer gave {flat.dtype} {flat.shape}; it must give float32 ({size},)")
        return flat[:size]

    def append(self, block: np.ndarray) -> None:
        m = block.shape[1]
        if self.n + m > self.capacity:
            self._grow(max(self.n + m, int(self.capacity * 1.5)))
        self._flat.reshape(self.channels, self.capacity)[:, self.n:self.n + m] = block
        self.n += m

    def _grow(self, capacity: int) -> None:
        bigger = self._new(self.channels * capacity)
        bigger.reshape(self.channels, capacity)[:, :self.n] = self._flat.reshape(self.channels, self.capacity)[:, :self.n]
        self._flat, self.capacity = bigger, capacity

    def finish(self) -> np.ndarray:
        n, cap, flat = self.n, self.capacity, self._flat
        if n < cap:
            step = 1 << 20
            for c in range(1, self.channels):  # move each row down to its final place (numpy copes with overlap)
                for a in range(0, n, step):
                    b = min(a + step, n)
                    flat[c * n + a:c * n + b] = flat[c * cap + a:c * cap + b]
            if self._allocate is None:
                # realloc in place: the spare capacity goes back to the system without a copy
                flat.resize(max(self.channels * n, 1), refcheck=False)
        self._flat = np.empty(0, np.float32)
        return flat[: self.channels * n].reshape(self.channels, n)


# ----------------------------------------------------------------------------------------------
# .npy files written and read block by block (plain file I/O: page cache is not process memory)

#: Fixed header length of the .npy files :class:`NpyWriter` writes (a multiple of 64, as numpy wants).
_NPY_HEADER_LEN = 128


def _npy_header(shape: tuple[int, ...], fortran_order: bool) -> bytes:
    text = f"{{'descr': '<f4', 'fortran_order': {fortran_order}, 'shape': {tuple(shape)!r}, }}"
    body = text.ljust(_NPY_HEADER_LEN - 10 - 1) + "\n"
    if len(body) != _NPY_HEADER_LEN - 10:
        raise AudioIOError(f"npy header for shape {shape} is too long")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


class NpyWriter:
    """Append float32 audio to a ``.npy`` file block by block.

    The file holds ``(samples,)`` for one channel, ``(channels, samples)`` in Fortran order
    otherwise (interleaved on disk, so appending works without knowing the length); the header is
    written when the writer closes. ``np.load`` and :class:`NpyBlockReader` read it.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> with NpyWriter(path, channels=2) as w:
    ...     w.append(np.ones((2, 3), np.float32)); w.append(np.zeros((2, 2), np.float32))
    >>> np.load(path).tolist()
    [[1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0, 0.0]]
    """

    def __init__(self, path: str | os.PathLike, *, channels: int):
        if channels < 1:
            raise AudioIOError(f"NpyWriter: channels={channels} must be at least 1")
        self.path = Path(path)
        self.channels = int(channels)
        self.n = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 -- owned by this writer, closed by close()
        self._file.write(b"\0" * _NPY_HEADER_LEN)

    def append(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim == 1:
            block = block[None, :]
        if block.shape[0] != self.channels:
            raise AudioIOError(f"NpyWriter: block has {block.shape[0]} channels, the file {self.channels}")
        data = block[0] if self.channels == 1 else block.T
        self._file.write(np.ascontiguousarray(data, dtype="<f4").data)
        self.n += block.shape[1]

    def close(self) -> None:
        if self._file.closed:
            return
        shape = (self.n,) if self.channels == 1 else (self.channels, self.n)
        self._file.seek(0)
        self._file.write(_npy_header(shape, fortran_order=self.channels > 1))
        self._file.flush()
        self._file.close()

    def abort(self) -> None:
        """Close and delete the partial file."""
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class NpyBlockReader:
    """Read sample ranges of a float32 ``.npy`` audio file with plain reads (no memory map).

    A memory-mapped file counts every page touched in the process's resident memory; reads into
    a small buffer do not (the pages stay in the kernel's page cache). Works with any ``.npy`` of
    ``(samples,)`` or ``(channels, samples)`` float32, C or Fortran order (as ``np.save`` and
    :class:`NpyWriter` write them). Ranges past the end read as zeros, so a shorter file can be
    padded to a longer length on the fly.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.arange(10, dtype=np.float32).reshape(2, 5))
    >>> with NpyBlockReader(path) as r:
    ...     r.shape, r.read(3, 7).tolist()
    ((2, 5), [[3.0, 4.0, 0.0, 0.0], [8.0, 9.0, 0.0, 0.0]])
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 -- owned by this reader, closed by close()
        try:
            version = np.lib.format.read_magic(self._file)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(self._file)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(self._file)
        except ValueError as exc:
            self._file.close()
            raise AudioIOError(f"{self.path}: is not a readable .npy file ({exc})") from None
        if dtype != np.dtype("<f4") or len(shape) not in (1, 2):
            self._file.close()
            raise AudioIOError(f"{self.path}: holds {dtype} {shape}; expected float32 (samples,) or (channels, samples)")
        self.shape = tuple(int(s) for s in shape)
        self.fortran_order = bool(fortran) and len(shape) == 2
        self.channels = 1 if len(shape) == 1 else self.shape[0]
        self.n_samples = self.shape[-1]
        self._offset = self._file.tell()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def read(self, start: int, stop: int, *, out: np.ndarray | None = None) -> np.ndarray:
        """Samples ``start:stop`` as ``(stop - start,)`` or ``(channels, stop - start)`` float32 (C order)."""
        start, stop = int(start), int(stop)
        if start < 0 or stop < start:
            raise AudioIOError(f"NpyBlockReader.read: bad range {start}:{stop}")
        m = stop - start
        want = (m,) if self.ndim == 1 else (self.channels, m)
        if out is None:
            out = np.empty(want, np.float32)
        elif out.shape != want or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise AudioIOError(f"NpyBlockReader.read: out must be C-contiguous float32 {want}, got {out.dtype} {out.shape}")
        have = max(0, min(stop, self.n_samples) - start)
        rows = out.reshape(self.channels, m)
        if have < m:
            rows[:, have:] = 0.0
        if have == 0:
            return out
        if self.fortran_order:
            frames = np.empty((have, self.channels), np.float32)
            self._read_into(frames, self._offset + start * self.channels * 4)
            rows[:, :have] = frames.T
        else:
            for c in range(self.channels):
                self._read_into(rows[c, :have], self._offset + (c * self.n_samples + start) * 4)
        return out

    def _read_into(self, buf: np.ndarray, offset: int) -> None:
        self._file.seek(offset)
        got = self._file.readinto(memoryview(buf.data).cast("B"))
        if got != buf.nbytes:
            raise AudioIOError(f"{self.path}: is shorter than its header says (truncated cache file); analyze again")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> NpyBlockReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_npy(path: str | os.PathLike, *, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Read samples ``start:stop`` of a float32 ``.npy`` audio file into a fresh C-ordered array, without mmap.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.arange(5, dtype=np.float32))
    >>> read_npy(path, start=1).tolist()
    [1.0, 2.0, 3.0, 4.0]
    """
    with NpyBlockReader(path) as reader:
        return reader.read(start, reader.n_samples if stop is None else stop)


def _check_wav_complete(p: Path) -> None:
    """Refuse a RIFF/WAVE file whose data chunk claims more bytes than the file holds.

    FFmpeg quietly clamps such a file to its size, so a cut-off upload would otherwise be mixed
    as if it were the whole take. Streaming writers that leave the size as 0 or 0xFFFFFFFF are
    accepted.
    """
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


def _trimmed_frames(container, stream, trim: _EndTrim) -> Iterator[np.ndarray]:
    """Decoded frames as float arrays, cut at the gapless sample count."""
    for frame in container.decode(stream):
        for arr in trim(_frame_to_float(frame)):
            if arr.shape[1]:
                yield arr


def iter_decoded(path: str | os.PathLike, *, block_samples: int = 1 << 16) -> Iterator[tuple[np.ndarray, int]]:
    """Decode a file frame by frame, yielding ``(block, sr)`` with ``block`` (channels, ≤ block_samples)
    float32 at the file's own rate: for measuring a file without holding it (or a copy on disk).

    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.wav")
    >>> write_audio(path, np.zeros(48000, np.float32), sr=48000)
    >>> sum(b.shape[1] for b, _ in iter_decoded(path, block_samples=10000))
    48000
    """
    import av

    p = _check_readable(path)
    pending: list[np.ndarray] = []
    have = 0
    with _open_container(p) as container:
        stream = container.streams.audio[0]
        sr = int(stream.codec_context.sample_rate or 0)
        trim = _EndTrim(_gapless_samples(container, stream, sr))
        try:
            for arr in _trimmed_frames(container, stream, trim):
                pending.append(arr)
                have += arr.shape[1]
                if have >= block_samples:
                    joined = np.concatenate(pending, axis=1)
                    yield joined, sr
                    pending, have = [], 0
        except av.FFmpegError as exc:
            raise DecodeError(f"{p}: decoding failed ({exc.strerror or type(exc).__name__}); the file is damaged") from None
    if pending:
        yield np.concatenate(pending, axis=1), sr


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


def resample_blocks(y: np.ndarray, *, orig_sr: int, target_sr: int, allocate: Callable[[int], np.ndarray] | None = None,
                    block: int = DECODE_BLOCK) -> np.ndarray:
    """:func:`resample` of a mono signal a block at a time into what ``allocate(size)`` gives (see
    :func:`decode`'s ``analysis_buffer``): the same samples, but neither a whole-length float copy
    of the input nor the output is made in the process's memory when ``allocate`` gives a
    file-backed buffer.

    >>> import numpy as np
    >>> y = np.random.default_rng(0).standard_normal(48000).astype(np.float32)
    >>> bool(np.array_equal(resample_blocks(y, orig_sr=48000, target_sr=16000), resample(y, orig_sr=48000, target_sr=16000)))
    True
    """
    import soxr

    if orig_sr <= 0 or target_sr <= 0:
        raise AudioIOError(f"sample rates must be positive, got orig_sr={orig_sr}, target_sr={target_sr}")
    if y.ndim != 1:
        raise AudioIOError(f"resample_blocks: a mono (samples,) signal, got shape {y.shape}")
    n = y.shape[0]
    sink = _ArraySink(1, int(math.ceil(n * target_sr / orig_sr)) + 64, allocate=allocate)
    if orig_sr == target_sr:
        for a in range(0, n, block):
            sink.append(np.asarray(y[a : a + block], dtype=np.float32)[None, :])
        return sink.finish()[0]
    stream = soxr.ResampleStream(orig_sr, target_sr, 1, dtype="float32", quality="VHQ")
    for a in range(0, max(n, 1), block):
        piece = np.ascontiguousarray(y[a : a + block], dtype=np.float32)
        sink.append(stream.resample_chunk(piece, last=a + block >= n)[None, :])
    return sink.finish()[0]


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
    check_output_location(p)
    if p.is_dir():
        raise OutputExistsError(f"{p}: is a directory; give a file name such as {p / 'mix.m4a'}")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p}: already exists; pass --force to overwrite it, or choose another name")
    if not p.parent.exists():
        raise AudioIOError(f"{p.parent}: no such directory for the output {p.name}; create it first")
    return p


#: Longest file name (one path component) most file systems take, in bytes.
MAX_FILE_NAME_BYTES = 255


def check_output_location(p: Path) -> None:
    """Refuse, before any work, an output name or place that cannot be written.

    Names over 255 bytes, a symlink loop or a dangling link, a parent that is a file, and a
    folder this user may not write to each get one line naming the path and what would work.
    """
    if len(os.fsencode(p.name)) > MAX_FILE_NAME_BYTES:
        raise AudioIOError(f"{p.name[:40]}…: the file name is {len(os.fsencode(p.name))} bytes; file systems take at most "
                           f"{MAX_FILE_NAME_BYTES}: choose a shorter name")
    if p.is_symlink():
        try:
            os.stat(p)
        except OSError as exc:
            what = "a symlink loop" if exc.errno == errno.ELOOP else f"a symlink to nowhere ({exc.strerror})"
            raise AudioIOError(f"{p}: is {what}; remove the link or choose another name") from None
    for parent in (p.parent, *p.parent.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise AudioIOError(f"{parent}: is a file, not a folder, so {p} cannot be written there; "
                                   f"choose another output path")
            if parent == p.parent and not os.access(parent, os.W_OK | os.X_OK):
                raise AudioIOError(f"{parent}: permission denied; this user may not write in that folder "
                                   f"(choose another folder, or check its owner and mode)")
            break


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place atomically.

    Nothing is left behind on failure, and an existing file is replaced only when ``overwrite``.
    The no-overwrite case uses a hard link, so it cannot clobber a file created meanwhile.
    """
    from .leftovers import temp_prefix

    p = check_writable(path, overwrite=overwrite)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(p.name), suffix=".part" + p.suffix, dir=p.parent)
    tmp_path = Path(tmp)
    try:
        # mkstemp makes 0600 files: give the output the mode an ordinary new file gets (the umask),
        # or, when it replaces a file, that file's own mode
        try:
            mode = stat.S_IMODE(p.stat().st_mode) if overwrite else None
        except OSError:
            mode = None
        os.fchmod(fd, mode if mode is not None else 0o666 & ~_umask())
    finally:
        os.close(fd)
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


def _umask() -> int:
    """The process umask (read from /proc where it can be, without changing it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> None:
    """Write bytes atomically (temporary file, fsync, rename)."""
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
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
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 1:
        y = y[None, :]
    if y.ndim != 2 or y.shape[0] > 2 or y.shape[1] == 0:
        raise AudioIOError(f"can write mono or stereo audio shaped (samples,) or (channels, samples), got shape {y.shape}")
    check_finite(y, name=f"output for {path}")
    with AudioWriter(path, sr=sr, channels=y.shape[0], float_wav=float_wav, bit_rate=bit_rate) as writer:
        writer.write(y)


#: WAV sample formats: bits -> (format tag, numpy dtype, full-scale value or None for float).
_WAV_FORMAT_PCM, _WAV_FORMAT_FLOAT, _WAV_FORMAT_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_KSDATAFORMAT_SUBTYPE_PCM = bytes.fromhex("0100000000001000800000aa00389b71")
#: Samples per channel packed at a time when writing WAV (bounds the temporaries).
_WAV_PACK_BLOCK = 1 << 16


class AudioWriter:
    """Write audio block by block; the format follows the extension of ``path``.

    WAV is written directly (header, then samples packed by numpy: 16- or 24-bit PCM, or 32-bit
    float with ``float_wav``), about ten times faster than through FFmpeg; flac, m4a (AAC), mp3
    and ogg/opus are encoded by PyAV as the blocks arrive. The writer writes to exactly the path
    it is given (stage it with :func:`atomic_path`). Fixed-point formats clip at ±1. Every format
    decodes (with :func:`load_audio`) to exactly the samples written, at the same positions: m4a
    signals its AAC priming in an edit list and the iTunSMPB tag (:mod:`melisma.mp4_gapless`), mp3
    in its LAME tag (:mod:`melisma.mp3_gapless`), opus in its pre-skip.

    Parameters
    ----------
    path : path-like
        Output file; its extension picks the format (see :data:`OUTPUT_FORMATS`).
    sr : int
        Sample rate of the blocks. Encoders that cannot take it (mp3, opus) get the audio
        resampled as it streams.
    channels : int
        1 or 2; blocks are ``(samples,)`` (mono) or ``(channels, samples)``.
    float_wav : bool
        WAV only: 32-bit float samples (stems that may exceed full scale).
    bit_rate : int, optional
        Lossy codecs: bits per second (default per format).
    wav_bits : int
        WAV only: 16 or 24 (ignored with ``float_wav``).
    codec_options : dict, optional
        Extra FFmpeg encoder options, e.g. ``{"aac_coder": "fast"}`` (AAC about 1.6x faster).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "mix.wav")
    >>> with AudioWriter(path, sr=48000, channels=2) as w:
    ...     for _ in range(3):
    ...         w.write(np.zeros((2, 4800), np.float32))
    >>> load_audio(path)[0].shape
    (2, 14400)
    """

    def __init__(self, path: str | os.PathLike, *, sr: int, channels: int, float_wav: bool = False,
                 bit_rate: int | None = None, wav_bits: int = 24, codec_options: dict[str, str] | None = None):
        self.path = Path(path)
        container_fmt, codec, _, default_rate = output_format(self.path)
        if not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise AudioIOError(f"AudioWriter: sr={sr!r} must be a positive whole number of Hz (the engine uses 48000)")
        if channels not in (1, 2):
            raise AudioIOError(f"AudioWriter: can write mono or stereo, got channels={channels}; mix down first")
        if wav_bits not in (16, 24):
            raise AudioIOError(f"AudioWriter: wav_bits={wav_bits}; use 16 or 24 (or float_wav=True for 32-bit float)")
        self.sr, self.channels = int(sr), int(channels)
        self.samples_written = 0
        self._closed = False
        self._args = (container_fmt, codec, float_wav, bit_rate or default_rate, wav_bits, dict(codec_options or {}))
        self._open()

    def _open(self) -> None:
        container_fmt, codec, float_wav, bit_rate, wav_bits, options = self._args
        if container_fmt == "wav":
            self._sink: _WavSink | _AvSink = _WavSink(self.path, sr=self.sr, channels=self.channels,
                                                      bits=32 if float_wav else wav_bits, float_samples=float_wav)
        else:
            self._sink = _AvSink(self.path, sr=self.sr, channels=self.channels, container_fmt=container_fmt,
                                 codec=codec, bit_rate=bit_rate, options=options)

    def write(self, block: np.ndarray) -> None:
        """Append ``(samples,)`` (mono) or ``(channels, samples)`` float samples."""
        if self._closed:
            raise AudioIOError(f"AudioWriter: {self.path} is already closed")
        block = np.asarray(block, dtype=np.float32)
        if block.ndim == 1:
            block = block[None, :]
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise AudioIOError(f"AudioWriter: block shaped {block.shape} does not fit a {self.channels}-channel file; "
                               "pass (samples,) for mono or (channels, samples)")
        if block.shape[1] == 0:
            return
        bad = ~np.isfinite(block)
        if bad.any():
            first = self.samples_written + int(np.argwhere(bad)[0][-1])
            raise AudioContentError(f"output for {self.path}: contains {int(bad.sum())} NaN/Inf samples (first at sample "
                                    f"{first}); the stage before writing produced invalid audio")
        self._sink.write(block)
        self.samples_written += block.shape[1]

    def restart(self) -> None:
        """Discard everything written so far and start the file again (e.g. a second mastering pass)."""
        if self._closed:
            raise AudioIOError(f"AudioWriter: {self.path} is already closed")
        self._sink.abandon()
        self.samples_written = 0
        self._open()

    def close(self) -> None:
        """Finish the file (flush the encoder, fill in the WAV sizes). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._sink.close()

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # the caller's atomic_path removes the file; just release it
            self._closed = True
            self._sink.abandon()


def _pack_24(ints: np.ndarray) -> np.ndarray:
    """Little-endian 24-bit bytes of int32 samples: four samples into three 32-bit words at a time."""
    n = ints.size
    whole = n - n % 4
    quads = ints[:whole].view(np.uint32).reshape(-1, 4)
    words = np.empty((quads.shape[0], 3), "<u4")
    words[:, 0] = (quads[:, 0] & 0xFFFFFF) | (quads[:, 1] << 24)
    words[:, 1] = ((quads[:, 1] >> 8) & 0xFFFF) | (quads[:, 2] << 16)
    words[:, 2] = ((quads[:, 2] >> 16) & 0xFF) | (quads[:, 3] << 8)
    packed = words.view(np.uint8).reshape(-1)
    if whole == n:
        return packed
    rest = ints[whole:].astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].reshape(-1)
    return np.concatenate([packed, rest])


class _WavSink:
    def __init__(self, path: Path, *, sr: int, channels: int, bits: int, float_samples: bool):
        self.channels, self.bits, self.float_samples = channels, bits, float_samples
        self.bytes_per_sample = bits // 8
        self.data_bytes = 0
        block_align = channels * self.bytes_per_sample
        if float_samples:
            fmt = struct.pack("<HHIIHHH", _WAV_FORMAT_FLOAT, channels, sr, sr * block_align, block_align, bits, 0)
        elif bits > 16:  # WAVE_FORMAT_EXTENSIBLE, as FFmpeg writes for more than 16 bits
            mask = 0x4 if channels == 1 else 0x3
            fmt = struct.pack("<HHIIHHHHI", _WAV_FORMAT_EXTENSIBLE, channels, sr, sr * block_align, block_align, bits,
                              22, bits, mask) + _KSDATAFORMAT_SUBTYPE_PCM
        else:
            fmt = struct.pack("<HHIIHH", _WAV_FORMAT_PCM, channels, sr, sr * block_align, block_align, bits)
        header = b"RIFF" + b"\0\0\0\0" + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        self._fact_at = None
        if float_samples:  # non-PCM data wants a fact chunk with the frame count
            self._fact_at = len(header) + 8
            header += b"fact" + struct.pack("<I", 4) + b"\0\0\0\0"
        self._data_size_at = len(header) + 4
        header += b"data" + b"\0\0\0\0"
        try:
            self._file = open(path, "wb")  # noqa: SIM115 -- owned by this writer, closed by close()
            self._file.write(header)
        except OSError as exc:
            raise AudioIOError(f"{path}: cannot write ({exc.strerror})") from None
        self.path = path

    def write(self, block: np.ndarray) -> None:
        n = block.shape[1]
        for a in range(0, n, _WAV_PACK_BLOCK):
            part = block[:, a:a + _WAV_PACK_BLOCK]
            if self.float_samples:
                packed = np.ascontiguousarray(part.T, dtype="<f4")  # (samples, channels): interleaved
            else:
                # Scale by 2^(bits-1) and clip to the integer range, as FFmpeg does (but round, not truncate).
                full_scale = float(2 ** (self.bits - 1))
                scaled = np.multiply(part, np.float32(full_scale), dtype=np.float32)
                np.rint(scaled, out=scaled)
                np.clip(scaled, -full_scale, full_scale - 1.0, out=scaled)
                ints = np.empty((part.shape[1], self.channels), "<i2" if self.bits == 16 else "<i4")
                ints.T[...] = scaled  # interleave while converting
                packed = ints if self.bits == 16 else _pack_24(ints.reshape(-1))
            try:
                self._file.write(packed.data)
            except OSError as exc:
                raise AudioIOError(f"{self.path}: writing failed ({exc.strerror})") from None
            self.data_bytes += packed.nbytes

    def close(self) -> None:
        f = self._file
        try:
            if self.data_bytes & 1:
                f.write(b"\0")  # RIFF chunks are word aligned
            riff_size = f.tell() - 8
            if riff_size > 0xFFFFFFFF:
                raise AudioIOError(f"{self.path}: over 4 GB, too long for a WAV file; write flac instead")
            f.seek(4)
            f.write(struct.pack("<I", riff_size))
            if self._fact_at is not None:
                f.seek(self._fact_at)
                f.write(struct.pack("<I", self.data_bytes // (self.channels * self.bytes_per_sample)))
            f.seek(self._data_size_at)
            f.write(struct.pack("<I", self.data_bytes))
        except OSError as exc:
            raise AudioIOError(f"{self.path}: finishing the WAV file failed ({exc.strerror})") from None
        finally:
            f.close()

    def abandon(self) -> None:
        self._file.close()


class _AvSink:
    def __init__(self, path: Path, *, sr: int, channels: int, container_fmt: str, codec: str, bit_rate: int | None,
                 options: dict[str, str]):
        import av

        self.path, self.codec = path, codec
        self.layout = {1: "mono", 2: "stereo"}[channels]
        allowed = _ENCODER_RATES.get(codec)
        self.sr = sr
        self._resampler = None
        if allowed and sr not in allowed:
            import soxr

            self.sr = min((r for r in allowed if r >= sr), default=max(allowed))
            self._resampler = soxr.ResampleStream(sr, self.sr, channels, dtype="float32", quality="VHQ")
        # AAC: frames carry their timestamps, so the muxer writes an edit list that skips the
        # encoder's priming, in a movie timescale of the sample rate (exact to the sample); the
        # iTunSMPB tag is added when the file is finished (see melisma.mp4_gapless). The stream
        # also starts with AAC_PREROLL samples of the audio's start mirrored, before time zero:
        # the encoder's first frame after its silent priming decodes badly (on a mix that starts
        # loud: 3 dB over the input's peak, error -10 dB), and the pre-roll takes that frame.
        self._gapless = codec == "aac"
        self._encoded = 0  # samples given to the encoder (at its rate)
        self._preroll = AAC_PREROLL if self._gapless else 0
        self._pts = -self._preroll
        self._first_pts: int | None = None
        self._packets = 0
        container_options = {"movie_timescale": str(self.sr)} if self._gapless else {}
        try:
            self._out = av.open(str(path), mode="w", format=container_fmt, options=container_options)
            # an audio codec name gives an audio stream (PyAV types add_stream by the codec's kind)
            self._stream = cast("av.audio.stream.AudioStream", self._out.add_stream(codec, rate=self.sr))
            ctx = self._stream.codec_context
            ctx.layout = self.layout
            if bit_rate:
                ctx.bit_rate = bit_rate
            if codec == "flac":
                ctx.format = "s32"
            if options:
                ctx.options = options
        except av.FFmpegError as exc:
            raise AudioIOError(f"{path}: cannot start the {codec} encoder: {exc}") from None

    def write(self, block: np.ndarray, last: bool = False) -> None:
        import av

        if self._resampler is not None:
            block = self._resampler.resample_chunk(np.ascontiguousarray(block.T), last=last).T
        block = np.clip(block, -1.0, 1.0)
        self._encoded += block.shape[1]
        if self._preroll and block.shape[1]:
            mirrored = block[:, 1:self._preroll + 1][:, ::-1]
            short = self._preroll - mirrored.shape[1]
            block = np.concatenate([np.zeros((block.shape[0], short), np.float32), mirrored, block], axis=1)
            self._preroll = 0
        try:
            for a in range(0, block.shape[1], 4096):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block[:, a:a + 4096]), format="fltp",
                                                   layout=self.layout)
                frame.sample_rate = self.sr
                if self._gapless:
                    frame.pts = self._pts
                    frame.time_base = Fraction(1, self.sr)
                    self._pts += frame.samples
                for packet in self._stream.encode(frame):
                    self._mux(packet)
        except av.FFmpegError as exc:
            raise AudioIOError(f"encoding {self.codec} failed: {exc}") from None

    def _mux(self, packet) -> None:
        if self._gapless:
            if self._first_pts is None and packet.pts is not None:
                self._first_pts = int(packet.pts * packet.time_base * self.sr)
            self._packets += 1
        self._out.mux(packet)

    def close(self) -> None:
        import av

        try:
            if self._resampler is not None:
                self.write(np.zeros((1 if self.layout == "mono" else 2, 0), np.float32), last=True)
            for packet in self._stream.encode(None):
                self._mux(packet)
        except av.FFmpegError as exc:
            raise AudioIOError(f"encoding {self.codec} failed: {exc}") from None
        finally:
            self._out.close()
        if self._gapless and self._packets:
            from .mp4_gapless import add_itunsmpb

            priming = max(0, -(self._first_pts or 0))
            frame_size = int(self._stream.codec_context.frame_size or 1024)
            padding = max(0, self._packets * frame_size - priming - self._pts)
            add_itunsmpb(self.path, priming=priming, padding=padding, samples=self._pts)
        elif self.codec == "libmp3lame" and self._encoded:
            from .mp3_gapless import fix_lame_padding

            fix_lame_padding(self.path, samples=self._encoded)

    def abandon(self) -> None:
        with contextlib.suppress(Exception):
            self._out.close()
