"""Android's Bluetooth runtime permissions, asked for by the app itself before it scans.

* Android 12 and later (API 31+): ``BLUETOOTH_SCAN`` (declared with ``neverForLocation``, so no
  location permission is involved) and ``BLUETOOTH_CONNECT``.
* Android 6 to 11 (API 23-30): BLE scanning needs ``ACCESS_FINE_LOCATION``; the old
  ``BLUETOOTH``/``BLUETOOTH_ADMIN`` permissions are install-time and need no request.

:func:`ensure_bluetooth_permissions` asks through an :class:`AndroidApi`; :func:`android_api`
returns the real one (python-for-android's ``android.permissions`` and pyjnius) on a phone and
``None`` elsewhere (a desktop needs nothing). The manifest entries these depend on are in
``companion/buildozer.spec``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

BLUETOOTH_SCAN = "android.permission.BLUETOOTH_SCAN"
BLUETOOTH_CONNECT = "android.permission.BLUETOOTH_CONNECT"
ACCESS_FINE_LOCATION = "android.permission.ACCESS_FINE_LOCATION"
#: First API level with the "Nearby devices" permissions (Android 12).
API_NEARBY_DEVICES = 31

REFUSED_NEARBY = ("Melisma needs the \"Nearby devices\" permission to find your box and connect to it. "
                  "Allow it in Settings > Apps > Melisma > Permissions, then tap Scan.")
REFUSED_LOCATION = ("On this Android version, Bluetooth scanning needs the Location permission (Melisma does not "
                    "use your location). Allow it in Settings > Apps > Melisma > Permissions, then tap Scan.")


def required_permissions(sdk_int: int) -> list[str]:
    """The runtime permissions BLE scanning and connecting need at API level ``sdk_int``."""
    if sdk_int >= API_NEARBY_DEVICES:
        return [BLUETOOTH_SCAN, BLUETOOTH_CONNECT]
    if sdk_int >= 23:
        return [ACCESS_FINE_LOCATION]
    return []  # before Android 6, install-time permissions are all there is


class AndroidApi(Protocol):
    """The few Android calls the permission logic needs."""

    sdk_int: int

    def check(self, permission: str) -> bool: ...

    def request(self, permissions: list[str], callback: Callable[[list[str], list[bool]], None]) -> None: ...


@dataclass(frozen=True)
class PermissionResult:
    granted: bool
    missing: tuple[str, ...] = ()
    message: str = ""


async def ensure_bluetooth_permissions(api: AndroidApi | None, *, timeout_s: float = 120.0) -> PermissionResult:
    """Ask for whatever is missing; ``granted`` False comes with a sentence saying how to allow it."""
    if api is None:
        return PermissionResult(True)
    wanted = required_permissions(api.sdk_int)
    missing = [perm for perm in wanted if not api.check(perm)]
    if not missing:
        return PermissionResult(True)
    logger.info("asking for Android permissions: %s", ", ".join(missing))
    loop = asyncio.get_running_loop()
    answer: asyncio.Future = loop.create_future()

    def on_result(permissions: list[str], grants: list[bool]) -> None:
        # called on Android's UI thread: hand the answer back to the asyncio loop
        result = dict(zip(permissions, grants, strict=False))
        loop.call_soon_threadsafe(lambda: answer.done() or answer.set_result(result))

    api.request(missing, on_result)
    try:
        grants = await asyncio.wait_for(answer, timeout_s)
    except asyncio.TimeoutError:
        grants = {}
    refused = tuple(perm for perm in missing if not grants.get(perm, False))
    if not refused:
        logger.info("Android permissions granted")
        return PermissionResult(True)
    logger.info("Android permissions refused: %s", ", ".join(refused))
    message = REFUSED_NEARBY if api.sdk_int >= API_NEARBY_DEVICES else REFUSED_LOCATION
    return PermissionResult(False, refused, message)


class _P4aApi:
    """python-for-android's permission module and the SDK level through pyjnius (only on a phone)."""

    def __init__(self) -> None:
        from android.permissions import check_permission, request_permissions  # type: ignore[import-not-found]
        from jnius import autoclass  # type: ignore[import-not-found]

        self._check = check_permission
        self._request = request_permissions
        self.sdk_int = int(autoclass("android.os.Build$VERSION").SDK_INT)

    def check(self, permission: str) -> bool:
        return bool(self._check(permission))

    def request(self, permissions: list[str], callback: Callable[[list[str], list[bool]], None]) -> None:
        self._request(permissions, callback)


def android_api(platform: str | None = None) -> Any:
    """The Android API on a phone, ``None`` on a desktop."""
    if platform is None:
        from kivy.utils import platform as kivy_platform

        platform = kivy_platform
    if platform != "android":
        return None
    return _P4aApi()
