"""The box's device service: BLE peripheral (Bumble), job queue over the engine, storage.

Importing this package is cheap; Bumble is imported only by :mod:`.ble_server` and :mod:`.service`.
"""
