"""Storage of takes, backings, plans, mixes and previews on the box.

Each kind of file has its own folder under the data directory. A file appears under its name
only when it is complete: uploads grow in ``partial/`` and are moved into place by one
``os.replace`` after their SHA-256 checks out, so an interrupted upload never looks finished.
A partial upload is kept (with a small JSON sidecar naming its size and digest) so the client
can resume it from its offset after a disconnect or a restart.

Examples
--------
>>> import hashlib, tempfile
>>> from melisma.device.storage import Storage
>>> from melisma.protocol import FileKind
>>> store = Storage(tempfile.mkdtemp())
>>> data = b"RIFF....WAVE"
>>> up = store.begin_upload(FileKind.TAKE, "take.wav", len(data), hashlib.sha256(data).digest())
>>> up.offset
0
>>> up.write(0, data)
>>> entry = up.commit()
>>> entry.name, entry.size, [e.name for e in store.list()]
('take.wav', 12, ['take.wav'])
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import DeviceError
from ..protocol import (
    MAX_FILE_SIZE,
    MAX_FIRMWARE_SIZE,
    ErrorCode,
    FileKind,
    LibraryEntry,
    check_name,
    is_render_report,
    render_report_name,
)

#: Folder of each kind under the data directory.
FOLDERS = {
    FileKind.TAKE: "takes",
    FileKind.BACKING: "backings",
    FileKind.MIX: "mixes",
    FileKind.PREVIEW: "previews",
    FileKind.PLAN: "plans",
    FileKind.FIRMWARE: "firmware",  # protocol 1.1: uploaded bundles, for the updater (melisma.update.request)
}
#: Kinds a listing of "all kinds" holds: the library proper (a 1.0 client knows only these).
LIBRARY_KINDS = tuple(k for k in FOLDERS if k is not FileKind.FIRMWARE)
PARTIAL_FOLDER = "partial"

#: errno values that mean "the disk is full" (or this file may not grow): reported as NO_SPACE.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_no_space(exc: BaseException) -> bool:
    """True when ``exc`` or anything in its cause chain is an out-of-space error (ENOSPC, EDQUOT, EFBIG)."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in NO_SPACE_ERRNOS:
            return True
        if getattr(current, "errno", None) in NO_SPACE_ERRNOS:  # PyAV's FFmpegError carries the errno too
            return True
        if isinstance(current, StorageError) and current.code is ErrorCode.NO_SPACE:
            return True
        current = current.__cause__ or current.__context__
    return False


class StorageError(DeviceError):
    """A storage request failed; ``code`` is the protocol ErrorCode to reply with."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_STATE):
        super().__init__(message)
        self.code = code


class UploadSession:
    """One upload in progress: bytes arrive in order and are appended to a partial file."""

    def __init__(self, storage: Storage, kind: FileKind, name: str, size: int, sha256: bytes):
        self.storage = storage
        self.kind = kind
        self.name = name
        self.size = size
        self.sha256 = sha256
        stem = f"{kind.name.lower()}-{name}-{sha256.hex()[:16]}-{size}"
        self.part_path = storage.root / PARTIAL_FOLDER / (stem + ".part")
        self.meta_path = storage.root / PARTIAL_FOLDER / (stem + ".json")
        self._file: BinaryIO | None = None
        #: set when a write failed (e.g. the disk is full): every later write raises it again
        self.failed: StorageError | None = None
        if self.part_path.exists() and self.part_path.stat().st_size <= size:
            self.offset = self.part_path.stat().st_size
        else:
            with contextlib.suppress(FileNotFoundError):
                self.part_path.unlink()
            self.offset = 0
        try:
            self.meta_path.write_text(json.dumps({"kind": kind.name, "name": name, "size": size,
                                                  "sha256": sha256.hex()}))
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.meta_path.unlink()
            code = ErrorCode.NO_SPACE if exc.errno in NO_SPACE_ERRNOS else ErrorCode.INTERNAL
            raise StorageError(f"cannot start the upload of {name}: {exc.strerror}; free some space (delete old "
                               f"mixes) and try again", code) from None

    def write(self, offset: int, data: bytes) -> None:
        """Append ``data``, which must start at the current offset (the next byte expected)."""
        if offset != self.offset:
            raise StorageError(f"chunk at offset {offset} but the upload of {self.name} expects offset {self.offset}; "
                               f"re-send from {self.offset}", ErrorCode.BAD_OFFSET)
        if self.offset + len(data) > self.size:
            raise StorageError(f"chunk would make {self.name} {self.offset + len(data)} bytes, more than the announced "
                               f"{self.size}; send exactly {self.size} bytes", ErrorCode.TOO_LARGE)
        if self.failed is not None:
            raise self.failed
        try:
            if self._file is None:
                self._file = open(self.part_path, "r+b" if self.part_path.exists() else "wb", buffering=0)  # noqa: SIM115
            view = memoryview(data)
            pos = self.offset
            while view:
                n = os.pwrite(self._file.fileno(), view, pos)
                view, pos = view[n:], pos + n
        except OSError as exc:
            # Keep the partial file exactly at the last good chunk, so a resume after space is
            # freed goes on from there and its SHA-256 checks out.
            with contextlib.suppress(OSError):
                os.truncate(self.part_path, self.offset)
            code = ErrorCode.NO_SPACE if exc.errno in NO_SPACE_ERRNOS else ErrorCode.INTERNAL
            what = "the box's storage is full" if code is ErrorCode.NO_SPACE else exc.strerror
            self.failed = StorageError(f"cannot store {self.name} past byte {self.offset}: {what}; free some space "
                                       f"(delete old mixes) and upload again: it resumes from {self.offset}", code)
            self.close()
            raise self.failed from None
        self.offset += len(data)

    def close(self) -> None:
        """Stop writing but keep the partial data for a resume."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def commit(self) -> LibraryEntry:
        """Check size and SHA-256, then move the file into place atomically."""
        self.close()
        if self.offset != self.size:
            raise StorageError(f"{self.name} has {self.offset} of {self.size} bytes; send the rest before committing",
                               ErrorCode.BAD_STATE)
        digest = _sha256(self.part_path)
        if digest != self.sha256:
            self.discard()
            raise StorageError(f"{self.name}: SHA-256 of the received bytes is {digest.hex()[:16]}…, the client announced "
                               f"{self.sha256.hex()[:16]}…; upload it again from offset 0", ErrorCode.BAD_CHECKSUM)
        target = self.storage.path(self.kind, self.name)
        os.replace(self.part_path, target)
        _fsync_dir(target.parent)
        with contextlib.suppress(FileNotFoundError):
            self.meta_path.unlink()
        self.storage._digests[target] = (self.size, target.stat().st_mtime_ns, digest)
        return LibraryEntry(self.kind, self.name, self.size, digest)

    def discard(self) -> None:
        self.close()
        for p in (self.part_path, self.meta_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


@dataclass(frozen=True)
class StorageLimits:
    """How much the box keeps of what it can make again: previews, and the render work files
    (corrected and dry vocals) of all plans together; least recently used deleted first.
    ``None`` means no limit.
    """

    previews_bytes: int | None = 64 << 20
    work_bytes: int | None = 2048 << 20

    @classmethod
    def from_config(cls, storage: Any) -> StorageLimits:
        """From the ``[storage]`` section of box.toml (:class:`melisma.device.config.StorageConfig`)."""
        return cls(previews_bytes=int(storage.previews_mib) << 20, work_bytes=int(storage.work_mib) << 20)


class Storage:
    """Files of each kind in their own folder under ``root``; names checked by the protocol rules."""

    def __init__(self, root: str | os.PathLike, *, max_file_size: int = MAX_FILE_SIZE,
                 limits: StorageLimits | None = None, min_free_bytes: int = 0,
                 free_space: Callable[[Path], int] | None = None):
        self.root = Path(root)
        self.max_file_size = max_file_size
        self.limits = limits if limits is not None else StorageLimits()
        #: uploads and new jobs are refused while free space is below this floor (bytes)
        self.min_free_bytes = min_free_bytes
        self._free_space = free_space or (lambda root: shutil.disk_usage(root).free)
        for folder in (*FOLDERS.values(), PARTIAL_FOLDER):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self._digests: dict[Path, tuple[int, int, bytes]] = {}

    def path(self, kind: FileKind, name: str) -> Path:
        """Where a file of ``kind`` called ``name`` lives (the name is checked first)."""
        try:
            check_name(name, FileKind(kind))
        except Exception as exc:
            raise StorageError(str(exc), ErrorCode.BAD_NAME) from None
        return self.root / FOLDERS[FileKind(kind)] / name

    def existing(self, kind: FileKind, name: str) -> Path:
        p = self.path(kind, name)
        if not p.is_file():
            have = [e.name for e in self.list(kind)]
            raise StorageError(f"no {FileKind(kind).name.lower()} named {name!r}; the box has "
                               f"{', '.join(have) if have else 'none'}", ErrorCode.NOT_FOUND)
        return p

    def entry(self, kind: FileKind, name: str) -> LibraryEntry:
        p = self.existing(kind, name)
        st = p.stat()
        cached = self._digests.get(p)
        if cached and cached[:2] == (st.st_size, st.st_mtime_ns):
            digest = cached[2]
        else:
            digest = _sha256(p)
            self._digests[p] = (st.st_size, st.st_mtime_ns, digest)
        return LibraryEntry(FileKind(kind), name, st.st_size, digest)

    # This method shadows ``list`` in the rest of the class body: annotations below say ``builtins.list``.
    def list(self, kind: FileKind | None = None) -> list[LibraryEntry]:
        """Finished files (never partial uploads or temporary files), sorted by kind then name."""
        out = []
        for k in LIBRARY_KINDS if kind is None else [FileKind(kind)]:
            for p in sorted((self.root / FOLDERS[k]).iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    with contextlib.suppress(StorageError):
                        out.append(self.entry(k, p.name))
        return out

    def delete(self, kind: FileKind, name: str) -> None:
        p = self.existing(kind, name)
        p.unlink()
        self._digests.pop(p, None)
        if FileKind(kind) is FileKind.PLAN:
            # a plan keeps its cached analysis in a folder beside it (``<plan>.json.cache``)
            shutil.rmtree(p.with_name(p.name + ".cache"), ignore_errors=True)
            # ... and the report of its latest render (device/render_reports.py)
            if not is_render_report(p.name):
                with contextlib.suppress(FileNotFoundError):
                    p.with_name(render_report_name(p.name)).unlink()

    def begin_upload(self, kind: FileKind, name: str, size: int, sha256: bytes) -> UploadSession:
        """Start or resume an upload; the session's ``offset`` says how much is already held."""
        self.path(kind, name)  # checks the name
        if FileKind(kind) is FileKind.FIRMWARE and size > MAX_FIRMWARE_SIZE:
            raise StorageError(f"{name} is {size} bytes; the box accepts firmware bundles up to {MAX_FIRMWARE_SIZE} "
                               f"bytes ({MAX_FIRMWARE_SIZE // (1024 * 1024)} MiB)", ErrorCode.TOO_LARGE)
        if size > self.max_file_size and FileKind(kind) is not FileKind.FIRMWARE:
            raise StorageError(f"{name} is {size} bytes; the box accepts files up to {self.max_file_size} bytes "
                               f"({self.max_file_size // (1024 * 1024)} MiB); compress it (e.g. AAC)", ErrorCode.TOO_LARGE)
        session = UploadSession(self, FileKind(kind), name, size, sha256)
        free = self.free_bytes()
        if size - session.offset > free - self.min_free_bytes:
            if session.offset == 0:
                session.discard()  # nothing held yet: leave no sidecar behind
            else:
                session.close()
            floor = f" and the box keeps {self.min_free_bytes // (1024 * 1024)} MiB free" if self.min_free_bytes else ""
            raise StorageError(f"{name} needs {size - session.offset} more bytes but only {free} are free{floor}; "
                               f"delete old mixes first", ErrorCode.NO_SPACE)
        return session

    def free_bytes(self) -> int:
        """Free space where the library lives, in bytes (the injectable check)."""
        return int(self._free_space(self.root))

    def below_floor(self) -> bool:
        """True when free space is below the configured floor (new work is refused)."""
        return self.min_free_bytes > 0 and self.free_bytes() < self.min_free_bytes

    def check_floor(self) -> None:
        """Raise NO_SPACE when free space is below the configured floor."""
        if self.below_floor():
            raise StorageError(f"the box has {self.free_bytes() // (1024 * 1024)} MiB free, below its floor of "
                               f"{self.min_free_bytes // (1024 * 1024)} MiB (storage.min_free_mib); delete old mixes "
                               f"or previews first", ErrorCode.NO_SPACE)

    def sweep_leftovers(self) -> builtins.list[Path]:
        """Remove what interrupted jobs left in the library (temporary outputs, work folders, the cache
        folder of a plan that was never completed); the box is the library's only writer, so at
        start every such file is stale. Partial uploads are kept (they resume).
        """
        from ..leftovers import sweep

        removed: builtins.list[Path] = []
        for kind, folder in FOLDERS.items():
            removed += sweep(self.root / folder, force=True)
            if kind is FileKind.PLAN:
                for cache in (self.root / folder).glob("*.json.cache"):
                    if cache.is_dir() and not cache.with_name(cache.name[: -len(".cache")]).exists():
                        shutil.rmtree(cache, ignore_errors=True)
                        removed.append(cache)
                    elif cache.is_dir():
                        removed += sweep(cache, force=True)
        return removed

    def enforce_limits(self, *, keep: tuple[Path, ...] = ()) -> builtins.list[Path]:
        """Delete the least recently used previews and plan work files beyond :attr:`limits`
        (never takes, backings, mixes, plans or their analysis; never a file in ``keep``).
        Returns what was deleted.
        """
        from ..pipeline.cache import RENDER_CACHE_PATTERNS, enforce_limit

        deleted: builtins.list[Path] = []
        if self.limits.previews_bytes is not None:
            deleted += enforce_limit(self.root / FOLDERS[FileKind.PREVIEW], max_bytes=self.limits.previews_bytes,
                                     patterns=("*",), keep=keep)
        if self.limits.work_bytes is not None:
            caches = sorted((self.root / FOLDERS[FileKind.PLAN]).glob("*.cache"))
            deleted += enforce_limit(caches, max_bytes=self.limits.work_bytes, patterns=RENDER_CACHE_PATTERNS, keep=keep)
        for path in deleted:
            self._digests.pop(path, None)
        return deleted

    def partial_uploads(self) -> builtins.list[dict]:
        """What partial uploads are waiting to be resumed (from their sidecars)."""
        out = []
        for meta in sorted((self.root / PARTIAL_FOLDER).glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(meta.read_text())
                part = meta.with_suffix(".part")
                info["received"] = part.stat().st_size if part.exists() else 0
                out.append(info)
        return out


def _sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def _fsync_dir(path: Path) -> None:
    # the rename is durable only once the directory entry is on disk
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
