"""Melisma front panel firmware (MicroPython on a Raspberry Pi Pico).

The pure core (``protocol``, ``encoder``, ``buttons``, ``state``, ``pins``) imports nothing that
is MicroPython-only, so the same files run on CPython (tests), on the MicroPython unix port (tests,
``tools/panel-sim``) and on the Pico. ``hw_pico`` is the thin hardware layer; ``app`` joins them.
"""

#: Firmware version, sent in the hello line as ``melisma-panel/<VERSION>``.
VERSION = "0.1.0"
