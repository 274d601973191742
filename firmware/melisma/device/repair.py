"""Start-up repair of the box's state files: damaged files are moved aside, never silently replaced.

A power cut or a full card can leave ``bonds.json``, ``controls.json`` or ``jobs.json`` empty or
half-written, or something else may sit where the ``library`` folder should be. At start the box
checks each one; a damaged file is renamed ``<name>.damaged-<UTC time>`` (kept for whoever wants
to look), the problem is logged, and a short notice is shown in ``Status`` while the box is idle.

The identity (``identity.json``: the box's static random address and its IRK) is different: a new
address would make every phone lose the box. It is never regenerated while an old file exists —
the address is recovered from a damaged file when it can be read at all, and otherwise the box
refuses to start with a message saying what to do.

Examples
--------
>>> import json, tempfile
>>> from pathlib import Path
>>> from melisma.device.repair import load_identity
>>> d = Path(tempfile.mkdtemp())
>>> _ = (d / "identity.json").write_text('{"address": "F0:12:34:56:78:9A", "irk": "00112233445566778899aabbc')
>>> ident, notices = load_identity(d)
>>> ident["address"], [n for _, n in notices]
('F0:12:34:56:78:9A', ['identity.json repaired'])
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from ..errors import DeviceError
from ..protocol import ErrorCode

logger = logging.getLogger(__name__)

ADDRESS = re.compile(r"\b(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}\b")
IRK = re.compile(r"\b[0-9A-Fa-f]{32}\b")

Notice = tuple[ErrorCode, str]


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<name>.damaged-<UTC time>`` (never over an earlier one); returns the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    os.replace(path, aside)
    return aside


def _new_address() -> str:
    raw = bytearray(secrets.token_bytes(6))
    raw[0] |= 0xC0  # a static random address has its two top bits set
    return ":".join(f"{b:02X}" for b in raw)


def _valid_address(text: Any) -> bool:
    return isinstance(text, str) and ADDRESS.fullmatch(text) is not None and int(text[:2], 16) >= 0xC0


def load_identity(data_dir: Path, address: str | None = None) -> tuple[dict[str, str], list[Notice]]:
    """The box's identity, made once and kept; a damaged file is recovered or refused.

    Raises
    ------
    DeviceError
        When ``identity.json`` exists but no address can be read from it (and none was given).
    """
    from ..audio_io import atomic_write_text

    path = data_dir / "identity.json"
    notices: list[Notice] = []
    ident: dict[str, str] = {}
    changed = False
    if path.exists() or path.is_symlink():
        raw = ""
        try:
            raw = path.read_bytes().decode("utf-8", "replace")
            loaded = json.loads(raw)
            if not isinstance(loaded, dict) or not _valid_address(loaded.get("address")):
                raise ValueError("no valid address")
            if not (isinstance(loaded.get("irk"), str) and IRK.fullmatch(loaded["irk"])):
                raise ValueError("no valid IRK")
            ident = {"address": loaded["address"], "irk": loaded["irk"]}
        except (OSError, ValueError) as exc:
            found = [a for a in ADDRESS.findall(raw) if _valid_address(a)]
            irks = IRK.findall(raw)
            if not found and not address:
                raise DeviceError(
                    f"{path} is damaged ({exc}) and no address can be read from it; the box will not make a new "
                    f"address (every paired phone would lose it). Restore identity.json from a backup, or start "
                    f"with the old address (--address F0:12:34:56:78:9A, printed on the box's label and in its "
                    f"log), or move the file away to start as a new box") from None
            aside = move_aside(path)
            ident = {"address": address or found[0]}
            if irks:
                ident["irk"] = irks[0]
            changed = True
            logger.error("%s was damaged (%s); recovered address %s (damaged file kept as %s)%s", path.name, exc,
                         ident["address"], aside.name, "" if irks else "; its IRK was lost, a new one is made")
            notices.append((ErrorCode.INTERNAL, "identity.json repaired"))
    if address and ident.get("address") != address:
        ident["address"], changed = address, True
    if "address" not in ident:
        ident["address"], changed = _new_address(), True
    if "irk" not in ident:
        ident["irk"], changed = secrets.token_hex(16), True
    if changed:
        data_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(ident, indent=2), overwrite=True)
    return ident, notices


def check_json_file(path: Path, what: str, *, valid=lambda data: True) -> list[Notice]:
    """Move ``path`` aside when it is not JSON that ``valid`` accepts (a missing file is fine)."""
    if not (path.exists() or path.is_symlink()):
        return []
    try:
        if not path.is_file():
            raise ValueError("not a regular file")
        data = json.loads(path.read_bytes().decode("utf-8"))
        if not valid(data):
            raise ValueError("unexpected contents")
        return []
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        aside = move_aside(path)
        logger.error("%s was damaged (%s); moved to %s, %s", path.name, exc, aside.name, what)
        return [(ErrorCode.INTERNAL, f"{path.name} damaged")]


def _bonds_valid(data: Any) -> bool:
    """Bumble's JSON key store: {namespace: {address: {key name: {...}}}}."""
    return isinstance(data, dict) and all(
        isinstance(ns, dict) and all(isinstance(keys, dict) for keys in ns.values()) for ns in data.values())


def check_bonds(path: Path) -> list[Notice]:
    """A damaged bond store is moved aside: the box starts, phones pair again (the log says so)."""
    return check_json_file(path, "every phone must pair again (press the pair button)", valid=_bonds_valid)


def check_controls(path: Path) -> list[Notice]:
    """A damaged controls file is moved aside: the box starts with the default style and sliders."""
    return check_json_file(path, "the controls start from their defaults", valid=lambda d: isinstance(d, dict))


def check_folder(path: Path) -> list[Notice]:
    """Something that is not a folder where the folder ``path`` should be is moved aside."""
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        aside = move_aside(path)
        logger.error("%s should be a folder but is a file; moved to %s and made the folder anew", path, aside.name)
        return [(ErrorCode.INTERNAL, f"{path.name} was a file")]
    return []


def repair_data_dir(data_dir: Path, library_folders: list[str]) -> list[Notice]:
    """Every start-up check except the identity: bonds, controls, the library and its folders."""
    notices = check_bonds(data_dir / "bonds.json") + check_controls(data_dir / "controls.json")
    library = data_dir / "library"
    notices += check_folder(library)
    if library.is_dir():
        for folder in library_folders:
            notices += check_folder(library / folder)
    return notices


__all__ = ["check_bonds", "check_controls", "check_folder", "check_json_file", "load_identity", "move_aside",
           "repair_data_dir"]
