"""What a killed run leaves behind, and how the next run in the same place removes it.

Melisma writes every output under a temporary name beside it and moves it into place at the end
(:func:`melisma.audio_io.atomic_path`), and keeps an analysis' work files in a private folder
beside the outputs (:func:`melisma.pipeline.analyze`). A run killed by SIGKILL, a power cut or
the out-of-memory killer cannot clean up, so those names carry the process id of their writer:

* ``.<name>.melisma-<pid>-<random>.part<ext>`` — an output being written;
* ``.melisma-work-<pid>-<random>/`` — an analysis' work folder.

:func:`sweep` removes, in one folder, only names of exactly these shapes whose writer is no longer
running (``force=True`` removes them whatever the pid says: the box does that at start, when it
is the only writer of its library). Nothing else is ever touched.

Examples
--------
>>> import os, tempfile
>>> from pathlib import Path
>>> from melisma.leftovers import sweep, temp_prefix
>>> d = Path(tempfile.mkdtemp())
>>> dead = (d / ".mix.wav.melisma-999999999-abcd_123.part.wav"); dead.write_bytes(b"half a mix")
10
>>> mine = d / (temp_prefix("mix.wav") + "zzzz_999.part.wav"); mine.write_bytes(b"still writing")
13
>>> (d / ".mix.wav.part").write_bytes(b"the user's own file")
19
>>> [p.name for p in sweep(d)]
['.mix.wav.melisma-999999999-abcd_123.part.wav']
>>> sorted(p.name for p in d.iterdir()) == sorted([mine.name, ".mix.wav.part"])
True
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

#: ``mkstemp``/``mkdtemp`` random parts: 8 characters of this alphabet.
_RANDOM = r"[a-z0-9_]{8}"
TEMP_FILE = re.compile(r"\..+\.melisma-(?P<pid>\d+)-" + _RANDOM + r"\.part(\.[^./]*)?")
WORK_DIR = re.compile(r"\.melisma-work-(?P<pid>\d+)-" + _RANDOM)
#: Work folders made before the names carried a pid (removed only with ``force``).
OLD_WORK_DIR = re.compile(r"\.melisma-work-" + _RANDOM)
#: Longest part of an output's own name kept in its temporary name (the whole stays under 255 bytes).
_NAME_KEPT = 120


def temp_prefix(name: str) -> str:
    """The ``mkstemp`` prefix for a temporary output beside the file ``name``."""
    kept = name.encode("utf-8")[:_NAME_KEPT].decode("utf-8", "ignore")
    return f".{kept}.melisma-{os.getpid()}-"


def work_prefix() -> str:
    """The ``mkdtemp`` prefix of an analysis' work folder."""
    return f".melisma-work-{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # someone else's live process (or an impossible pid: treat as not ours to judge)
    return True


def sweep(folder: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Remove the leftovers of dead Melisma runs in ``folder`` (not recursive); returns what went.

    Parameters
    ----------
    folder : path-like
        Where outputs are (were) written. A missing or unreadable folder is not an error.
    force : bool
        Remove every leftover of these shapes, whatever its pid says (only for a folder that
        this process alone writes, such as the box's library at start-up).
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(Path(folder)))
    except OSError:
        return removed
    for entry in entries:
        match = TEMP_FILE.fullmatch(entry.name) or WORK_DIR.fullmatch(entry.name)
        old = OLD_WORK_DIR.fullmatch(entry.name) if force else None
        if match is None and old is None:
            continue
        if match is not None and not force and _alive(int(match.group("pid"))):
            continue
        path = Path(entry.path)
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                if not (WORK_DIR.fullmatch(entry.name) or old):
                    continue
                shutil.rmtree(path)
            elif entry.is_file(follow_symlinks=False) and TEMP_FILE.fullmatch(entry.name):
                path.unlink()
            else:
                continue
            removed.append(path)
    if removed:
        logger.info("removed %d leftover(s) of interrupted runs in %s", len(removed), folder)
    return removed


__all__ = ["OLD_WORK_DIR", "TEMP_FILE", "WORK_DIR", "sweep", "temp_prefix", "work_prefix"]
