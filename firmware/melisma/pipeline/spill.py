"""Take-length buffers of a long render kept in a file instead of the process's memory.

A full render holds one take-length array: the wet vocal, which becomes the mix in place and is
mastered from there (2 channels x 4 bytes x 48 000 Hz: 69 MB for 3 minutes, 345 MB for 15). For
a long take that alone would break the box's memory bound, so :func:`wet_buffer` puts it in a
file-backed shared mapping in the plan's work folder and :class:`SpilledArray` keeps handing its
pages back (``madvise(MADV_DONTNEED)``) while the render streams through it block by block. The
samples stay in the file (the kernel's page cache, written back to disk when memory is short):
every pass reads exactly what was written, so the render is the same to the last bit; only the
process's resident memory stays small. Short takes keep an ordinary array (nothing changes).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Above this size the wet vocal / mix buffer of a full render goes to a file (80 MiB: a stereo
#: take of about 3.6 minutes; a 3-minute take stays in memory). At 128 MiB (5.8 minutes) a
#: 5.5-minute take, the longest kept in memory, measured 252 MB analysing and 216 MB re-rendering.
SPILL_BYTES = 80 << 20
#: Above this size an analysis keeps the full-rate take in a file too (40 MiB: a mono take of
#: about 3.6 minutes, the render's limit for the same length), so a 15-minute take's analysis
#: holds no take-length array at 48 kHz.
ANALYSIS_SPILL_BYTES = 40 << 20
#: How often an analysis buffer's pages are handed back, seconds: the analysis sweeps whole takes
#: through numpy at memory speed (a 15-minute take's 173 MB in ~50 ms), so at 20 ms most of the
#: mapping was resident at once (measured: 184 MB of it at 20 ms and at 5 ms, 63 MB at 2 ms).
ANALYSIS_RELEASE_INTERVAL_S = 0.002
#: How often the pages the render has touched are handed back, seconds. A render streams its
#: blocks more slowly than the analysis sweeps; at 20 ms a quiet machine still let ~100 MB of a
#: 15-minute mix be resident at once (first render 254 MB, re-render 176 MB); at 5 ms 174 / 140 MB,
#: with no measurable CPU cost (at 2 ms the same memory, a little more CPU).
RELEASE_INTERVAL_S = 0.005


class SpilledArray:
    """A float32 array in a file-backed shared mapping whose pages are handed back as it is used.

    ``array`` is an ordinary :class:`numpy.ndarray` view of the mapping. A background thread drops
    the mapping's resident pages every :data:`RELEASE_INTERVAL_S`; pages touched again are read
    back from the page cache (no data is lost: the mapping is shared, so its pages *are* the
    file's). :meth:`close` stops the thread, unmaps and deletes the file.

    Examples
    --------
    >>> with SpilledArray((2, 1000)) as buffer:
    ...     buffer.array[:] = 1.0
    ...     float(buffer.array.sum())
    2000.0
    """

    def __init__(self, shape: tuple[int, ...], *, folder: Path | None = None, release_interval_s: float | None = None):
        self._interval = RELEASE_INTERVAL_S if release_interval_s is None else float(release_interval_s)
        fd, name = tempfile.mkstemp(prefix=".spill-", suffix=".f32", dir=folder)
        self.path = Path(name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            nbytes = int(np.prod(shape)) * 4
            os.ftruncate(fd, max(nbytes, 1))
            self._map = mmap.mmap(fd, max(nbytes, 1), flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise
        os.close(fd)
        self.array = np.frombuffer(self._map, dtype=np.float32, count=int(np.prod(shape))).reshape(shape)
        if hasattr(self._map, "madvise"):
            self._thread = threading.Thread(target=self._release_loop, name="melisma-spill", daemon=True)
            self._thread.start()

    def _release_loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.release()

    def release(self) -> None:
        """Hand the mapping's resident pages back now (their contents stay in the file)."""
        with contextlib.suppress(ValueError, OSError):  # closed meanwhile
            self._map.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        """Stop releasing, unmap and delete the file (the array must not be used afterwards)."""
        if self._stop.is_set():
            return  # closed already
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        del self.array
        with contextlib.suppress(BufferError):  # a view still alive: the map closes when it goes
            self._map.close()
        self.path.unlink(missing_ok=True)

    def reader(self) -> SpilledReader:
        """A block reader of this (1-D) buffer with plain file reads: a sweep through it never maps the
        pages in, so they never count in the process's memory (see :class:`SpilledReader`).
        """
        return SpilledReader(self)

    def __enter__(self) -> SpilledArray:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SpilledReader:
    """``read(start, stop)`` of a 1-D :class:`SpilledArray` through ``os.pread`` on its file (the page
    cache holds the mapping's own pages, so reads see every write), and its ``shape``: what block-wise
    analyses (:func:`~melisma.analysis.voice.analyze_voice`) take instead of the array.

    Examples
    --------
    >>> with SpilledArray((10,)) as buffer:
    ...     buffer.array[:] = np.arange(10)
    ...     buffer.reader().read(3, 6).tolist(), buffer.reader().read(8, 20).tolist()
    ([3.0, 4.0, 5.0], [8.0, 9.0])
    """

    def __init__(self, buffer: SpilledArray):
        if buffer.array.ndim != 1:
            raise ValueError(f"SpilledReader reads 1-D buffers, not shape {buffer.array.shape}")
        self.shape = buffer.array.shape
        self._path = buffer.path

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` (clipped to the buffer) as a new float32 array."""
        n = self.shape[0]
        start, stop = max(0, min(int(start), n)), max(0, min(int(stop), n))
        out = np.empty(max(stop - start, 0), np.float32)
        if out.size:
            with open(self._path, "rb", buffering=0) as fh:
                view = out.data.cast("B")
                done = 0
                while done < view.nbytes:
                    got = os.preadv(fh.fileno(), [view[done:]], start * 4 + done)
                    if got <= 0:
                        raise OSError(f"{self._path}: short read at sample {start + done // 4}")
                    done += got
        return out


def wet_buffer(channels: int, n: int, *, folder: Path | None,
               spill_bytes: int | None = None) -> tuple[np.ndarray, SpilledArray | None]:
    """A ``(channels, n)`` float32 buffer for a full render's wet vocal: an ordinary array, or (when it
    would be bigger than ``spill_bytes``, default :data:`SPILL_BYTES`) a :class:`SpilledArray`'s
    view, returned with it to close.

    Examples
    --------
    >>> array, spilled = wet_buffer(2, 100, folder=None)
    >>> array.shape, spilled is None
    ((2, 100), True)
    """
    limit = SPILL_BYTES if spill_bytes is None else spill_bytes
    if channels * n * 4 <= limit:
        return np.empty((channels, n), np.float32), None
    spilled = SpilledArray((channels, n), folder=folder)
    return spilled.array, spilled


def spilled_allocator(folder: Path | None, stack: contextlib.ExitStack) -> Callable[[int], np.ndarray]:
    """``allocate(size)``: a new 1-D float32 :class:`SpilledArray` (its pages handed back at the
    analysis's interval) whose closing is left to ``stack``: what :func:`~melisma.audio_io.decode`
    writes a long take's 16 kHz copy into as it decodes, so the copy is never in memory whole.

    Examples
    --------
    >>> with contextlib.ExitStack() as stack:
    ...     array = spilled_allocator(None, stack)(4)
    ...     array[:] = 2.0
    ...     float(array.sum())
    8.0
    """

    def allocate(size: int) -> np.ndarray:
        buffer = stack.enter_context(SpilledArray((int(size),), folder=folder,
                                                  release_interval_s=ANALYSIS_RELEASE_INTERVAL_S))
        return buffer.array

    return allocate
