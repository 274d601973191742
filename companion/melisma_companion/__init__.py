"""The Melisma companion app's non-UI parts: the BLE client (bleak) and a Bumble bleak backend.

Only :mod:`melisma.protocol` (and :mod:`melisma.errors`) are imported from the firmware side.
"""
