"""A bleak backend that drives a Bumble central, so the real bleak client code runs without an OS stack.

bleak picks a platform backend (BlueZ, CoreBluetooth, WinRT, Android) unless it is given one:
``BleakClient(device, backend=...)`` and ``BleakScanner(..., backend=...)``. This module provides
those two classes for a :class:`BumbleCentral` — a Bumble ``Device`` acting as the phone — so tests
and the benchmark run :mod:`melisma_companion.client` unchanged against the real box over a
virtual link (``LocalLink``), a ``tcp-client:`` controller, or a USB dongle.

Examples
--------
>>> import asyncio
>>> from bumble.link import LocalLink
>>> from melisma_companion.bumble_backend import BumbleCentral
>>> async def demo():
...     central = BumbleCentral.on_local_link(LocalLink(), "C0:00:00:00:00:01")
...     await central.power_on()
...     return central.client_backend.__name__, central.scanner_backend.__name__
>>> asyncio.run(demo())
('BumbleBleakClient', 'BumbleBleakScanner')
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bumble import core
from bumble.att import ATT_Error
from bumble.core import AdvertisingData, PhysicalTransport
from bumble.device import Connection, Device, DeviceConfiguration, Peer
from bumble.gatt import Characteristic
from bumble.hci import Address
from bumble.keys import JsonKeyStore, MemoryKeyStore
from bumble.pairing import PairingConfig, PairingDelegate

logger = logging.getLogger(__name__)

PasskeyProvider = Callable[[], Awaitable[int | None]]

_PROPERTY_NAMES = [
    (Characteristic.Properties.BROADCAST, "broadcast"),
    (Characteristic.Properties.READ, "read"),
    (Characteristic.Properties.WRITE_WITHOUT_RESPONSE, "write-without-response"),
    (Characteristic.Properties.WRITE, "write"),
    (Characteristic.Properties.NOTIFY, "notify"),
    (Characteristic.Properties.INDICATE, "indicate"),
    (Characteristic.Properties.AUTHENTICATED_SIGNED_WRITES, "authenticated-signed-writes"),
    (Characteristic.Properties.EXTENDED_PROPERTIES, "extended-properties"),
]


def _bleak_uuid(uuid: core.UUID) -> str:
    """Bleak's form of a UUID: the lower-case 128-bit string."""
    raw = bytes(reversed(uuid.to_bytes(force_128=True)))
    h = raw.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class _CentralDelegate(PairingDelegate):
    """The phone side of pairing: types the passkey the box shows (keyboard), or confirms Just Works."""

    def __init__(self, central: BumbleCentral):
        super().__init__(io_capability=PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY)
        self.central = central

    async def get_number(self) -> int | None:
        provider = self.central.passkey_provider
        if provider is None:
            logger.warning("the box asks for a passkey but no passkey provider was given")
            return None
        return await provider()


class BumbleCentral:
    """A Bumble device acting as the central (the phone's role), with its own bond store."""

    def __init__(self, device: Device, *, passkey_provider: PasskeyProvider | None = None):
        self.device = device
        self.passkey_provider = passkey_provider
        delegate = _CentralDelegate(self)
        device.pairing_config_factory = lambda connection: PairingConfig(
            sc=True, mitm=True, bonding=True, delegate=delegate,
            identity_address_type=PairingConfig.AddressType.RANDOM)
        self.client_backend = type("BumbleBleakClient", (BumbleBleakClient,), {"central": self})
        self.scanner_backend = type("BumbleBleakScanner", (BumbleBleakScanner,), {"central": self})
        self._powered = False

    @classmethod
    def with_hci(cls, hci_source, hci_sink, address: str, *, keystore_path: str | None = None,
                 passkey_provider: PasskeyProvider | None = None) -> BumbleCentral:
        config = DeviceConfiguration()
        config.load_from_dict({"name": "Melisma companion", "address": address})
        device = Device.from_config_with_hci(config, hci_source, hci_sink)
        device.keystore = (JsonKeyStore(str(Address(address)), keystore_path) if keystore_path
                           else MemoryKeyStore())
        return cls(device, passkey_provider=passkey_provider)

    @classmethod
    def on_local_link(cls, link, address: str, **kwargs) -> BumbleCentral:
        """A central on a virtual controller attached to ``link`` (a bumble.link.LocalLink)."""
        from bumble.controller import Controller
        from bumble.transport.common import AsyncPipeSink

        controller = Controller(f"ctrl-{address}", link=link, public_address=address)
        return cls.with_hci(controller, AsyncPipeSink(controller), address, **kwargs)

    async def power_on(self) -> None:
        if not self._powered:
            await self.device.power_on()
            self._powered = True

    async def is_bonded(self, address: str) -> bool:
        keystore = self.device.keystore
        return keystore is not None and await keystore.get(str(Address(address))) is not None


def _address_of(address_or_device: BLEDevice | str) -> str:
    return address_or_device.address if isinstance(address_or_device, BLEDevice) else address_or_device


def _att_to_bleak(exc: ATT_Error) -> BleakGATTProtocolError:
    return BleakGATTProtocolError(int(exc.error_code))


class BumbleBleakScanner(BaseBleakScanner):
    """bleak scanner backend on a Bumble central (subclassed per central; see BumbleCentral)."""

    central: BumbleCentral

    def __init__(self, detection_callback, service_uuids, scanning_mode="active", **kwargs: Any):
        super().__init__(detection_callback, service_uuids)
        self._active = scanning_mode != "passive"
        self._listener = None

    async def start(self) -> None:
        await self.central.power_on()
        self.seen_devices = {}
        device = self.central.device

        def on_advertisement(adv) -> None:
            data: AdvertisingData = adv.data
            uuids = []
            for t in (AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                      AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                      AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                      AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS):
                uuids += [_bleak_uuid(u) for u in (data.get(t) or [])]
            if not self.is_allowed_uuid(uuids):
                return
            name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(AdvertisingData.SHORTENED_LOCAL_NAME)
            manufacturer = {}
            md = data.get(AdvertisingData.MANUFACTURER_SPECIFIC_DATA)
            if md:
                manufacturer[md[0]] = bytes(md[1])
            tx = data.get(AdvertisingData.TX_POWER_LEVEL)
            address = str(adv.address).split("/")[0]
            adv_data = AdvertisementData(local_name=name, manufacturer_data=manufacturer, service_data={},
                                         service_uuids=uuids, tx_power=tx, rssi=adv.rssi, platform_data=(adv,))
            ble_device = self.create_or_update_device(address, address, name, adv.address, adv_data)
            self.call_detection_callbacks(ble_device, adv_data)

        self._listener = on_advertisement
        device.on(Device.EVENT_ADVERTISEMENT, on_advertisement)
        await device.start_scanning(active=self._active, filter_duplicates=False)

    async def stop(self) -> None:
        device = self.central.device
        if self._listener is not None:
            device.remove_listener(Device.EVENT_ADVERTISEMENT, self._listener)
            self._listener = None
        if device.scanning:
            await device.stop_scanning()


class BumbleBleakClient(BaseBleakClient):
    """bleak client backend on a Bumble central (subclassed per central; see BumbleCentral)."""

    central: BumbleCentral
    #: ATT MTU asked for on connect (a phone typically gets 185 on iOS, 247-517 on Android).
    requested_mtu: int = 517

    def __init__(self, address_or_ble_device, *, disconnected_callback=None, timeout: float = 10.0,
                 services=None, mtu: int | None = None, **kwargs: Any):
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        self._target = address_or_ble_device.details if isinstance(address_or_ble_device, BLEDevice) else None
        self._address = _address_of(address_or_ble_device)
        self._requested_mtu = mtu or self.requested_mtu
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._subscribers: dict[int, Callable] = {}

    # -- connection -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._address

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else 23

    @property
    def is_connected(self) -> bool:
        return self._connection is not None and self._connection.handle in self.central.device.connections

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        await self.central.power_on()
        device = self.central.device
        target = self._target if isinstance(self._target, Address) else Address(self._address, Address.RANDOM_DEVICE_ADDRESS)
        try:
            connection = await asyncio.wait_for(
                device.connect(target, transport=PhysicalTransport.LE), self._timeout)
        except (asyncio.TimeoutError, core.BaseBumbleError) as exc:
            raise BleakError(f"could not connect to {self._address}: {exc or 'timeout'}") from exc
        self._connection = connection
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)
        self._peer = Peer(connection)
        await self._peer.request_mtu(self._requested_mtu)
        # A bonded central encrypts with the stored key at once, as a phone's OS does.
        if await self.central.is_bonded(str(connection.peer_address)):
            try:
                await connection.encrypt()
            except core.BaseBumbleError as exc:
                logger.warning("stored bond was refused by %s (%s); pair again", self._address, exc)
        if pair and not connection.encryption:
            await self.pair()
        await self._discover()

    def _on_disconnection(self, reason) -> None:
        self._connection = None
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def _discover(self) -> None:
        peer = self._peer
        await peer.discover_services()
        collection = BleakGATTServiceCollection()
        for service in peer.services:
            await peer.discover_characteristics(service=service)
            bservice = BleakGATTService(service, service.handle, _bleak_uuid(service.uuid))
            collection.add_service(bservice)
            for char in service.characteristics:
                await peer.discover_descriptors(characteristic=char)
                props = [name for flag, name in _PROPERTY_NAMES if char.properties & flag]
                bchar = BleakGATTCharacteristic(char, char.handle, _bleak_uuid(char.uuid), props,
                                                lambda: self.mtu_size - 3, bservice)
                collection.add_characteristic(bchar)
                for desc in char.descriptors:
                    collection.add_descriptor(BleakGATTDescriptor(desc, desc.handle, _bleak_uuid(desc.type), bchar))
        self.services = collection

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._disconnected_callback_saved, self._disconnected_callback = self._disconnected_callback, None
        try:
            await connection.disconnect()
        except core.BaseBumbleError:
            pass
        finally:
            self._connection = None
            self._disconnected_callback = self._disconnected_callback_saved

    async def pair(self, *args: Any, passkey: int | None = None, **kwargs: Any) -> None:
        """Pair and bond. ``passkey``: the number shown by the box (otherwise the central's provider asks)."""
        if self._connection is None:
            raise BleakError("not connected")
        saved = self.central.passkey_provider
        if passkey is not None:
            async def given():
                return passkey
            self.central.passkey_provider = given
        try:
            await self._connection.pair()
        except (core.ProtocolError, core.BaseBumbleError) as exc:
            # forget the failed SMP session so that a retry on this link starts afresh
            self.central.device.smp_manager.sessions.pop(self._connection.handle, None)
            raise BleakError(f"pairing with {self._address} failed: {exc}") from exc
        finally:
            self.central.passkey_provider = saved

    async def unpair(self) -> None:
        keystore = self.central.device.keystore
        if keystore is not None and self._connection is not None:
            with contextlib.suppress(KeyError):
                await keystore.delete(str(self._connection.peer_address))
        await self.disconnect()

    # -- I/O ------------------------------------------------------------------------------------

    def _check(self) -> None:
        if not self.is_connected:
            raise BleakError("not connected")

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, *, use_cached=False, **kwargs) -> bytearray:
        self._check()
        try:
            return bytearray(await characteristic.obj.read_value())
        except ATT_Error as exc:
            raise _att_to_bleak(exc) from None
        except core.TimeoutError as exc:  # no answer from the box within the ATT timeout
            raise BleakError(f"{self._address} did not answer: {exc}") from None

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, *, use_cached=False, **kwargs) -> bytearray:
        self._check()
        try:
            return bytearray(await descriptor.obj.read_value())
        except ATT_Error as exc:
            raise _att_to_bleak(exc) from None
        except core.TimeoutError as exc:  # no answer from the box within the ATT timeout
            raise BleakError(f"{self._address} did not answer: {exc}") from None

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data, response: bool) -> None:
        self._check()
        try:
            await characteristic.obj.write_value(bytes(data), with_response=response)
        except ATT_Error as exc:
            raise _att_to_bleak(exc) from None
        except core.TimeoutError as exc:  # no answer from the box within the ATT timeout
            raise BleakError(f"{self._address} did not answer: {exc}") from None

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data) -> None:
        self._check()
        try:
            await descriptor.obj.write_value(bytes(data), with_response=True)
        except ATT_Error as exc:
            raise _att_to_bleak(exc) from None
        except core.TimeoutError as exc:  # no answer from the box within the ATT timeout
            raise BleakError(f"{self._address} did not answer: {exc}") from None

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs) -> None:
        self._check()

        def on_value(value: bytes) -> None:
            callback(bytearray(value))

        try:
            await self._peer.subscribe(characteristic.obj, on_value)
        except ATT_Error as exc:
            raise _att_to_bleak(exc) from None
        self._subscribers[characteristic.handle] = on_value

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        self._check()
        subscriber = self._subscribers.pop(characteristic.handle, None)
        try:
            await self._peer.unsubscribe(characteristic.obj, subscriber)
        except ATT_Error as exc:
            raise _att_to_bleak(exc) from None
