"""Pico entry point: start the front panel unless the Mode button is held at power-on.

Hold Mode while plugging the panel in to skip it (safe mode) and get a plain REPL; Ctrl-C on the
REPL port stops the panel too. Copied to the Pico by tools/flash-panel.
"""

import asyncio

from mpanel import VERSION
from mpanel.hw_pico import PicoHardware, safe_mode_requested


def run() -> None:
    if safe_mode_requested():
        print(f"melisma-panel {VERSION}: safe mode (Mode held at power-on); panel not started")
        return
    from mpanel.app import PanelApp

    app = PanelApp(PicoHardware())

    async def forever() -> None:
        app.start()
        while True:
            await asyncio.sleep(3600)

    asyncio.run(forever())


run()
