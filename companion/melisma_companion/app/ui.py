"""The Kivy side: the app, one screen per step (each with its ``kv/*.kv`` file), the pitch view, the player.

Screens only observe :mod:`~melisma_companion.app.state` objects and call the
:class:`~melisma_companion.app.controller.Companion`'s ``tap_*`` methods; they hold no state of
their own beyond widgets. Everything runs on the one asyncio loop of ``App.async_run``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.core.text import LabelBase
from kivy.graphics import Color, Line, Rectangle
from kivy.lang import Builder
from kivy.metrics import dp
from kivy.properties import BooleanProperty, ObjectProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.popup import Popup
from kivy.uix.screenmanager import Screen
from kivy.uix.slider import Slider
from kivy.uix.widget import Widget
from kivy.utils import escape_markup
from melisma import protocol as p

from . import words
from .controller import Companion, Player
from .pitch import GROUP_COLOURS, GROUP_LABELS, ORNAMENT_GROUPS, PitchLayout, note_name

logger = logging.getLogger("melisma_companion.app.ui")

KV_DIR = Path(__file__).resolve().parent / "kv"
KV_FILES = ("root.kv", "find.kv", "pair.kv", "library.kv", "mix.kv", "shape.kv", "result.kv", "keep.kv")
#: Fonts with the Chinese characters of the legend (滑音, 倚音): Debian's fonts-droid-fallback, Android's own.
CJK_FONTS = ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
             "/usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf",
             "/system/fonts/NotoSansCJK-Regular.ttc", "/system/fonts/DroidSansFallback.ttf")
AUDIO_FILTERS = ["*" + ext for ext in p.AUDIO_EXTENSIONS] + ["*" + ext.upper() for ext in p.AUDIO_EXTENSIONS]


_CJK = re.compile(r"[\u3000-\u9fff\uf900-\ufaff]+")


def cjk_markup(text: str, font: str) -> str:
    """Kivy markup of ``text`` with runs of Chinese characters in ``font`` (the Latin font has no CJK glyphs)."""
    out, pos = [], 0
    for m in _CJK.finditer(text):
        out.append(escape_markup(text[pos:m.start()]))
        out.append(f"[font={font}]{m.group(0)}[/font]" if font != "Roboto" else m.group(0))
        pos = m.end()
    out.append(escape_markup(text[pos:]))
    return "".join(out)


def register_cjk_font() -> str:
    """Register a font with CJK glyphs as ``MelismaCJK``; returns its name (Kivy's default if none is found)."""
    for path in CJK_FONTS:
        if Path(path).exists():
            LabelBase.register("MelismaCJK", path)
            return "MelismaCJK"
    return "Roboto"


# ----------------------------------------------------------------------------------------------
# Widgets


class KivyPlayer(Player):
    """Plays a file with Kivy's SoundLoader (SDL_mixer on a desktop, Android's player in the APK)."""

    def __init__(self, on_finished: Any = None):
        self.sound: Any = None
        self.on_finished = on_finished

    def play(self, path: Path) -> bool:
        from kivy.core.audio import SoundLoader

        self.stop()
        sound = SoundLoader.load(str(path))
        if sound is None or not sound.length:
            logger.info("cannot play %s on this device", path)
            return False
        sound.bind(on_stop=self._stopped)
        self.sound = sound
        sound.play()
        return sound.state == "play"

    def _stopped(self, *_args: Any) -> None:
        if self.on_finished is not None:
            self.on_finished()

    def stop(self) -> None:
        if self.sound is not None:
            sound, self.sound = self.sound, None
            sound.unbind(on_stop=self._stopped)
            sound.stop()
            sound.unload()

    @property
    def playing(self) -> bool:
        return self.sound is not None and self.sound.state == "play"


class SemanticSlider(Slider):
    """A slider that says when it is let go (``on_release``)."""

    name = StringProperty("")

    def __init__(self, **kwargs: Any):
        self.register_event_type("on_release")
        super().__init__(**kwargs)

    def on_touch_up(self, touch: Any) -> bool:
        grabbed = touch.grab_current is self
        handled = super().on_touch_up(touch)
        if grabbed:
            self.dispatch("on_release")
        return handled

    def on_release(self) -> None:
        pass


class PitchView(Widget):
    """The sung and corrected pitch curves, notes and their targets, ornaments by type (Kivy graphics)."""

    plan = ObjectProperty(None, allownone=True)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.layout: PitchLayout | None = None
        self.drawn_notes: list[Rectangle] = []
        self.drawn_targets: list[Line] = []
        self.drawn_ornaments: list[tuple[str, Rectangle]] = []
        self.drawn_sung: list[Line] = []
        self.drawn_corrected: list[Line] = []
        self._labels: list[Label] = []
        self.bind(pos=self._redraw, size=self._redraw, plan=self._redraw)

    def _redraw(self, *_args: Any) -> None:
        self.canvas.clear()
        for label in self._labels:
            self.remove_widget(label)
        self._labels = []
        self.drawn_notes, self.drawn_targets, self.drawn_ornaments = [], [], []
        self.drawn_sung, self.drawn_corrected = [], []
        if not self.plan or self.width < 10 or self.height < 10:
            self.layout = None
            return
        pad = dp(34)
        lay = PitchLayout(self.plan, width=self.width - pad - dp(4), height=self.height - dp(8),
                          x0=self.x + pad, y0=self.y + dp(4))
        self.layout = lay
        with self.canvas:
            Color(0.08, 0.08, 0.1, 1)
            Rectangle(pos=self.pos, size=self.size)
            Color(1, 1, 1, 0.12)
            for _midi, y in lay.grid():
                Line(points=[lay.x0, y, lay.x0 + lay.width, y], width=1)
            for note in lay.notes:  # targets: thin white lines
                Color(1, 1, 1, 0.55)
                self.drawn_targets.append(Line(points=list(note.target), width=1.1))
            for note in lay.notes:  # sung note centres: blue bars
                Color(0.25, 0.55, 1.0, 0.55)
                self.drawn_notes.append(Rectangle(pos=note.rect[:2], size=note.rect[2:]))
            Color(0.6, 0.75, 1.0, 0.9)
            for pts in lay.sung_lines:
                self.drawn_sung.append(Line(points=pts, width=1.0))
            Color(0.3, 0.95, 0.55, 1.0)
            for pts in lay.corrected_lines:
                self.drawn_corrected.append(Line(points=pts, width=1.3))
            for orn in lay.ornaments:
                Color(*GROUP_COLOURS[orn.group], 1)
                self.drawn_ornaments.append((orn.group, Rectangle(pos=orn.rect[:2], size=orn.rect[2:])))
        for midi, y in lay.grid():
            label = Label(text=note_name(midi), font_size="10sp", size=(pad - dp(2), dp(14)),
                          pos=(self.x, y - dp(7)), color=(1, 1, 1, 0.6))
            self._labels.append(label)
            self.add_widget(label)


# ----------------------------------------------------------------------------------------------
# Screens


class BaseScreen(Screen):
    @property
    def companion(self) -> Companion:
        return App.get_running_app().companion

    @property
    def state(self) -> Any:
        return App.get_running_app().state


class FindScreen(BaseScreen):
    def refresh(self, link: Any) -> None:
        ids = self.ids
        ids.message.text = link.message
        ids.scan_button.disabled = link.phase in ("scanning", "connecting")
        ids.scan_button.text = "Scanning…" if link.phase == "scanning" else "Scan"
        ids.box_list.clear_widgets()
        for box in link.boxes:
            row = Button(text=f"{self.companion.name_of(box)}    {words.signal_words(box.rssi)} ({box.rssi} dBm)",
                         size_hint_y=None, height=dp(56), disabled=link.phase == "connecting")
            row.box = box
            row.bind(on_release=lambda btn: self.companion.tap_box(btn.box))
            ids.box_list.add_widget(row)


class PairScreen(BaseScreen):
    def refresh(self, link: Any) -> None:
        ids = self.ids
        ids.title.text = f"Pair with {link.box_name}" if link.box_name else "Pair with your box"
        ids.message.text = link.message
        ids.pair_button.disabled = link.pairing or link.phase != "pairing"
        ids.passkey_row.opacity = 1 if link.passkey_wanted else 0
        ids.passkey_input.disabled = not link.passkey_wanted
        ids.passkey_ok.disabled = not link.passkey_wanted
        if link.passkey_wanted and not ids.passkey_input.focus:
            ids.passkey_input.text = ""
        ids.demo_display.text = link.demo_display
        app = App.get_running_app()
        ids.demo_pair_button.opacity = 1 if app.demo is not None else 0
        ids.demo_pair_button.disabled = app.demo is None

    def send_passkey(self) -> None:
        self.companion.submit_passkey(self.ids.passkey_input.text)

    def press_demo_button(self) -> None:
        app = App.get_running_app()
        if app.demo is not None:
            app.demo.press_pair_button()


class FilePopup(Popup):
    """The desktop's file chooser: pick a file to send (or a folder and a name to save as)."""

    chooser = ObjectProperty(None)
    save_mode = BooleanProperty(False)


class LibraryScreen(BaseScreen):
    def refresh(self, lib: Any) -> None:
        ids = self.ids
        if lib.uploading:
            pct = 100 * lib.upload_done / max(1, lib.upload_total)
            resumed = (f" (resumed at {words.size_words(lib.upload_resumed_from)})" if lib.upload_resumed_from else "")
            ids.upload_label.text = f"Sending {lib.uploading}: {pct:.0f} %{resumed}"
            ids.upload_bar.value = pct
        else:
            ids.upload_label.text = lib.message
            ids.upload_bar.value = 100 if lib.message.endswith("on the box.") else 0
        ids.pick_take.disabled = ids.pick_backing.disabled = bool(lib.uploading)
        ids.chosen.text = (f"Take: {lib.take or 'none chosen'}    Backing: {lib.backing or 'none chosen'}")
        ids.entries.clear_widgets()
        # a plan's render report is part of its plan (deleted with it): no row of its own
        plan_files = {e.name for e in lib.entries if e.kind is p.FileKind.PLAN}
        reports = {p.render_report_name(n) for n in plan_files if not p.is_render_report(n)} & plan_files
        for entry in lib.entries:
            is_plan = entry.kind is p.FileKind.PLAN
            if is_plan and entry.name in reports:
                continue
            row = BoxLayout(size_hint_y=None, height=dp(44), spacing=dp(4))
            chosen = entry.name in (lib.take, lib.backing) and entry.kind in (p.FileKind.TAKE, p.FileKind.BACKING)
            kept = is_plan and p.render_report_name(entry.name) in reports
            label = Label(text=f"{'> ' if chosen else ''}{entry.kind.name.lower():8s} {entry.name}   "
                               f"{words.size_words(entry.size)}{' + render report' if kept else ''}",
                          halign="left", valign="middle")
            label.bind(size=lambda w, s: setattr(w, "text_size", s))
            row.add_widget(label)
            row.entry = entry
            if entry.kind in (p.FileKind.TAKE, p.FileKind.BACKING):
                use = Button(text="Use", size_hint_x=None, width=dp(60))
                use.bind(on_release=lambda b, e=entry: self.companion.choose(e))
                row.add_widget(use)
            delete = Button(text="Delete", size_hint_x=None, width=dp(72))
            delete.entry = entry
            delete.bind(on_release=lambda b: self.companion.tap_delete(b.entry))
            row.add_widget(delete)
            ids.entries.add_widget(row)

    def open_picker(self, kind_name: str) -> None:
        kind = p.FileKind[kind_name.upper()]
        app = App.get_running_app()
        popup = FilePopup(title=f"Choose a {kind_name} to send")
        popup.chooser.path = str(app.start_dir)
        popup.chooser.filters = AUDIO_FILTERS

        def send(*_args: Any) -> None:
            if popup.chooser.selection:
                popup.dismiss()
                self.companion.pick_file(popup.chooser.selection[0], kind)

        popup.ids.ok.text = "Send"
        popup.ids.ok.bind(on_release=send)
        app.popup = popup
        popup.open()


class MixScreen(BaseScreen):
    def on_kv_post(self, base_widget: Any) -> None:
        for style, label in words.STYLES:
            ids = self.ids
            button = ids[f"style_{style.engine_name}"]
            button.text = label

    def refresh(self, job: Any) -> None:
        ids = self.ids
        for style, _label in words.STYLES:
            ids[f"style_{style.engine_name}"].state = "down" if job.style is style else "normal"
            ids[f"style_{style.engine_name}"].disabled = job.running
        ids.mix_button.disabled = job.running
        ids.cancel_button.disabled = not job.running or job.step not in ("analyze", "render")
        ids.job_bar.value = 100 * job.progress
        if job.running and job.step in ("analyze", "render"):
            n = 1 if job.step == "analyze" else 2
            ids.stage_label.text = (f"Step {n} of 2, {'analysing' if n == 1 else 'rendering'}: "
                                    f"{words.stage_words(job.stage)} ({100 * job.progress:.0f} %)")
        elif job.running:
            ids.stage_label.text = job.message
        else:
            ids.stage_label.text = job.message or "Choose a style, then tap Mix."


class ShapeScreen(BaseScreen):
    def on_kv_post(self, base_widget: Any) -> None:
        box = self.ids.sliders
        for name, title, low, high in words.SLIDERS:
            block = BoxLayout(orientation="vertical", size_hint_y=None, height=dp(78))
            block.add_widget(Label(text=title, size_hint_y=None, height=dp(20), bold=True))
            row = BoxLayout(size_hint_y=None, height=dp(36))
            row.add_widget(Label(text=low, size_hint_x=0.24))
            slider = SemanticSlider(min=-1, max=1, value=0, step=0.01, name=name, size_hint_x=0.52)
            slider.bind(value=lambda s, v: self.companion.slider_moved(s.name, v))
            slider.bind(on_release=lambda s: self.companion.slider_released(s.name, s.value))
            row.add_widget(slider)
            row.add_widget(Label(text=high, size_hint_x=0.24))
            block.add_widget(row)
            value = Label(text=words.slider_value_text(0.0), size_hint_y=None, height=dp(18), font_size="12sp",
                          color=(0.8, 0.8, 0.8, 1))
            block.add_widget(value)
            box.add_widget(block)
            self.ids[f"slider_{name}"] = slider
            self.ids[f"value_{name}"] = value

    def refresh(self, shape: Any) -> None:
        ids = self.ids
        for name in p.SLIDER_NAMES:
            value = shape.sliders.get(name, 0.0)
            ids[f"value_{name}"].text = words.slider_value_text(value)
            if abs(ids[f"slider_{name}"].value - value) > 0.005:
                ids[f"slider_{name}"].value = value
        ids.playhead.max = max(0.1, shape.duration_s)
        if abs(ids.playhead.value - shape.playhead_s) > 0.05:
            ids.playhead.value = shape.playhead_s
        ids.playhead_label.text = f"Listen from {words.time_words(shape.playhead_s)}"
        ids.preview_label.text = shape.message or "Move a slider and let go to hear a preview."


class ResultScreen(BaseScreen):
    def refresh(self, result: Any) -> None:
        ids = self.ids
        ids.pitch_view.plan = result.plan
        font = App.get_running_app().cjk_font
        ids.summary.markup = True  # the summary names slides 滑音 and grace notes 倚音
        ids.summary.text = cjk_markup("\n".join(result.summary) if result.summary else
                                      "Make a mix to see what happened.", font)
        ids.legend.clear_widgets()
        if result.plan:
            for text, colour in (("sung", (0.6, 0.75, 1.0, 1)), ("corrected", (0.3, 0.95, 0.55, 1)),
                                 ("target", (1, 1, 1, 0.8))):
                ids.legend.add_widget(Label(text=text, color=colour, font_size="12sp"))
            groups = []
            for o in (result.plan.get("pitch") or {}).get("ornaments") or []:
                group = ORNAMENT_GROUPS.get(str(o.get("type")), "drift")
                if group not in groups:
                    groups.append(group)
            for group in groups:
                ids.legend.add_widget(Label(text=cjk_markup(GROUP_LABELS[group], font), markup=True,
                                            color=(*GROUP_COLOURS[group], 1), font_size="12sp"))


class KeepScreen(BaseScreen):
    def refresh(self, keep: Any) -> None:
        ids = self.ids
        ids.download_button.disabled = keep.downloading
        if keep.downloading and keep.total:
            pct = 100 * keep.done / keep.total
            resumed = f" (resumed at {words.size_words(keep.resumed_from)})" if keep.resumed_from else ""
            ids.download_label.text = f"Downloading: {pct:.0f} % of {words.size_words(keep.total)}{resumed}"
            ids.download_bar.value = pct
        else:
            ids.download_label.text = keep.message or "Download the mix to keep it on this device."
            ids.download_bar.value = 100 if keep.local_path else 0
        ids.save_button.disabled = not keep.local_path
        ids.play_button.disabled = not keep.local_path
        ids.play_button.text = "Stop" if keep.playing else "Play"

    def open_save(self) -> None:
        app = App.get_running_app()
        popup = FilePopup(title="Save the mix as", save_mode=True)
        popup.chooser.path = str(app.save_dir)
        popup.chooser.dirselect = True
        popup.ids.filename.text = Path(self.state.keep.local_path).name

        def save(*_args: Any) -> None:
            folder = popup.chooser.path
            if popup.chooser.selection and Path(popup.chooser.selection[0]).is_dir():
                folder = popup.chooser.selection[0]
            popup.dismiss()
            self.companion.tap_save_as(str(Path(folder) / popup.ids.filename.text.strip()))

        popup.ids.ok.text = "Save"
        popup.ids.ok.bind(on_release=save)
        app.popup = popup
        popup.open()


class RootView(BoxLayout):
    def go(self, screen: str) -> None:
        self.ids.sm.current = screen
        app = App.get_running_app()
        if screen == "library" and app.state.link.phase == "ready":
            app.companion.spawn(app.companion.refresh_library(), "listing the library")

    def refresh_nav(self, *_args: Any) -> None:
        app = App.get_running_app()
        link, job = app.state.link, app.state.job
        ids = self.ids
        ids.nav_pair.disabled = link.phase not in ("pairing",)
        ready = link.bonded and link.phase in ("ready", "reconnecting")
        ids.nav_library.disabled = ids.nav_mix.disabled = not ready
        finished = job.done or (app.companion.settings.get("job") or {}).get("step") == "done"
        ids.nav_shape.disabled = ids.nav_keep.disabled = not (ready and finished)
        ids.nav_result.disabled = app.state.result.plan is None

    def refresh_status(self, status: Any) -> None:
        self.ids.status.text = status.text
        self.ids.status.color = (1, 0.55, 0.5, 1) if status.is_error else (0.85, 0.85, 0.85, 1)


# ----------------------------------------------------------------------------------------------
# The app


class MelismaApp(App):
    """The companion app; ``companion`` does the work, ``state`` is what the screens show."""

    title = "Melisma"

    def __init__(self, companion: Companion, *, demo: Any = None, start_dir: Path | None = None,
                 save_dir: Path | None = None, permissions_api: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.companion = companion
        self.state = companion.state
        self.demo = demo
        self.start_dir = Path(start_dir or Path.home())
        self.save_dir = Path(save_dir or Path.home())
        self.permissions_api = permissions_api
        self.popup: Popup | None = None
        self.cjk_font = "Roboto"
        self._last_phase = ""

    def build(self) -> RootView:
        self.cjk_font = register_cjk_font()
        for name in KV_FILES:
            Builder.unload_file(str(KV_DIR / name))
            Builder.load_file(str(KV_DIR / name))
        root = RootView()
        screens = {s.name: s for s in root.ids.sm.screens}
        self.screens = screens
        st = self.state
        st.link.observe(screens["find"].refresh)
        st.link.observe(screens["pair"].refresh)
        st.link.observe(self._follow_link)
        st.library.observe(screens["library"].refresh)
        st.job.observe(screens["mix"].refresh)
        st.shape.observe(screens["shape"].refresh)
        st.result.observe(screens["result"].refresh)
        st.keep.observe(screens["keep"].refresh)
        st.status.observe(root.refresh_status)
        for obs in (st.link, st.job, st.result):
            obs.observe(root.refresh_nav)
        if self.companion.player is None:
            self.companion.player = KivyPlayer(on_finished=lambda: st.keep.update(playing=False))
        for obs in (st.link, st.library, st.job, st.shape, st.result, st.keep):
            obs.notify()
        st.status.say("Starting…")
        return root

    def _follow_link(self, link: Any) -> None:
        """Move to the screen the connection calls for (pairing, then the library)."""
        if link.phase == self._last_phase:
            return
        self._last_phase, previous = link.phase, self._last_phase
        sm = self.root.ids.sm if self.root else None
        if sm is None:
            return
        if link.phase == "pairing":
            sm.current = "pair"
        elif link.phase == "ready" and previous in ("connecting", "pairing") and sm.current in ("find", "pair"):
            sm.current = "library"
        elif link.phase in ("idle", "scanning") and sm.current == "pair":
            sm.current = "find"

    def on_start(self) -> None:
        self.companion.spawn(self._startup(), "starting")

    async def _startup(self) -> None:
        from .permissions import ensure_bluetooth_permissions

        result = await ensure_bluetooth_permissions(self.permissions_api)
        if not result.granted:
            self.state.link.update(message=result.message)
            self.state.status.say(result.message, error=True)
            return
        await self.companion.start()

    def screenshot(self, path: Path) -> Path:
        """Write a PNG of the window as it is now."""
        from kivy.core.window import Window

        Clock.tick_draw()
        written = Window.screenshot(name=str(path))  # Kivy numbers the file (name0001.png)
        if written and Path(written) != Path(path):
            os.replace(written, path)
        return Path(path)
