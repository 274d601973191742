"""Size limits for the files a render keeps: least recently used first out.

A render keeps the corrected vocal (``corrected-<key>.npy``), the dry vocal (``dry-<key>.npy``)
of each tuning and style and the toned vocal (``toned-<key>.npy``) of each warmth and air beside
the plan, so the next slider move skips that work; each is the take's length in float32 (about
35 MB for 3 minutes). A full render with ducking
also keeps the backing's ducking moments (``duck-<key>.npy``, about 6 MB for 3 minutes). Left alone they would
fill the disk, one pair per tuning value tried. :func:`enforce_limit` keeps a folder's matching
files under a size limit by deleting the least recently used (a file's modification time is
set to now whenever a render reuses it, see :func:`touch`); the plan's own cache (``vocal.npy``,
``backing.npy``) is never touched.

The limit per plan folder is :func:`plan_cache_limit_bytes`: ``MELISMA_PLAN_CACHE_MIB`` in the
environment, else what :func:`set_plan_cache_limit` set (the box sets it from ``box.toml``,
``storage.plan_cache_mib``), else :data:`DEFAULT_PLAN_CACHE_MIB`.

Examples
--------
>>> import os, tempfile, time
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> for i, name in enumerate(["dry-a.npy", "dry-b.npy", "dry-c.npy"]):
...     _ = (folder / name).write_bytes(b"x" * 1000)
...     os.utime(folder / name, (1000 + i, 1000 + i))
>>> touch(folder / "dry-a.npy")            # a render used it just now
>>> [p.name for p in enforce_limit(folder, max_bytes=2000)]
['dry-b.npy']
>>> sorted(p.name for p in folder.iterdir())
['dry-a.npy', 'dry-c.npy']
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import ConfigError

#: Render caches a plan folder may hold, in MiB (about two tunings of a 3-minute take, or one and several tones).
DEFAULT_PLAN_CACHE_MIB = 256
#: File names a render keeps (and that may be evicted).
RENDER_CACHE_PATTERNS = ("corrected-*.npy", "dry-*.npy", "toned-*.npy", "duck-*.npy")
ENV_PLAN_CACHE = "MELISMA_PLAN_CACHE_MIB"

_plan_cache_mib: float | None = None


def set_plan_cache_limit(mib: float | None) -> None:
    """Set the per-plan render cache limit in MiB (``None``: back to the default); 0 keeps nothing."""
    global _plan_cache_mib
    if mib is not None and not (isinstance(mib, (int, float)) and 0 <= mib <= 1 << 20):
        raise ConfigError(f"plan cache limit {mib!r} MiB is out of range; use 0 (keep nothing) to 1048576 MiB")
    _plan_cache_mib = None if mib is None else float(mib)


def plan_cache_limit_bytes() -> int:
    """The per-plan render cache limit in bytes (environment, then the set value, then the default)."""
    text = os.environ.get(ENV_PLAN_CACHE)
    if text:
        try:
            mib = float(text)
        except ValueError:
            raise ConfigError(f"{ENV_PLAN_CACHE}={text!r} is not a number; give the limit in MiB, e.g. 256") from None
        if not 0 <= mib <= 1 << 20:
            raise ConfigError(f"{ENV_PLAN_CACHE}={text} is out of range; use 0 (keep nothing) to 1048576 MiB")
    else:
        mib = DEFAULT_PLAN_CACHE_MIB if _plan_cache_mib is None else _plan_cache_mib
    return int(mib * (1 << 20))


def touch(path: str | os.PathLike) -> None:
    """Mark a cache file as just used (its modification time becomes now)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def enforce_limit(
    folder: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    max_bytes: int,
    patterns: Iterable[str] = RENDER_CACHE_PATTERNS,
    keep: Iterable[str | os.PathLike] = (),
) -> list[Path]:
    """Delete the least recently used files matching ``patterns`` in ``folder`` (or in several
    folders, counted together) until they total at most ``max_bytes``; files in ``keep`` and
    hidden files (names starting with a dot: files being written) are never deleted. Returns the
    deleted paths.

    Files that vanish or cannot be deleted meanwhile (another process at work) are skipped.
    """
    folders = [Path(folder)] if isinstance(folder, (str, os.PathLike)) else [Path(f) for f in folder]
    kept = {Path(k).resolve() for k in keep}
    patterns = list(patterns)
    entries: list[tuple[float, int, Path]] = []
    seen: set[Path] = set()
    for where in folders:
        for pattern in patterns:
            for path in where.glob(pattern):
                if path in seen or path.name.startswith("."):
                    continue
                seen.add(path)
                with contextlib.suppress(OSError):
                    st = path.stat()
                    if path.is_file():
                        entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    deleted: list[Path] = []
    for _, size, path in sorted(entries, key=lambda e: (e[0], e[2].name)):
        if total <= max_bytes:
            break
        if path.resolve() in kept:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            continue
        total -= size
        deleted.append(path)
    return deleted


def enforce_plan_cache_limit(folder: str | os.PathLike, *, keep: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """:func:`enforce_limit` on a plan's cache folder with :func:`plan_cache_limit_bytes`."""
    return enforce_limit(folder, max_bytes=plan_cache_limit_bytes(), keep=keep)

