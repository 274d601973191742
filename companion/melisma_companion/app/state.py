"""What the app knows, as plain observable objects. The controller changes them; the screens observe them.

No Kivy here: a screen calls :meth:`Observable.observe` with a function that redraws it from the
object, and the controller calls :meth:`Observable.update`. Tests read the same objects.

Examples
--------
>>> from melisma_companion.app.state import LinkState
>>> link = LinkState()
>>> seen = []
>>> link.observe(lambda s: seen.append(s.phase))
>>> link.update(phase="scanning")
>>> seen
['scanning']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from melisma import protocol as p

Listener = Callable[[Any], None]


class Observable:
    """A plain object whose listeners are called after every :meth:`update`."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def observe(self, listener: Listener) -> None:
        """Call ``listener(self)`` after every change."""
        self._listeners.append(listener)

    def update(self, **changes: Any) -> None:
        """Set attributes (only known ones) and tell the listeners."""
        for name, value in changes.items():
            if name.startswith("_") or not hasattr(self, name):
                raise AttributeError(f"{type(self).__name__} has no field {name!r}")
            setattr(self, name, value)
        self.notify()

    def notify(self) -> None:
        for listener in list(self._listeners):
            listener(self)


class LinkState(Observable):
    """Finding, connecting to and pairing with a box."""

    #: phases: idle, scanning, connecting, pairing (waiting for the user), ready, reconnecting, lost
    def __init__(self) -> None:
        super().__init__()
        self.phase = "idle"
        self.boxes: list = []  # FoundBox, strongest first
        self.box_name = ""
        self.box_address = ""
        self.box_version: tuple[int, int] | None = None
        self.bonded = False
        self.pairing = False  # a pairing attempt is in progress
        self.passkey_wanted = False  # the box shows a passkey and waits for it
        self.message = ""
        self.demo_display = ""  # what the demo box's display shows (only in --demo)


class LibraryState(Observable):
    """The box's files, what is chosen for the mix, and the upload in progress."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[p.LibraryEntry] = []
        self.take = ""  # box name of the take chosen for the mix
        self.backing = ""
        self.uploading = ""  # local file name being uploaded
        self.upload_done = 0
        self.upload_total = 0
        self.upload_resumed_from = 0
        self.message = ""

    def names(self, kind: p.FileKind) -> list[str]:
        return [e.name for e in self.entries if e.kind is kind]


class JobState(Observable):
    """The one-tap mix: style, the job's step, stage and progress."""

    def __init__(self) -> None:
        super().__init__()
        self.style = p.Style.CPOP
        self.running = False
        self.step = ""  # analyze, render, fetch
        self.stage = ""
        self.progress = 0.0  # 0..1 over the whole mix
        self.job_id = 0
        self.plan_name = ""
        self.mix_name = ""
        self.done = False
        self.message = ""


class ShapeState(Observable):
    """Sliders (the box's -1..+1 values), playhead and the preview."""

    def __init__(self) -> None:
        super().__init__()
        self.sliders: dict[str, float] = {name: 0.0 for name in p.SLIDER_NAMES}
        self.playhead_s = 0.0
        self.duration_s = 0.0
        self.preview = ""  # '', rendering, downloading, playing, failed
        self.timings: dict[str, float] = {}
        self.previews_played = 0
        self.message = ""


class ResultState(Observable):
    """The downloaded plan, the report of its latest render (the written mix's loudness) and the summary."""

    def __init__(self) -> None:
        super().__init__()
        self.plan: dict | None = None
        self.report: dict | None = None
        self.summary: list[str] = []


class KeepState(Observable):
    """Downloading, saving and playing the mix."""

    def __init__(self) -> None:
        super().__init__()
        self.downloading = False
        self.done = 0
        self.total = 0
        self.resumed_from = 0
        self.local_path = ""
        self.saved_path = ""
        self.playing = False
        self.message = ""


class AppState:
    """Everything the screens show."""

    def __init__(self) -> None:
        self.link = LinkState()
        self.library = LibraryState()
        self.job = JobState()
        self.shape = ShapeState()
        self.result = ResultState()
        self.keep = KeepState()
        self.status = StatusLine()


class StatusLine(Observable):
    """The one line at the bottom: the last thing that happened, or the last problem, in words."""

    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.is_error = False

    def say(self, text: str, *, error: bool = False) -> None:
        self.update(text=text, is_error=error)
