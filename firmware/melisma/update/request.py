"""Install requests from the box service (a bundle uploaded over BLE), run by ``melisma-update.service``.

The box service runs unprivileged and cannot write ``/opt/melisma``; when a client asks it to
install an uploaded bundle it writes ``DATA/firmware/install-request.json`` (atomically), which
``melisma-update.path`` notices. This module takes the request (renames it, so it runs once),
installs the bundle from the library's firmware folder and writes the outcome to
``DATA/firmware/result.json``, which the service reports in its update status (protocol 1.1).
A refused bundle changes nothing under ``/opt/melisma``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path

from ..errors import MelismaError
from .install import Box, InstallOptions, install, write_json

REQUEST_NAME = "install-request.json"
RESULT_NAME = "result.json"


def firmware_dir(data_dir: Path) -> Path:
    """``DATA/firmware``: requests and results (the bundles themselves are in ``DATA/library/firmware``)."""
    return data_dir / "firmware"


def write_request(data_dir: Path, name: str, *, allow_downgrade: bool = False) -> Path:
    """Ask the updater to install the uploaded bundle ``name`` (used by the box service)."""
    path = firmware_dir(data_dir) / REQUEST_NAME
    write_json(path, {"bundle": name, "allow_downgrade": bool(allow_downgrade), "time": time.time()})
    return path


def run_install_request(root: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
                        options: InstallOptions | None = None) -> int:
    """Take the pending request, install it, record the outcome; 0 when installed.

    ``options`` are the updater's own settings (health timeout, ...); the request decides only
    ``allow_downgrade``. While it runs, ``result.json`` says ``running`` with the updater's pid, so
    the box service can tell a running updater from one that was killed.
    """
    box = Box(root)
    data = Path(data_dir) if data_dir else box.data_dir
    fw = firmware_dir(data)
    req_path = fw / REQUEST_NAME
    taken = fw / (REQUEST_NAME + ".taken")
    try:
        os.replace(req_path, taken)
    except FileNotFoundError:
        print("melisma-update: no install request waiting")
        return 0
    try:
        req = json.loads(taken.read_text())
        name = str(req["bundle"])
        if "/" in name or name.startswith("."):
            raise ValueError(f"bundle name {name!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        write_json(fw / RESULT_NAME, {"outcome": "refused", "reason": f"unreadable install request ({exc})",
                                      "time": time.time()})
        return 12
    bundle = data / "library" / "firmware" / name
    write_json(fw / RESULT_NAME, {"outcome": "running", "bundle": name, "time": time.time(), "pid": os.getpid()})
    opts = dataclasses.replace(options or InstallOptions(), allow_downgrade=bool(req.get("allow_downgrade")))
    try:
        st = install(bundle, box.root, opts)
    except MelismaError as exc:
        last = box.state().get("last") or {}
        fresh = last.get("time", 0) >= req.get("time", 0)
        outcome = last.get("outcome") if fresh else "refused"
        write_json(fw / RESULT_NAME, {"outcome": outcome or "refused", "bundle": name, "reason": str(exc),
                                      "version": str(last.get("version") or "") if fresh else "",
                                      "time": time.time()})
        print(f"melisma-update: error: {exc}")
        return exc.exit_code
    finally:
        with contextlib.suppress(FileNotFoundError):
            taken.unlink()
    write_json(fw / RESULT_NAME, {"outcome": "installed", "bundle": name, "version": st["active_version"],
                                  "slot": st["active_slot"], "time": time.time()})
    return 0
