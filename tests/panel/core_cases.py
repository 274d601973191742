"""Panel core test cases that run unchanged on CPython (pytest) and on the MicroPython unix port.

Plain functions named ``case_*`` with ``assert``: test_core.py runs them under pytest,
test_core_micropython.py runs them all on the unix port through run_cases.py.
"""

from mpanel import protocol
from mpanel.buttons import Button
from mpanel.encoder import Accelerator, QuadratureDecoder
from mpanel.state import PanelState, value_bar
from mpanel.ticks import TICKS_PERIOD, ticks_add, ticks_diff

# forward Gray-code cycle as A << 1 | B, starting from a detent at 11
FORWARD_FROM_11 = (0b10, 0b00, 0b01, 0b11)


class Lcg:
    """A tiny seeded random source that gives the same numbers on CPython and MicroPython."""

    def __init__(self, seed):
        self.x = seed & 0x7FFFFFFF

    def next(self, n):
        self.x = (1103515245 * self.x + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % n


def states_for(moves, rng=None, detent=0b11, bounce=True, excursions=False):
    """Contact states for a list of detent moves (+1/-1), with contact bounce on every edge.

    Bounce: before settling on a new state the changing contact chatters between old and new,
    as a recorded EC11 does for a few ms. With ``excursions``, some moves first go half-way the
    wrong way and come back (a finger wobbling at a detent), which must count nothing.
    """
    order = [0b11, 0b10, 0b00, 0b01]  # forward positions from the 11 detent
    if detent == 0b00:
        order = [0b00, 0b01, 0b11, 0b10]
    pos = 0
    out = []

    def go(old_pos, new_pos):
        old, new = order[old_pos % 4], order[new_pos % 4]
        if bounce and rng is not None:
            for _ in range(rng.next(4)):
                out.append(new)
                out.append(old)
        out.append(new)

    for move in moves:
        if excursions and rng is not None and rng.next(3) == 0:
            cur = pos
            wobble = 1 + rng.next(2)  # one or two quarter steps the wrong way, then back
            for _ in range(wobble):
                go(cur, cur - move)
                cur -= move
            for _ in range(wobble):
                go(cur, cur + move)
                cur += move
        for _ in range(4):
            go(pos, pos + move)
            pos += move
    return out


def feed(decoder, states):
    for s in states:
        decoder.update(s)
    return decoder.take()


def running_values(moves, decoder, rng=None, **kw):
    """The value after each detent move, as a user watching the display would see it."""
    value = 0
    seen = []
    for move in moves:
        value += feed(decoder, states_for([move], rng, **kw))
        seen.append(value)
    return seen


def truth(moves):
    value = 0
    out = []
    for m in moves:
        value += m
        out.append(value)
    return out


class LatchOn11:
    """The failure mode of Buxton-style tables (fire on entering 11) when detents rest on 00."""

    def __init__(self):
        self.state = 0b00
        self.dir = 0
        self.count = 0

    def update(self, s):
        pos = (0, 1, 3, 2)
        move = (pos[s] - pos[self.state]) & 3
        if move == 1:
            self.dir += 1
        elif move == 3:
            self.dir -= 1
        self.state = s
        if s == 0b11:
            if self.dir >= 2:
                self.count += 1
            elif self.dir <= -2:
                self.count -= 1
            self.dir = 0

    def take(self):
        n = self.count
        self.count = 0
        return n


# -- encoder ---------------------------------------------------------------------------------


def case_encoder_counts_whole_detents_both_ways_with_bounce():
    rng = Lcg(1)
    d = QuadratureDecoder()
    assert feed(d, states_for([1, 1, 1], rng)) == 3
    assert feed(d, states_for([-1, -1], rng)) == -2
    assert d.skipped == 0


def case_encoder_reversal_at_each_detent_is_exactly_one_step():
    # the sequence from micropython-rotary issue 10: 5 up, 5 down, then back and forth at a detent
    moves = [1] * 5 + [-1] * 5 + [1, -1] * 10
    for detent in (0b11, 0b00):
        d = QuadratureDecoder(detent_state=detent)
        assert running_values(moves, d, Lcg(7), detent=detent) == truth(moves), detent


def case_latch_on_one_state_loses_steps_at_reversals_when_detents_rest_elsewhere():
    moves = [1] * 5 + [-1] * 5 + [1, -1] * 4
    naive = running_values(moves, LatchOn11(), Lcg(3), detent=0b00)
    ours = running_values(moves, QuadratureDecoder(detent_state=0b00, initial_state=0b00), Lcg(3), detent=0b00)
    assert ours == truth(moves)
    assert naive != truth(moves)  # the known failure this decoder avoids


def case_encoder_half_turn_and_back_counts_nothing():
    d = QuadratureDecoder()
    assert feed(d, [0b10, 0b00, 0b10, 0b11]) == 0
    assert feed(d, [0b01, 0b00, 0b01, 0b11]) == 0
    # three quarters and back
    assert feed(d, [0b10, 0b00, 0b01, 0b00, 0b10, 0b11]) == 0


def case_encoder_bounce_at_detent_counts_nothing():
    d = QuadratureDecoder()
    assert feed(d, [0b10, 0b11] * 20 + [0b01, 0b11] * 20) == 0


def case_encoder_bounce_on_arrival_counts_once():
    d = QuadratureDecoder()
    # arrive at the next detent, chatter between the last two states, settle
    assert feed(d, [0b10, 0b00, 0b01, 0b11, 0b01, 0b11, 0b01, 0b11]) == 1


def case_encoder_random_bouncy_walks_with_reversals_and_wobbles_match_truth():
    for seed in range(1, 41):
        rng = Lcg(seed)
        moves = []
        direction = 1
        for _ in range(20 + rng.next(30)):
            if rng.next(4) == 0:
                direction = -direction  # reversal at a detent
            moves.append(direction)
        for detent in (0b11, 0b00):
            d = QuadratureDecoder(detent_state=detent, initial_state=detent)
            got = running_values(moves, d, Lcg(seed * 31 + detent), detent=detent, excursions=True)
            assert got == truth(moves), (seed, detent)


def case_encoder_missed_sample_in_a_fast_turn_keeps_phase():
    d = QuadratureDecoder()
    # forward with the 00 state missed (10 -> 01 changes both contacts), for three detents
    seq = [0b10, 0b01, 0b11] * 3
    assert feed(d, seq) == 3
    assert d.skipped == 3
    # a slow reversal afterwards is still exactly one detent per cycle
    assert feed(d, [0b01, 0b00, 0b10, 0b11]) == -1


def case_encoder_two_detents_per_cycle():
    d = QuadratureDecoder(steps_per_detent=2)
    assert feed(d, list(FORWARD_FROM_11)) == 2
    assert feed(d, [0b01, 0b00]) == -1
    assert feed(d, [0b10, 0b00]) == 0  # wobble half a detent and back


def case_encoder_start_between_detents_and_reverse_option():
    d = QuadratureDecoder(initial_state=0b10)  # a quarter past the detent
    assert feed(d, [0b00, 0b01, 0b11]) == 1
    r = QuadratureDecoder(reverse=True)
    assert feed(r, list(FORWARD_FROM_11)) == -1


def case_encoder_rejects_bad_settings():
    for kwargs in ({"steps_per_detent": 3}, {"detent_state": 4}):
        try:
            QuadratureDecoder(**kwargs)
        except ValueError as exc:
            assert "use" in str(exc)
        else:
            raise AssertionError(f"accepted {kwargs!r}")


def case_accelerator_slow_fast_and_reversal():
    a = Accelerator()
    assert a.feed(1, 0) == 1
    assert a.feed(1, 200) == 1  # slow
    assert a.feed(1, 240) == 2  # 40 ms apart
    assert a.feed(1, 250) == 4  # 10 ms apart
    assert a.feed(-1, 255) == -1  # a reversal is never multiplied
    assert a.feed(-1, 265) == -4
    assert a.feed(0, 300) == 0
    assert a.feed(2, 305) == 2  # detents that reverse the direction count once each


def case_ticks_wrap():
    near_end = TICKS_PERIOD - 5
    assert ticks_diff(ticks_add(near_end, 10), near_end) == 10
    assert ticks_diff(near_end, ticks_add(near_end, 10)) == -10


# -- buttons ---------------------------------------------------------------------------------


def run_button(button, timeline):
    """``timeline``: (ms, raw) changes; returns the gestures with their times."""
    events = []
    changes = list(timeline)
    raw = False
    end = changes[-1][0] + 1000
    t = 0
    while t <= end:
        while changes and changes[0][0] <= t:
            raw = changes.pop(0)[1]
        g = button.update(raw, t)
        if g:
            events.append((g, t))
        t += 5
    return events


def bouncy(t, pressed):
    """A contact closing (or opening) at ``t`` with 4 ms of chatter."""
    return [(t, pressed), (t + 1, not pressed), (t + 2, pressed), (t + 3, not pressed), (t + 4, pressed)]


def case_button_press_with_bounce_is_one_press():
    ev = run_button(Button("mix"), bouncy(100, True) + bouncy(200, False))
    assert [g for g, _ in ev] == ["press"]
    assert 200 <= ev[0][1] <= 240  # on release, after the debounce


def case_button_long_press_fires_while_held_and_release_is_silent():
    ev = run_button(Button("pair"), bouncy(0, True) + bouncy(1500, False))
    assert [g for g, _ in ev] == ["long"]
    assert 800 <= ev[0][1] <= 850


def case_button_hold_comes_after_long_on_a_hold_button_only():
    ev = run_button(Button("pair", hold=True), bouncy(0, True) + bouncy(3500, False))
    assert [g for g, _ in ev] == ["long", "hold"]
    assert 3000 <= ev[1][1] <= 3050
    ev = run_button(Button("pair", hold=True), bouncy(0, True) + bouncy(2000, False))
    assert [g for g, _ in ev] == ["long"]  # let go before 3 s: no hold
    ev = run_button(Button("mix"), bouncy(0, True) + bouncy(3500, False))
    assert [g for g, _ in ev] == ["long"]  # a button without hold detection
    b = Button("pair", hold=True)
    ev = run_button(b, bouncy(0, True) + bouncy(3500, False) + bouncy(4000, True) + bouncy(7200, False))
    assert [g for g, _ in ev] == ["long", "hold", "long", "hold"]  # again on the next hold


def case_button_double_press_and_single_on_a_double_button():
    ev = run_button(Button("knob", double=True), bouncy(0, True) + bouncy(100, False) + bouncy(250, True)
                    + bouncy(330, False))
    assert [g for g, _ in ev] == ["double"]
    ev = run_button(Button("knob", double=True), bouncy(0, True) + bouncy(100, False))
    assert [g for g, _ in ev] == ["press"]
    assert ev[0][1] >= 100 + 300  # the double window had to pass


def case_button_bounce_alone_is_nothing():
    ev = run_button(Button("mode"), [(0, True), (3, False), (6, True), (9, False)])
    assert ev == []


# -- protocol --------------------------------------------------------------------------------


def case_protocol_crc_and_round_trip():
    assert protocol.crc16(b"123456789") == 0x29B1
    line = protocol.encode_line(65535, "ack", ["12", "err", "no take on the box"])
    assert protocol.decode_line(line) == (65535, "ack", ["12", "err", "no take on the box"])
    assert protocol.decode_line(b"7 turn warmth +2 *7765\n") == (7, "turn", ["warmth", "+2"])


def case_protocol_rejects_damage():
    good = protocol.encode_line(3, "turn", ["warmth", "+1"])
    for bad in (good.replace(b"+1", b"+2"), good[:-3] + b"\n", b"x hello *0000\n", b"3 turn *ZZZZ\n",
                b"1" * 200 + b"\n"):
        try:
            protocol.decode_line(bad)
        except protocol.LineError:
            pass
        else:
            raise AssertionError(f"accepted {bad!r}")
    for text in ("a*b", "caf\xe9", "x" * 200):
        try:
            protocol.encode_line(1, "err", [text])
        except ValueError:
            pass
        else:
            raise AssertionError(f"encoded {text!r}")
    assert protocol.clean_text("caf\xe9 * ok\n") == "caf? ? ok"


def case_protocol_receiver_counts_lost_and_bad_lines_and_hello_resets():
    r = protocol.Receiver()
    s = protocol.Sender()
    lines = [s.line("hb", ["1"]) for _ in range(5)]
    assert r.feed(lines[0]) is not None
    assert r.feed(lines[3]) is not None  # two lost
    assert r.feed(b"garbage\n") is None
    assert (r.lost, r.bad) == (2, 1)
    assert r.feed(protocol.encode_line(0, "hello", ["1.0", "melisma/0.1.0"])) is not None
    assert r.feed(protocol.encode_line(1, "hb", ["2"])) is not None
    assert r.lost == 2


# -- state -----------------------------------------------------------------------------------


def linked_state(n_leds=12, has_oled=True):
    s = PanelState(n_leds, has_oled)
    s.tick(0)
    s.on_box("welcome", ["1.0", "melisma/0.1.0", "name=Melisma-00AA"], 10)
    s.on_box("ctl", ["neutral", "warmth=0", "reverb=-10", "vocal_level=0", "air=0", "tuning=0", "ornaments=0"], 20)
    return s


def case_state_hello_gets_welcome_with_caps():
    s = PanelState(12, True)
    first = s.tick(0)
    assert first[0][0] == "hello" and first[0][1][0] == protocol.PROTOCOL
    reply = s.on_box("hello", ["1.0", "melisma/0.1.0", "name=Box-1"], 5)
    assert reply[0][0] == "welcome" and "caps=" in reply[0][1][2] and "passkey" in reply[0][1][2]
    assert s.link and s.box_name == "Box-1"


def case_state_turn_and_knob_select():
    s = linked_state()
    assert s.on_turn(3, 30) == [("turn", ["warmth", "+3"])]
    assert s.on_button("knob", "press", 40) == [("key", ["knob", "press", "reverb"])]
    assert s.on_turn(-1, 50) == [("turn", ["reverb", "-1"])]
    assert s.on_button("knob", "long", 60)[0][1][2] == "warmth"
    assert s.screen(60)[2].startswith("> Warmth")


def case_state_no_box_sends_nothing_and_says_so():
    s = PanelState()
    s.tick(0)
    assert s.on_turn(1, 10) == []
    assert s.on_button("mix", "press", 10) == []
    assert "no box" in s.screen(10)[0]
    mode, frame = s.leds(0)
    assert mode == "nobox" and frame[0] != (0, 0, 0)


def case_state_link_timeout_then_hello_retry_and_heartbeat():
    s = linked_state()
    out = s.tick(1100)
    assert out == [("hb", ["1100"])]
    assert s.tick(5000) == [] or not s.link  # 4.98 s of silence: gone
    assert not s.link
    retry = s.tick(10000)
    assert retry and retry[0][0] == "hello"


def case_state_progress_leds_follow_the_job():
    s = linked_state()
    s.on_box("job", ["running", "mix", "500", "render"], 100)
    mode, frame = s.leds(100)
    assert mode == "progress"
    bright = [c for c in frame if c == (0, 255, 0)]
    assert len(bright) == 6  # half of 12
    assert "50%" in s.screen(100)[4]
    s.on_box("job", ["done", "mix", "1000", "done"], 200)
    assert s.leds(300)[0] == "done"
    assert s.leds(200 + 5000)[0] == "slider"


def case_state_passkey_on_oled_and_as_led_digits():
    s = linked_state()
    s.on_box("pair", ["open", "120"], 100)
    assert s.leds(100)[0] == "pairing"
    assert "Pair open" in s.screen(100)[1]
    s.on_box("pair", ["passkey", "407132"], 200)
    assert "407 132" in s.screen(200)[5]
    leds_only = linked_state(12, False)
    leds_only.on_box("pair", ["passkey", "407132"], 0)
    counts = []
    for slot in range(6):
        mode, frame = leds_only.leds(slot * 1500 + 100)
        assert mode == "passkey"
        lit = [c for c in frame if c != (0, 0, 0)]
        counts.append(len(lit))
        if slot == 1:
            assert lit == [(255, 0, 200)]  # a 0 shows as one magenta LED
    assert counts == [4, 1, 7, 1, 3, 2]
    assert leds_only.leds(6 * 1500 + 100)[1] == [(0, 0, 0)] * 12  # the gap before the digits repeat


def case_state_errors_from_acks_and_level_meter():
    s = linked_state()
    s.on_box("ack", ["4", "err", "no take"], 100)
    assert s.leds(100)[0] == "error"
    assert "no take" in s.screen(100)[6]
    s.on_box("level", ["-60", "rec"], 200)
    s.on_turn(1, 5000)  # any input clears the sticky error
    mode, frame = s.leds(5000)
    assert mode == "level"
    assert len([c for c in frame if c != (0, 0, 0)]) == 10  # -6 dBFS of 60 dB on 12 LEDs


def case_state_incompatible_box_major():
    s = PanelState()
    s.tick(0)
    s.on_box("hello", ["2.0", "melisma/9.0.0"], 10)
    assert s.incompatible
    assert s.on_turn(1, 20) == []
    assert s.leds(20)[0] == "error"


def case_value_bar_shape():
    assert value_bar(0) == "[-------|------]"
    assert value_bar(100) == "[-------|######]"
    assert value_bar(-100) == "[#######|------]"
    assert len(value_bar(37)) == 16


def all_cases():
    g = globals()
    return [(name, g[name]) for name in sorted(g) if name.startswith("case_")]
