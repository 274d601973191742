"""The panel's state: what the box told it, what the user did, and what the LEDs and OLED show.

Pure: no clock, no pins, no I/O. The app feeds it the box's lines (:meth:`PanelState.on_box`),
knob turns (:meth:`PanelState.on_turn`), button gestures (:meth:`PanelState.on_button`) and the time
(:meth:`PanelState.tick`); each returns the lines to send to the box as ``(verb, args)`` pairs.
:meth:`PanelState.leds` and :meth:`PanelState.screen` say what to show at a given time.

Examples
--------
>>> s = PanelState(n_leds=4)
>>> s.on_box("hello", ["1.0", "melisma/0.1.0", "name=Melisma-55AA"], 0)[0][0]
'welcome'
>>> s.on_box("ctl", ["cpop", "warmth=25", "reverb=-10"], 10)
[]
>>> s.on_turn(2, 20)
[('turn', ['warmth', '+2'])]
>>> s.screen(20)[0]
'Melisma     cpop'
"""

from . import VERSION
from .protocol import PROTOCOL, PROTOCOL_MAJOR, LineError, clean_text, parse_fields, parse_version
from .ticks import ticks_diff

#: The panel sends a heartbeat this often and calls the box gone after ``LINK_TIMEOUT_MS`` of silence.
HEARTBEAT_MS = 1000
LINK_TIMEOUT_MS = 3500
#: While the box is gone, the panel says hello this often.
HELLO_RETRY_MS = 3000
#: How long an error, a finished job, a bond or a short message stays in front.
ERROR_SHOW_MS = 4000
DONE_SHOW_MS = 3000
TOAST_MS = 2500
#: Blink half-period.
BLINK_MS = 500

WIDTH = 16  # OLED characters per line (128 px / 8 px font)
ROWS = 8

BUTTON_NAMES = ("mix", "pair", "mode", "knob")

OFF = (0, 0, 0)
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
ORANGE = (255, 80, 0)
YELLOW = (255, 180, 0)
CYAN = (0, 200, 255)
MAGENTA = (255, 0, 200)
WHITE = (255, 255, 255)

#: Colour and OLED label of each slider the box knows today (others show in white, by name).
SLIDER_LOOK = {
    "warmth": ((255, 96, 0), "Warmth"),
    "reverb": ((0, 160, 255), "Reverb"),
    "vocal_level": ((255, 0, 160), "Vocal level"),
    "air": ((160, 160, 255), "Air"),
    "tuning": ((0, 255, 64), "Tuning"),
    "ornaments": ((255, 200, 0), "Ornaments"),
}


def dim(colour: tuple[int, int, int], shift: int = 4) -> tuple[int, int, int]:
    """The colour at 1/16 brightness (or ``1 / 2**shift``)."""
    return (colour[0] >> shift, colour[1] >> shift, colour[2] >> shift)


def _fit(text: str, width: int = WIDTH) -> str:
    return text[:width]


def _pair_line(left: str, right: str) -> str:
    gap = WIDTH - len(left) - len(right)
    if gap < 1:
        return _fit(left + " " + right)
    return left + " " * gap + right


def value_bar(hundredths: int, width: int = WIDTH) -> str:
    """``[----|###    ]``: a centred bar for a slider value -100..100."""
    inner = width - 2
    centre = inner // 2
    reach = (abs(hundredths) * centre + 50) // 100
    pos = centre + reach if hundredths >= 0 else centre - reach
    cells = []
    for i in range(inner):
        if i == centre:
            cells.append("|")
        elif (centre < i <= pos) or (pos <= i < centre):
            cells.append("#")
        else:
            cells.append("-")
    return "[" + "".join(cells) + "]"


def format_value(hundredths: int) -> str:
    """``25`` -> ``'+0.25'``, ``-100`` -> ``'-1.00'``."""
    sign = "-" if hundredths < 0 else "+"
    v = abs(hundredths)
    return f"{sign}{v // 100}.{v % 100:02d}"


class PanelState:
    """Everything the panel knows and shows.

    Parameters
    ----------
    n_leds : int
        LEDs on the ring (the passkey needs 9 or more to show as LED digits without an OLED).
    has_oled : bool
        Whether an SSD1306 is fitted (caps announce it; passkey then goes on the screen).
    """

    def __init__(self, n_leds: int = 12, has_oled: bool = True) -> None:
        self.n_leds = n_leds
        self.has_oled = has_oled
        # the box
        self.link = False
        self.ever_linked = False
        self.box_name = ""
        self.box_software = ""
        self.incompatible = ""
        self.last_rx_ms = 0
        self.last_tx_ms = 0
        self.last_hello_ms = 0
        self.started = False
        # controls, as the box reports them
        self.style = ""
        self.slider_names: list[str] = []
        self.values: dict[str, int] = {}
        self.selected = 0
        # job
        self.job_state = "idle"
        self.job_kind = ""
        self.job_permille = 0
        self.job_stage = ""
        self.job_since_ms = 0
        # pairing
        self.pair_open = False
        self.pair_until_ms = 0
        self.passkey = ""
        self.bonded_ms = -1
        # error, level, message
        self.error = ""
        self.error_ms = 0
        self.error_sticky = False
        self.level_tenths: int | None = None
        self.level_source = ""
        self.toast = ""
        self.toast_ms = 0
        self.now_ms = 0

    # -- identity ---------------------------------------------------------------------------

    def caps(self) -> list[str]:
        """The ``key=value`` fields of this panel's hello/welcome."""
        caps = f"enc,mix,pair,mode,knob,leds{self.n_leds}"
        if self.has_oled:
            caps += ",oled128x64"
        if self.has_oled or self.n_leds >= 9:
            caps += ",passkey"
        return ["caps=" + caps]

    def hello(self, verb: str = "hello") -> tuple[str, list[str]]:
        return verb, [PROTOCOL, "melisma-panel/" + VERSION] + self.caps()  # noqa: RUF005 (MicroPython)

    # -- from the box -----------------------------------------------------------------------

    def on_box(self, verb: str, args: list[str], now_ms: int) -> list[tuple[str, list[str]]]:
        """Apply one good line from the box; returns lines to send back."""
        self.now_ms = now_ms
        self.last_rx_ms = now_ms
        out: list[tuple[str, list[str]]] = []
        if verb in ("hello", "welcome"):
            if verb == "hello":
                out.append(self.hello("welcome"))
            self._meet(args, now_ms)
            return out
        if not self.link:
            # a box that was gone is talking again without a hello (we were the ones cut off):
            # say hello so it sends its whole state
            if ticks_diff(now_ms, self.last_hello_ms) >= HELLO_RETRY_MS or not self.ever_linked:
                self.last_hello_ms = now_ms
                out.append(self.hello())
            return out
        if self.incompatible:
            return out
        try:  # noqa: SIM105 (MicroPython has no contextlib)
            self._apply(verb, args, now_ms)
        except (ValueError, IndexError, LineError):
            pass  # a line we cannot use changes nothing (a newer box may send more)
        return out

    def _meet(self, args: list[str], now_ms: int) -> None:
        fields = parse_fields(args[2:])
        self.box_software = args[1] if len(args) > 1 else "?"
        self.box_name = fields.get("name", "box")
        try:
            major, _minor = parse_version(args[0] if args else "")
        except LineError:
            major = -1
        if major != PROTOCOL_MAJOR:
            self.incompatible = "box speaks %s" % (args[0] if args else "?")
            self._set_error("box protocol {}, panel {}: update".format(args[0] if args else "?", PROTOCOL), now_ms)
        else:
            self.incompatible = ""
        self.link = True
        self.ever_linked = True

    def _apply(self, verb: str, args: list[str], now_ms: int) -> None:
        if verb == "ctl":
            self.style = args[0]
            names = []
            for item in args[1:]:
                eq = item.find("=")
                if eq > 0:
                    name = item[:eq]
                    names.append(name)
                    self.values[name] = max(-100, min(100, int(item[eq + 1:])))
            if names:
                keep = self.selected_name()
                self.slider_names = names
                self.selected = names.index(keep) if keep in names else 0
        elif verb == "job":
            state = args[0]
            if state != self.job_state:
                self.job_since_ms = now_ms
            self.job_state = state
            self.job_kind = args[1] if len(args) > 1 else ""
            self.job_permille = max(0, min(1000, int(args[2]))) if len(args) > 2 else 0
            self.job_stage = args[3] if len(args) > 3 and args[3] != "-" else ""
        elif verb == "pair":
            what = args[0]
            if what == "open":
                self.pair_open = True
                self.pair_until_ms = now_ms + 1000 * int(args[1])
                self.bonded_ms = -1
            elif what == "closed":
                self.pair_open = False
                self.passkey = ""
            elif what == "passkey":
                key = args[1]
                if len(key) == 6 and key.isdigit():
                    self.passkey = key
            elif what == "bonded":
                self.passkey = ""
                self.bonded_ms = now_ms
                self._show("Paired", now_ms)
            elif what == "failed":
                self.passkey = ""
                self._set_error("pairing failed", now_ms)
        elif verb == "level":
            if args[0] == "off":
                self.level_tenths = None
            else:
                self.level_tenths = int(args[0])
                self.level_source = args[1] if len(args) > 1 else ""
        elif verb == "err":
            self._set_error(args[0] if args else "error", now_ms)
        elif verb == "ack":
            result = args[1] if len(args) > 1 else "ok"
            text = args[2] if len(args) > 2 else ""
            if result == "err":
                self._set_error(text or "refused", now_ms)
            elif text:
                self._show(text, now_ms)
        # hb and unknown verbs: nothing beyond last_rx_ms

    def _set_error(self, text: str, now_ms: int) -> None:
        self.error = clean_text(text, 64)
        self.error_ms = now_ms
        self.error_sticky = True

    def _show(self, text: str, now_ms: int) -> None:
        self.toast = clean_text(text, WIDTH)
        self.toast_ms = now_ms

    # -- from the user ----------------------------------------------------------------------

    def selected_name(self) -> str:
        if not self.slider_names:
            return ""
        return self.slider_names[self.selected % len(self.slider_names)]

    def _ready(self, now_ms: int) -> bool:
        if not self.link:
            self._show("no box", now_ms)
            return False
        if self.incompatible:
            self._set_error(self.incompatible + ": update", now_ms)
            return False
        return True

    def on_turn(self, steps: int, now_ms: int) -> list[tuple[str, list[str]]]:
        """The knob moved ``steps`` (after acceleration): move the selected slider on the box."""
        self.now_ms = now_ms
        self.error_sticky = False
        if steps == 0 or not self._ready(now_ms) or not self.slider_names:
            return []
        return [("turn", [self.selected_name(), f"{steps:+d}"])]

    def on_button(self, name: str, gesture: str, now_ms: int) -> list[tuple[str, list[str]]]:
        """A gesture (press/long/double) on a button: some act here, every one goes to the box."""
        self.now_ms = now_ms
        self.error_sticky = False
        if name == "knob" and self.slider_names:
            n = len(self.slider_names)
            if gesture == "press":
                self.selected = (self.selected + 1) % n
            elif gesture == "long":
                self.selected = (self.selected - 1) % n
        if not self._ready(now_ms):
            return []
        args = [name, gesture]
        if name == "knob" and self.slider_names:
            args.append(self.selected_name())
        return [("key", args)]

    # -- time -------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[tuple[str, list[str]]]:
        """Heartbeats, hellos and the link timeout; call every few tens of ms."""
        self.now_ms = now_ms
        out: list[tuple[str, list[str]]] = []
        if not self.started:
            self.started = True
            self.last_hello_ms = now_ms
            self.last_tx_ms = now_ms
            return [self.hello()]
        if self.link and ticks_diff(now_ms, self.last_rx_ms) > LINK_TIMEOUT_MS:
            self.link = False
        if not self.link and ticks_diff(now_ms, self.last_hello_ms) >= HELLO_RETRY_MS:
            self.last_hello_ms = now_ms
            self.last_tx_ms = now_ms
            out.append(self.hello())
        elif ticks_diff(now_ms, self.last_tx_ms) >= HEARTBEAT_MS:
            self.last_tx_ms = now_ms
            out.append(("hb", [str(now_ms)]))
        if self.pair_open and ticks_diff(now_ms, self.pair_until_ms) >= 0:
            self.pair_open = False
            self.passkey = ""
        return out

    def sent(self, now_ms: int) -> None:
        """Tell the state a line went out (any line counts as a heartbeat)."""
        self.last_tx_ms = now_ms

    # -- what to show -----------------------------------------------------------------------

    def _blink(self, now_ms: int) -> bool:
        return (now_ms // BLINK_MS) % 2 == 0

    def _recent(self, since_ms: int, span_ms: int, now_ms: int) -> bool:
        return 0 <= ticks_diff(now_ms, since_ms) < span_ms

    def leds(self, now_ms: int) -> tuple[str, list[tuple[int, int, int]]]:
        """``(mode, colours)``: what the LED ring shows now, and why (the mode's name)."""
        n = self.n_leds
        blink = self._blink(now_ms)
        if not self.link:
            frame = [OFF] * n
            if blink:
                frame[0] = ORANGE
            return "nobox", frame
        if self.passkey:
            if self.has_oled or n < 9:
                return "passkey", [BLUE] * n
            return "passkey", self._digit_frame(now_ms)
        if self.error and self._recent(self.error_ms, ERROR_SHOW_MS, now_ms):
            return "error", [RED if blink else OFF] * n
        if self.job_state in ("running", "queued"):
            lit = (self.job_permille * n) // 1000
            frame = [GREEN if i < lit else dim(GREEN, 5) for i in range(n)]
            if lit < n and blink:
                frame[lit] = dim(GREEN, 1)
            return "progress", frame
        if self.bonded_ms >= 0 and self._recent(self.bonded_ms, DONE_SHOW_MS, now_ms):
            return "bonded", [CYAN] * n
        if self.job_state == "done" and self._recent(self.job_since_ms, DONE_SHOW_MS, now_ms):
            return "done", [GREEN] * n
        if self.pair_open:
            left = max(0, ticks_diff(self.pair_until_ms, now_ms))
            lit = max(1, (left * n + 119999) // 120000) if left else 0
            colour = BLUE if blink else dim(BLUE, 2)
            return "pairing", [colour if i < lit else OFF for i in range(n)]
        if self.level_tenths is not None:
            return "level", self._level_frame()
        if self.error and self.error_sticky:
            frame = self._slider_frame()
            frame[0] = RED
            return "error", frame
        return "slider", self._slider_frame()

    def _slider_frame(self) -> list[tuple[int, int, int]]:
        n = self.n_leds
        name = self.selected_name()
        if not name:
            return [OFF] * n
        colour = SLIDER_LOOK[name][0] if name in SLIDER_LOOK else WHITE
        value = self.values.get(name, 0)
        needle = ((value + 100) * (n - 1) + 100) // 200
        return [colour if i == needle else dim(colour) for i in range(n)]

    def _level_frame(self) -> list[tuple[int, int, int]]:
        n = self.n_leds
        level = self.level_tenths if self.level_tenths is not None else -600
        lit = ((min(0, max(-600, level)) + 600) * n) // 600
        frame = []
        for i in range(n):
            colour = RED if i >= n - 1 else YELLOW if i >= (n * 3) // 4 else GREEN
            frame.append(colour if i < lit else OFF)
        return frame

    def _digit_frame(self, now_ms: int) -> list[tuple[int, int, int]]:
        """The passkey as LED digits: each digit for 1.2 s as that many cyan LEDs (0: one magenta)."""
        n = self.n_leds
        slot = (now_ms // 1500) % 7  # six digits, then a blank
        frame = [OFF] * n
        if slot == 6 or (now_ms % 1500) >= 1200:
            return frame
        digit = int(self.passkey[slot])
        if digit == 0:
            frame[0] = MAGENTA
        else:
            for i in range(digit):
                frame[i] = CYAN
        return frame

    def screen(self, now_ms: int) -> list[str]:
        """Eight lines of at most 16 characters for the OLED."""
        lines = [""] * ROWS
        if not self.link:
            lines[0] = _pair_line("Melisma", "no box")
            lines[2] = "Waiting for the"
            lines[3] = "box (USB)..."
            if self.incompatible:
                lines[5] = _fit(self.incompatible)
            return lines
        lines[0] = _pair_line("Melisma", self.style or "?")
        if self.passkey:
            lines[0] = _pair_line("Melisma", "pairing")
            lines[2] = "Passkey for the"
            lines[3] = "phone:"
            lines[5] = f"     {self.passkey[:3]} {self.passkey[3:]}"
            lines[7] = self._pair_text(now_ms)
            return lines
        name = self.selected_name()
        if name:
            label = SLIDER_LOOK[name][1] if name in SLIDER_LOOK else name
            value = self.values.get(name, 0)
            lines[2] = _pair_line("> " + label, format_value(value))
            lines[3] = value_bar(value)
        lines[4] = self._job_text(now_ms)
        if self.level_tenths is not None:
            db = self.level_tenths // 10
            lines[5] = _pair_line("In " + (self.level_source or ""), f"{db} dB")
        if self.pair_open:
            lines[1] = self._pair_text(now_ms)
        if self.error and (self.error_sticky or self._recent(self.error_ms, ERROR_SHOW_MS, now_ms)):
            lines[6] = _fit("! " + self.error)
            lines[7] = _fit(self.error[WIDTH - 2:])
        elif self.toast and self._recent(self.toast_ms, TOAST_MS, now_ms):
            lines[7] = _fit(self.toast)
        return lines

    def _pair_text(self, now_ms: int) -> str:
        if not self.pair_open:
            return ""
        left = max(0, ticks_diff(self.pair_until_ms, now_ms)) // 1000
        return _pair_line("Pair open", f"{left // 60}:{left % 60:02d}")

    def _job_text(self, now_ms: int) -> str:
        kind = self.job_kind or "job"
        if self.job_state == "running":
            return _fit(f"{kind} {self.job_permille // 10:3d}% {self.job_stage}")
        if self.job_state == "queued":
            return _fit(kind + " queued")
        if self.job_state in ("done", "failed", "cancelled"):
            return _fit(kind + " " + self.job_state)
        return "Ready"
