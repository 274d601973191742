"""The app tests: a real Kivy window on a virtual X server (Xvfb, started here), the real box code on a
Bumble virtual link, simulated touches through Kivy's own input dispatch (``UnitTestTouch``).

``app_run`` gives an :class:`AppRun`: ``async with app_run(...) as run:`` starts the box (the demo
box code: :class:`melisma_companion.app.demo.DemoBox`) and the app, and offers ``tap``, ``drag``,
``type_text`` and ``until`` (wait until what the user sees says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

APP_WIDTH, APP_HEIGHT = 480, 860


def _free_display() -> int:
    for n in range(90, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number in 90..199")


@pytest.fixture(scope="session")
def xvfb(tmp_path_factory) -> str:
    """Start Xvfb (installed by tools/run with the test packages) and point Kivy at it."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.fail("Xvfb is not installed; run `tools/run test` (it installs the xvfb package) or "
                    "apt-get install xvfb")
    display = _free_display()
    proc = subprocess.Popen([exe, f":{display}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{display}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Xvfb did not start on :{display}")
        time.sleep(0.05)
    os.environ["DISPLAY"] = f":{display}"
    os.environ["KIVY_HOME"] = str(tmp_path_factory.mktemp("kivy-home"))
    os.environ["SDL_AUDIODRIVER"] = "dummy"  # SDL's real audio path with no sound card: it consumes the samples
    from melisma_companion.app.main import prepare_kivy

    prepare_kivy(width=APP_WIDTH, height=APP_HEIGHT)
    yield f":{display}"
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@pytest.fixture(scope="session")
def short_examples(tmp_path_factory) -> tuple[Path, Path]:
    """The bundled example take and backing cut to their first 9 s (AAC, as phones make them): fast to mix."""
    from melisma import audio_io, examples

    folder = tmp_path_factory.mktemp("phone-files")
    out = []
    for src, name in ((examples.TAKE, "my-take.m4a"), (examples.BACKING, "backing.m4a")):
        y, sr = audio_io.load_audio(src)
        audio_io.write_audio(folder / name, y[..., : 9 * sr], sr=sr)
        out.append(folder / name)
    return out[0], out[1]


class AppRun:
    """The app and a box on one virtual link, driven like a user would."""

    def __init__(self, data_dir: Path, *, passkey: bool, preload: bool, examples: tuple[Path, Path],
                 start_dir: Path, save_dir: Path, box_version: tuple[int, int] | None = None):
        self.data_dir = data_dir
        self.passkey = passkey
        self.preload = preload
        self.examples = examples
        self.start_dir = start_dir
        self.save_dir = save_dir
        self.box_version = box_version
        self.app: Any = None
        self.demo: Any = None
        self._task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    async def __aenter__(self) -> AppRun:
        from melisma import protocol as p
        from melisma_companion.app.controller import Companion
        from melisma_companion.app.main import start_demo
        from melisma_companion.app.state import AppState
        from melisma_companion.app.ui import MelismaApp

        self.state = AppState()
        self.demo, self.link, _ = await start_demo(self.state, self.data_dir, passkey=self.passkey,
                                                    preload=self.preload, examples=self.examples)
        if self.box_version is not None:  # the real box, announcing another protocol version
            announced = p.software_revision(self.box_version).encode()
            for char in self.demo.box.device_information.characteristics:
                if "2A28" in str(char.uuid).upper():
                    char.value.read = lambda connection: announced
        self.companion = Companion(self.state, self.link, self.data_dir / "demo", scan_timeout_s=1.0)
        self.app = MelismaApp(self.companion, demo=self.demo, start_dir=self.start_dir, save_dir=self.save_dir)
        self._task = asyncio.ensure_future(self.app.async_run(async_lib="asyncio"))
        await self.until(lambda: (self.app.root is not None and self.state.link.phase != "idle")
                         or self.state.link.boxes, what="the app to start", timeout=30)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.app is not None:
            if self.app.popup is not None:
                self.app.popup.dismiss()
            self.app.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 20)
            await self.companion.close()
        if self.demo is not None:
            await self.demo.stop()

    # -- what the user sees ---------------------------------------------------------------------

    def screen(self, name: str | None = None) -> Any:
        sm = self.app.root.ids.sm
        return sm.get_screen(name) if name else sm.current_screen

    @property
    def current(self) -> str:
        return self.app.root.ids.sm.current

    @property
    def status_text(self) -> str:
        return self.app.root.ids.status.text

    async def until(self, predicate: Callable[[], Any], *, what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                value = predicate()
                if value:
                    await asyncio.sleep(0.05)  # one more frame: the window shows it
                    return value
            if time.monotonic() > deadline:
                status = self.status_text if self.app and self.app.root else ""
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; status line: {status!r}, "
                                     f"screen {self.current if self.app and self.app.root else '?'}")
            await asyncio.sleep(0.05)

    # -- touches ----------------------------------------------------------------------------------

    async def tap(self, widget: Any) -> None:
        """A finger down and up on the widget's centre, through the window's input dispatch."""
        from kivy.tests.common import UnitTestTouch

        assert not widget.disabled, f"{widget} is disabled; the user cannot tap it"
        assert widget.get_root_window() is not None, f"{widget} is not on screen"
        await asyncio.sleep(0.05)
        x, y = widget.to_window(*widget.center)
        touch = UnitTestTouch(x, y)
        touch.touch_down()
        await asyncio.sleep(0.03)
        touch.touch_up()
        await asyncio.sleep(0.1)

    async def drag_slider(self, slider: Any, value: float) -> None:
        """Put a finger on the slider's knob, move it to ``value``, let go."""
        from kivy.tests.common import UnitTestTouch

        x, y = slider.to_window(*slider.value_pos)
        touch = UnitTestTouch(x, y)
        touch.touch_down()
        await asyncio.sleep(0.05)
        lo = slider.x + slider.padding
        hi = slider.right - slider.padding
        target_x = lo + (hi - lo) * (value - slider.min) / (slider.max - slider.min)
        steps = 6
        for i in range(1, steps + 1):
            tx, ty = slider.to_window(x + (target_x - x) * i / steps, y)
            touch.touch_move(tx, ty)
            await asyncio.sleep(0.03)
        touch.touch_up()
        await asyncio.sleep(0.1)

    async def type_text(self, text_input: Any, text: str) -> None:
        await self.tap(text_input)
        text_input.insert_text(text)  # what the (virtual) keyboard does with each key
        await asyncio.sleep(0.05)

    async def choose_file(self, path: Path) -> None:
        """In the open file chooser, tap the file's entry, then the OK/Send button."""
        popup = self.app.popup
        chooser = popup.chooser

        def entry():
            return next(w for w in chooser.walk(restrict=True) if getattr(w, "path", None) == str(path))

        await self.until(entry, what=f"{path.name} in the file chooser")
        await self.tap(entry())
        await self.until(lambda: chooser.selection == [str(path)], what=f"{path.name} selected")
        await self.tap(popup.ids.ok)

    def background(self, coro: Any) -> None:
        """Run ``coro`` beside the test (kept referenced until it ends)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def box_connection(self) -> Any:
        return next(iter(self.demo.box.device.connections.values()))

    async def drop_link(self) -> None:
        """The box drops the link (out of range, a phone call...)."""
        await self.box_connection().disconnect()

    async def connect_and_pair(self) -> None:
        """Scan, tap the box, pair (typing the passkey the demo box shows, if it shows one)."""
        find = self.screen("find")
        await self.until(lambda: find.ids.box_list.children, what="a box in the scan list")
        await self.tap(find.ids.box_list.children[-1])
        pair = self.screen("pair")
        await self.until(lambda: self.current == "pair" and not pair.ids.pair_button.disabled, what="the pair screen")
        await self.tap(pair.ids.pair_button)
        if self.passkey:
            await self.until(lambda: not pair.ids.passkey_input.disabled, what="the passkey field")
            await self.until(lambda: self.demo.last_passkey is not None, what="the box's passkey")
            await self.type_text(pair.ids.passkey_input, f"{self.demo.last_passkey:06d}")
            await self.tap(pair.ids.passkey_ok)
        await self.until(lambda: self.current == "library" and self.state.link.phase == "ready",
                         what="the library screen after pairing")


@pytest.fixture
def app_run(xvfb, tmp_path, short_examples):
    def make(*, passkey: bool = True, preload: bool = False, data_dir: Path | None = None,
             box_version: tuple[int, int] | None = None) -> AppRun:
        save_dir = tmp_path / "saved"
        save_dir.mkdir(exist_ok=True)
        return AppRun(data_dir or tmp_path / "app", passkey=passkey, preload=preload, examples=short_examples,
                      start_dir=short_examples[0].parent, save_dir=save_dir, box_version=box_version)
    return make


def run(coro, timeout: float = 240):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def run_async():
    return run
