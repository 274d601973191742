"""The panel line protocol (version 1.0): one event per line, a sequence number and a CRC.

A line is ASCII, at most :data:`MAX_LINE` bytes including the newline::

    <seq> <verb>[ <arg>...] *<CRC>\\n

``seq`` is the sender's line counter (decimal 0..65535, +1 per line, wrapping to 0); ``CRC`` is
CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF) of every byte before `` *``, as four
upper-case hex digits. Receivers drop lines whose CRC, sequence number or length is wrong and count
them; a jump in ``seq`` counts the lines lost in between. The verbs are in firmware/docs/panel.md.

Examples
--------
>>> line = encode_line(7, "turn", ["warmth", "+2"])
>>> line
b'7 turn warmth +2 *7765\\n'
>>> decode_line(line)
(7, 'turn', ['warmth', '+2'])
"""

#: Protocol version spoken by this code (major, minor). A different major cannot talk.
PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0
PROTOCOL = "1.0"

#: Longest line accepted or sent, newline included.
MAX_LINE = 160
#: Sequence numbers count modulo this.
SEQ_MODULO = 65536

# verbs that take the rest of the line as one free-text argument after a fixed number of tokens
_TEXT_AFTER = {"err": 0, "ack": 2}


class LineError(ValueError):
    """A received line is malformed; the message says what was wrong."""


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (check value of ``b"123456789"`` is 0x29B1)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def clean_text(text: str, limit: int = 100) -> str:
    """Make free text safe for a line: printable ASCII, no ``*`` or newlines, at most ``limit`` chars."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if ch == "*" or code < 32 or code > 126:
            out.append("?" if code >= 32 else " ")
        else:
            out.append(ch)
    return "".join(out).strip()[:limit]


def encode_line(seq: int, verb: str, args: list[str] | None = None) -> bytes:
    """One line, with its CRC and newline; raise ValueError if it would be too long or unsafe."""
    parts = [str(seq % SEQ_MODULO), verb]
    if args:
        for a in args:
            s = str(a)
            if s:
                parts.append(s)
    body = " ".join(parts)
    raw = body.encode()
    for b in raw:
        if b < 32 or b > 126 or b == 42:  # 42 is '*'
            raise ValueError(f"line {body!r} has a byte that is not printable ASCII or is '*'")
    line = raw + (f" *{crc16(raw):04X}\n").encode()
    if len(line) > MAX_LINE:
        raise ValueError(f"line of {len(line)} bytes is longer than {MAX_LINE}; shorten its text")
    return line


def decode_line(line: bytes) -> tuple[int, str, list[str]]:
    """Check and split one line into ``(seq, verb, args)``; raise :class:`LineError` if it is bad."""
    if len(line) > MAX_LINE:
        raise LineError(f"line of {len(line)} bytes is longer than {MAX_LINE}")
    raw = line.rstrip(b"\r\n")
    star = raw.rfind(b" *")
    if star < 0 or len(raw) - star != 6:
        raise LineError("no ' *CRC' at the end of the line")
    body = raw[:star]
    try:
        want = int(raw[star + 2:].decode(), 16)
    except ValueError:
        raise LineError("CRC is not four hex digits") from None
    got = crc16(body)
    if got != want:
        raise LineError(f"CRC {got:04X} does not match the line's {want:04X}")
    try:
        text = body.decode()
    except UnicodeError:
        raise LineError("line is not ASCII") from None
    head = text.split(" ", 2)
    if len(head) < 2 or not head[0].isdigit():
        raise LineError("line does not start with a sequence number and a verb")
    seq = int(head[0])
    if seq >= SEQ_MODULO:
        raise LineError(f"sequence number {seq} is over {SEQ_MODULO - 1}")
    verb = head[1]
    rest = head[2] if len(head) > 2 else ""
    if verb in _TEXT_AFTER:
        n = _TEXT_AFTER[verb]
        tokens = rest.split(" ", n) if rest else []
        args = tokens[:n] + [tokens[n]] if len(tokens) > n else tokens  # noqa: RUF005 (no [*x] in MicroPython)
    else:
        args = rest.split() if rest else []
    return seq, verb, args


class Sender:
    """Numbers outgoing lines."""

    def __init__(self) -> None:
        self.seq = 0
        self.last = -1

    def line(self, verb: str, args: list[str] | None = None) -> bytes:
        """The next line for ``verb`` (its sequence number is :attr:`last`)."""
        out = encode_line(self.seq, verb, args)
        self.last = self.seq
        self.seq = (self.seq + 1) % SEQ_MODULO
        return out


class Receiver:
    """Checks incoming lines: counts bad ones and lines lost by their sequence numbers.

    ``feed`` returns ``(seq, verb, args)`` for a good line or ``None`` for a bad one. A ``hello``
    starts the peer's numbering afresh (it has restarted).
    """

    def __init__(self) -> None:
        self.expected = -1
        self.bad = 0
        self.lost = 0
        self.good = 0
        self.last_error = ""

    def feed(self, line: bytes) -> tuple[int, str, list[str]] | None:
        try:
            seq, verb, args = decode_line(line)
        except LineError as exc:
            self.bad += 1
            self.last_error = str(exc)
            return None
        if verb != "hello" and self.expected >= 0 and seq != self.expected:
            self.lost += (seq - self.expected) % SEQ_MODULO
        self.expected = (seq + 1) % SEQ_MODULO
        self.good += 1
        return seq, verb, args


def parse_version(text: str) -> tuple[int, int]:
    """``"1.0"`` -> ``(1, 0)``; raise :class:`LineError` for anything else."""
    parts = text.split(".")
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
        raise LineError(f"protocol version {text!r} is not MAJOR.MINOR")
    return int(parts[0]), int(parts[1])


def parse_fields(args: list[str]) -> dict[str, str]:
    """``["name=Box", "caps=a,b"]`` -> ``{"name": "Box", "caps": "a,b"}`` (tokens without '=' are skipped)."""
    out = {}
    for a in args:
        eq = a.find("=")
        if eq > 0:
            out[a[:eq]] = a[eq + 1:]
    return out
