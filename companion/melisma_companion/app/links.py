"""Where the app's Bluetooth comes from: the phone's (or PC's) own stack through bleak, or a Bumble central.

* :class:`SystemLink` - bleak's platform backend: BlueZ on Linux, the Android backend in the APK.
  Passkeys are typed into the operating system's own pairing dialog.
* :class:`BumbleLink` - a Bumble central (a virtual link in ``--demo`` and the tests, or a USB
  dongle with ``--transport usb:0``); the app asks for the passkey itself.

Both hand out :class:`AppClient` objects: the companion's :class:`~melisma_companion.client.MelismaClient`
plus a callback when the link drops.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bleak.backends.device import BLEDevice

from ..client import FoundBox, MelismaClient

logger = logging.getLogger(__name__)

PasskeyProvider = Callable[[], Awaitable[int | None]]


class AppClient(MelismaClient):
    """The companion client with an ``on_lost`` callback (called when the link drops unasked)."""

    def __init__(self, device: BLEDevice | str, *, on_lost: Callable[[], None] | None = None, **kwargs: Any):
        super().__init__(device, **kwargs)
        self.on_lost = on_lost

    def _on_disconnect(self, _client: Any) -> None:
        closing = self._closing
        super()._on_disconnect(_client)
        if not closing and self.on_lost is not None:
            self.on_lost()


class SystemLink:
    """bleak on the operating system's Bluetooth stack."""

    name = "system Bluetooth"
    #: The OS shows its own passkey dialog; the app does not ask.
    supports_passkey_entry = False

    def __init__(self) -> None:
        self.passkey_provider: PasskeyProvider | None = None

    async def scan(self, timeout: float) -> list[FoundBox]:
        return await MelismaClient.scan(timeout=timeout)

    def client(self, device: BLEDevice | str, **kwargs: Any) -> AppClient:
        return AppClient(device, **kwargs)

    async def close(self) -> None:
        return None


class BumbleLink:
    """A Bumble central as the app's radio (virtual link, or an HCI transport such as a USB dongle)."""

    name = "Bumble"
    supports_passkey_entry = True

    def __init__(self, central: Any, *, transport: Any = None):
        self.central = central
        self._transport = transport
        self.passkey_provider: PasskeyProvider | None = None
        central.passkey_provider = self._ask_passkey

    async def _ask_passkey(self) -> int | None:
        if self.passkey_provider is None:
            logger.warning("the box asks for a passkey but the app has no way to ask the user")
            return None
        return await self.passkey_provider()

    @classmethod
    def on_local_link(cls, link: Any, address: str, *, keystore_path: Path | None = None) -> BumbleLink:
        """A central on a Bumble ``LocalLink`` (the demo and the tests)."""
        from ..bumble_backend import BumbleCentral

        return cls(BumbleCentral.on_local_link(link, address, keystore_path=str(keystore_path) if keystore_path
                                               else None))

    @classmethod
    async def open(cls, transport: str, address: str, *, keystore_path: Path | None = None) -> BumbleLink:
        """A central on a Bumble HCI transport, e.g. ``usb:0`` (a USB Bluetooth dongle)."""
        from bumble.transport import open_transport

        from ..bumble_backend import BumbleCentral

        opened = await open_transport(transport)
        central = BumbleCentral.with_hci(opened.source, opened.sink, address,
                                         keystore_path=str(keystore_path) if keystore_path else None)
        return cls(central, transport=opened)

    async def scan(self, timeout: float) -> list[FoundBox]:
        return await MelismaClient.scan(timeout=timeout, backend=self.central.scanner_backend)

    def client(self, device: BLEDevice | str, **kwargs: Any) -> AppClient:
        return AppClient(device, backend=self.central.client_backend, **kwargs)

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
