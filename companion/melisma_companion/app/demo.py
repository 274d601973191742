"""The box half of ``melisma-app --demo``: the real box code on a Bumble virtual link, in the app's process.

This is the only app module that imports the device side (:mod:`melisma.device`): it *is* the
box of the demo. It starts a :class:`~melisma.device.ble_server.MelismaBox` (Bumble GATT
peripheral, job queue, storage and the real engine) on a ``LocalLink``, copies the bundled
example take and backing into its library, and opens its pairing window, so a newcomer sees the
whole flow with no hardware. The phone half is an ordinary
:class:`~melisma_companion.app.links.BumbleLink` on the same link.

The box's "display" (the passkey it shows) is reported through ``on_display`` so the app can
show it on screen, in a strip marked as the demo box's.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from melisma import protocol as p

logger = logging.getLogger("melisma_companion.app.demo")

DEMO_BOX_ADDRESS = "F0:DE:30:00:4D:31"
DEMO_PHONE_ADDRESS = "C0:DE:30:00:00:01"
#: The demo box keeps its pairing window open this long (a newcomer reads before tapping).
DEMO_PAIRING_WINDOW_S = 600.0


class DemoBox:
    """A box on a virtual link with the bundled examples in its library."""

    def __init__(self, link: Any, data_dir: Path, *, passkey: bool = True,
                 on_display: Callable[[str], None] | None = None, engine: Any = None,
                 examples: tuple[Path, Path] | None = None, preload: bool = True):
        self.link = link
        self.data_dir = Path(data_dir)
        self.passkey = passkey
        self.on_display = on_display
        self.engine = engine
        if examples is None:
            from melisma import examples as bundled

            examples = (bundled.TAKE, bundled.BACKING)
        self.examples = examples
        self.preload = preload
        self.last_passkey: int | None = None
        self.box: Any = None
        self._controller: Any = None

    def _show(self, number: int) -> None:
        self.last_passkey = number
        text = f"Demo box display: passkey {number:06d}"
        logger.info("demo box shows passkey %06d", number)
        if self.on_display is not None:
            self.on_display(text)

    async def start(self) -> DemoBox:
        from melisma.device.ble_server import MelismaBox, local_link_hci

        src, sink = local_link_hci(self.link, DEMO_BOX_ADDRESS)
        self._controller = src
        self.box = MelismaBox(src, sink, data_dir=self.data_dir, address=DEMO_BOX_ADDRESS, engine=self.engine,
                              show_passkey=self._show if self.passkey else None)
        if self.preload:
            self.load_examples()
        await self.box.start()
        self.press_pair_button()
        return self

    def load_examples(self) -> None:
        """Put the bundled example take and backing in the box's library (once)."""
        take, backing = self.examples
        for kind, src in ((p.FileKind.TAKE, take), (p.FileKind.BACKING, backing)):
            dest = self.box.storage.path(kind, src.name)
            if not dest.exists():
                tmp = dest.with_name("." + dest.name + ".tmp")
                shutil.copyfile(src, tmp)
                tmp.replace(dest)
                logger.info("demo box: %s %s in the library", kind.name.lower(), dest.name)

    @property
    def example_dir(self) -> Path:
        """Where the example take and backing are (the file chooser starts there in the demo)."""
        return Path(self.examples[0]).parent

    def press_pair_button(self, seconds: float = DEMO_PAIRING_WINDOW_S) -> None:
        """What the box's pair button does (``melisma-device pair``)."""
        self.box.pairing_window.open(seconds)
        if self.on_display is not None:
            self.on_display(f"Demo box display: pairing open for {seconds:.0f} s"
                            + (" (it shows a passkey when you pair)" if self.passkey else " (Just Works)"))

    async def stop(self) -> None:
        if self.box is not None:
            await self.box.stop()
            self.link.remove_controller(self._controller)
            self.box = None
