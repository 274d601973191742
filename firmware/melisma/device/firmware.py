"""Firmware updates asked for over BLE (protocol 1.1): hand an uploaded bundle to the updater, follow it.

The box service runs as the unprivileged ``melisma`` user and cannot write ``/opt/melisma``. A
client uploads a signed bundle as ``FileKind.FIRMWARE`` (it lands in ``DATA/library/firmware``,
beside the audio folders, never listed with them) and writes ``FirmwareInstallCommand``; this
module checks the request and writes ``DATA/firmware/install-request.json`` through
:func:`melisma.update.request.write_request`. The root-owned ``melisma-update.path`` unit sees the
file and starts ``melisma-update install-request``, which verifies and installs the bundle and
records what happens in ``DATA/firmware/result.json`` and the updater's state file
``ROOT/opt/melisma/state.json``. :func:`read_update_status` turns those files into the
:class:`~melisma.protocol.UpdateStatus` the box notifies; :class:`FirmwareUpdates` polls them
while an update runs (the service itself restarts after the switch and picks the update up again
from the same files).

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> read_update_status(d / "data", d / "root").phase.name
'IDLE'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from .. import protocol as p
from ..errors import DeviceError

logger = logging.getLogger(__name__)

#: Seconds between two looks at the updater's files while an update runs.
POLL_INTERVAL_S = 0.5

#: Updater steps (``state.json`` ``in_progress.step``) and the phase each one shows.
_STEP_PHASES = {"clear": p.UpdatePhase.INSTALLING, "unpack": p.UpdatePhase.INSTALLING,
                "venv": p.UpdatePhase.INSTALLING, "selftest": p.UpdatePhase.INSTALLING,
                "switch": p.UpdatePhase.SWITCHED, "health": p.UpdatePhase.SWITCHED}
#: ``result.json`` outcomes (written by ``melisma-update install-request``) and their phases.
_OUTCOME_PHASES = {"installed": p.UpdatePhase.INSTALLED, "refused": p.UpdatePhase.REFUSED,
                   "rolled-back": p.UpdatePhase.ROLLED_BACK, "selftest-failed": p.UpdatePhase.FAILED,
                   "health-failed": p.UpdatePhase.FAILED, "interrupted": p.UpdatePhase.FAILED}


class UpdateRequestError(DeviceError):
    """The box refused an install command; ``code`` is the protocol ErrorCode to reply with."""

    def __init__(self, message: str, code: p.ErrorCode = p.ErrorCode.BAD_STATE):
        super().__init__(message)
        self.code = code


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _updater_status(root: Path) -> dict[str, Any]:
    from ..update.install import status

    try:
        return status(root)
    except OSError:  # an unreadable root: report nothing rather than fail the read
        return {}


def _pid_alive(pid: Any) -> bool:
    from ..update.install import pid_alive as alive

    return alive(pid)


def bundle_folder(data_dir: Path) -> Path:
    """Where uploaded bundles are (the storage's firmware folder, which the updater reads)."""
    from .storage import FOLDERS

    return data_dir / "library" / FOLDERS[p.FileKind.FIRMWARE]


def read_update_status(data_dir: str | os.PathLike, root: str | os.PathLike = "/") -> p.UpdateStatus:
    """The update's phase and outcome, read back from the request, the updater's result and its state.

    Parameters
    ----------
    data_dir : path
        The box's data folder (``/var/lib/melisma``): ``firmware/install-request.json`` (the box's
        request, until the updater takes it) and ``firmware/result.json`` (the updater's outcome).
    root : path
        The system the updater works on (``/``; a scratch root in tests): ``opt/melisma/state.json``
        says which step a running install is at and how far.

    Returns
    -------
    melisma.protocol.UpdateStatus
        ``IDLE`` when no update was asked for; otherwise the phase, progress, version and reason.
    """
    from ..update.request import REQUEST_NAME, RESULT_NAME, firmware_dir

    fw = firmware_dir(Path(data_dir))
    request = _read_json(fw / REQUEST_NAME)
    if request is not None:
        return p.UpdateStatus(p.UpdatePhase.REQUESTED, 0.0, __version__, "", str(request.get("bundle", "")),
                              "waiting for the updater (melisma-update.path)")
    result = _read_json(fw / RESULT_NAME)
    taken = _read_json(fw / (REQUEST_NAME + ".taken"))  # the updater took the request, has not answered yet
    if taken is not None and float(taken.get("time", 0) or 0) > float((result or {}).get("time", 0) or 0):
        return p.UpdateStatus(p.UpdatePhase.VERIFYING, 0.0, __version__, "", str(taken.get("bundle", "")),
                              "the updater took the request")
    if result is None:
        return p.UpdateStatus(p.UpdatePhase.IDLE, 0.0, __version__)
    bundle = str(result.get("bundle", ""))
    outcome = str(result.get("outcome", ""))
    since = float(result.get("time", 0) or 0)
    if outcome == "running":
        if "pid" in result and not _pid_alive(result.get("pid")):
            return p.UpdateStatus(p.UpdatePhase.FAILED, 0.0, __version__, "", bundle,
                                  "the updater stopped before it finished (killed or the power was cut); "
                                  "`melisma-update status` says which slot is active")
        st = _updater_status(Path(root))
        step = st.get("in_progress") or {}
        pending = st.get("pending_health_check") or {}
        if float(step.get("time", 0) or 0) >= since and step.get("step") in _STEP_PHASES:
            phase = _STEP_PHASES[step["step"]]
            progress = min(1.0, max(0.0, float(step.get("progress", 0.0) or 0.0)))
            return p.UpdateStatus(phase, progress, __version__, str(step.get("version", "")), bundle,
                                  f"step {step['step']}, slot {step.get('slot', '?')}")
        last = st.get("last_update") or {}
        if float(last.get("time", 0) or 0) >= since and last.get("outcome") in _OUTCOME_PHASES:
            # the updater has its outcome and is about to write it (with its full reason) to result.json
            phase = p.UpdatePhase.INSTALLING if last["outcome"] == "selftest-failed" else p.UpdatePhase.SWITCHED
            return p.UpdateStatus(phase, 0.95, __version__, str(last.get("version", "")), bundle,
                                  f"finishing ({last['outcome']})")
        if float(pending.get("since", 0) or 0) >= since:
            return p.UpdateStatus(p.UpdatePhase.SWITCHED, 0.9, __version__, str(pending.get("version", "")), bundle,
                                  f"health check of slot {pending.get('trial_slot', '?')}")
        return p.UpdateStatus(p.UpdatePhase.VERIFYING, 0.0, __version__, "", bundle,
                              "checking the signature and every digest")
    phase = _OUTCOME_PHASES.get(outcome, p.UpdatePhase.FAILED)
    version = str(result.get("version", ""))
    # the updater names the bundle by its path on the box; the app knows it by its name
    reason = str(result.get("reason", "")).replace(f"{bundle_folder(Path(data_dir))}{os.sep}", "")
    if phase is p.UpdatePhase.INSTALLED:
        reason = f"slot {result.get('slot', '?')}"
    elif phase is p.UpdatePhase.FAILED and outcome not in _OUTCOME_PHASES:
        reason = f"outcome {outcome!r}: {reason}"
    return p.UpdateStatus(phase, 1.0 if phase is p.UpdatePhase.INSTALLED else 0.0, __version__, version, bundle,
                          reason)


class FirmwareUpdates:
    """The box's side of a BLE firmware update: the install command and the update status.

    Parameters
    ----------
    data_dir : path
        The box's data folder (requests and results live in ``DATA/firmware``).
    storage : melisma.device.storage.Storage
        Where uploaded bundles are (``FileKind.FIRMWARE``).
    root : path
        The system the updater installs into (``/`` on a box).
    busy : callable, optional
        Returns a reason (str) when the box must not restart now (a job or the box's audio runs),
        else ``""``.
    """

    def __init__(self, data_dir: str | os.PathLike, storage: Any, *, root: str | os.PathLike = "/",
                 busy: Callable[[], str] | None = None):
        self.data_dir = Path(data_dir)
        self.storage = storage
        self.root = Path(root)
        self.busy = busy or (lambda: "")
        self.listeners: list[Callable[[p.UpdateStatus], None]] = []
        self._last: p.UpdateStatus | None = None
        self._task: asyncio.Task | None = None

    def status(self) -> p.UpdateStatus:
        """The current update status (read from the files now)."""
        return read_update_status(self.data_dir, self.root)

    def install(self, msg: p.FirmwareInstallCommand) -> int:
        """Check the command and write the install request; returns 0 (an update is not a job).

        Raises
        ------
        UpdateRequestError
            An update already runs (BUSY), a job or the box's audio runs (BUSY), this box was not
            installed by ``melisma-update`` (BAD_STATE).
        melisma.device.storage.StorageError
            No uploaded bundle of that name (NOT_FOUND).
        """
        from ..update.install import Box
        from ..update.request import write_request

        self.storage.existing(p.FileKind.FIRMWARE, msg.name)  # NOT_FOUND names what is there
        current = self.status()
        if not current.phase.finished:
            raise UpdateRequestError(f"an update of {current.bundle or 'a bundle'} is already "
                                     f"{current.phase.name.lower()}; wait for its outcome in the update status",
                                     p.ErrorCode.BUSY)
        why = self.busy()
        if why:
            raise UpdateRequestError(f"{why}; the update restarts the box, install after it finishes", p.ErrorCode.BUSY)
        box = Box(self.root)
        active = box.active_slot()
        if active is None or box.slot_info(active) is None:
            raise UpdateRequestError(f"this box was not installed with melisma-update (no complete slot behind "
                                     f"{box.current}); install it from a bundle first (firmware/docs/install.md)",
                                     p.ErrorCode.BAD_STATE)
        path = write_request(self.data_dir, msg.name, allow_downgrade=msg.allow_downgrade)
        logger.info("firmware install of %s asked for: %s", msg.name, path)
        self.poll()
        self.watch()
        return 0

    def check_deletable(self, name: str) -> None:
        """Raise BUSY when ``name`` is the bundle of an update that has no outcome yet."""
        current = self.status()
        if not current.phase.finished and current.bundle == name:
            raise UpdateRequestError(f"{name} is being installed ({current.phase.name.lower()}); delete it after the "
                                     f"update's outcome", p.ErrorCode.BUSY)

    # -- following the updater ------------------------------------------------------------------

    def poll(self) -> p.UpdateStatus:
        """Read the status and tell the listeners when it changed."""
        status = self.status()
        if status != self._last:
            self._last = status
            for cb in list(self.listeners):
                cb(status)
        return status

    def watch(self) -> None:
        """Poll the updater's files until the update has an outcome (no-op when already watching)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            try:
                status = self.poll()
            except Exception:  # a bug here must not take the BLE service down; try again
                logger.exception("reading the update status failed")
                status = None
            if status is not None and status.phase.finished:
                return
            await asyncio.sleep(POLL_INTERVAL_S)

    def start(self) -> None:
        """At service start: pick up an update that is still running (the service restarts after a switch)."""
        if not self.poll().phase.finished:
            self.watch()

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


__all__ = ["POLL_INTERVAL_S", "FirmwareUpdates", "UpdateRequestError", "read_update_status"]
