"""A minimal headless LV2 host (ctypes) to run x42-autotune (fat1) as the live corrector's peer.

``lv2apply`` (lilv-utils) refuses fat1 because of its MIDI (atom) input port, so this host loads
the plugin's shared library itself: it calls ``lv2_descriptor``, offers the one feature fat1
requires (``urid:map``), connects an empty atom sequence to the MIDI port, float buffers to
the audio and control ports, and runs it block by block. Port indices are read from the
bundle's ``fat1.ttl`` (``lv2:index`` / ``lv2:symbol``), so a reordered plugin fails loudly
rather than being driven wrong. Debian's ``x42-plugins`` package ships the plugin
(``tools/run`` installs it).

>>> Fat1.available() in (True, False)
True
"""

from __future__ import annotations

import ctypes as C
import re
from pathlib import Path

import numpy as np

FAT1_URI = b"http://gareus.org/oss/lv2/fat1"
BUNDLES = (Path("/usr/lib/lv2/fat1.lv2"), Path("/usr/lib/x86_64-linux-gnu/lv2/fat1.lv2"),
           Path("/usr/lib/aarch64-linux-gnu/lv2/fat1.lv2"), Path("/usr/local/lib/lv2/fat1.lv2"))
URID_MAP = b"http://lv2plug.in/ns/ext/urid#map"
ATOM_SEQUENCE = b"http://lv2plug.in/ns/ext/atom#Sequence"


class Lv2Error(RuntimeError):
    """The plugin is not installed or would not load."""


class _Feature(C.Structure):
    _fields_ = [("URI", C.c_char_p), ("data", C.c_void_p)]


_MAP_FN = C.CFUNCTYPE(C.c_uint32, C.c_void_p, C.c_char_p)


class _UridMap(C.Structure):
    _fields_ = [("handle", C.c_void_p), ("map", _MAP_FN)]


class _Descriptor(C.Structure):
    pass


_Descriptor._fields_ = [
    ("URI", C.c_char_p),
    ("instantiate", C.CFUNCTYPE(C.c_void_p, C.POINTER(_Descriptor), C.c_double, C.c_char_p, C.POINTER(C.POINTER(_Feature)))),
    ("connect_port", C.CFUNCTYPE(None, C.c_void_p, C.c_uint32, C.c_void_p)),
    ("activate", C.CFUNCTYPE(None, C.c_void_p)),
    ("run", C.CFUNCTYPE(None, C.c_void_p, C.c_uint32)),
    ("deactivate", C.CFUNCTYPE(None, C.c_void_p)),
    ("cleanup", C.CFUNCTYPE(None, C.c_void_p)),
    ("extension_data", C.c_void_p),
]


def _ports(ttl: str) -> dict[str, int]:
    """``symbol -> index`` for the first plugin described in ``ttl``."""
    first = ttl.split("a lv2:Plugin")[1]
    first = first.split("a lv2:Plugin")[0]
    found = re.findall(r"lv2:index\s+(\d+)\s*;\s*lv2:symbol\s+\"(\w+)\"", first)
    return {sym: int(i) for i, sym in found}


class Fat1:
    """x42-autotune (fat1) at ``sample_rate``; :meth:`run` processes a whole signal block by block."""

    def __init__(self, sample_rate: int = 48000):
        bundle = next((b for b in BUNDLES if (b / "fat1.so").exists()), None)
        if bundle is None:
            raise Lv2Error("x42-autotune (fat1) is not installed: apt-get install x42-plugins")
        self.ports = _ports((bundle / "fat1.ttl").read_text())
        need = {"midiin", "in", "out", "mode", "corr", "latency", *(f"m{i:02d}" for i in range(12))}
        if not need <= set(self.ports):
            raise Lv2Error(f"fat1.ttl lacks ports {sorted(need - set(self.ports))}")
        self.sr = int(sample_rate)
        self._lib = C.CDLL(str(bundle / "fat1.so"))
        self._lib.lv2_descriptor.restype = C.POINTER(_Descriptor)
        self._lib.lv2_descriptor.argtypes = [C.c_uint32]
        desc = None
        for i in range(16):
            d = self._lib.lv2_descriptor(i)
            if not d:
                break
            if d.contents.URI == FAT1_URI:
                desc = d
                break
        if desc is None:
            raise Lv2Error("fat1.so has no descriptor for " + FAT1_URI.decode())
        self._desc = desc
        self._urids: dict[bytes, int] = {}

        def _map(_handle, uri):
            return self._urids.setdefault(bytes(uri), len(self._urids) + 1)

        self._map_cb = _MAP_FN(_map)
        self._map = _UridMap(None, self._map_cb)
        self._feat = _Feature(URID_MAP, C.cast(C.pointer(self._map), C.c_void_p))
        self._features = (C.POINTER(_Feature) * 2)(C.pointer(self._feat), None)
        self._seq_type = _map(None, ATOM_SEQUENCE)
        self._seq = np.zeros(64, np.uint32)  # LV2_Atom_Sequence: size, type, unit, pad (+ room)
        self._controls: dict[str, np.ndarray] = {}

    @staticmethod
    def available() -> bool:
        """Whether the plugin is installed here."""
        return any((b / "fat1.so").exists() for b in BUNDLES)

    @property
    def latency_frames(self) -> float:
        """The latency fat1 reports on its ``latency`` output port (frames) after the last run."""
        return float(self._controls["latency"][0]) if "latency" in self._controls else 0.0

    def run(self, x: np.ndarray, *, block: int = 128, scale_pcs: tuple[int, ...] = tuple(range(12)),
            amount: float = 1.0, fast: bool = False, **controls: float) -> np.ndarray:
        """Process mono float32 ``x`` in ``block``-frame runs; returns the output (same length, not realigned).

        ``scale_pcs``: the pitch classes the plugin may tune to (C = 0; its note mask).
        """
        d = self._desc.contents
        h = d.instantiate(self._desc, float(self.sr), b"/usr/lib/lv2/fat1.lv2/", self._features)
        if not h:
            raise Lv2Error("fat1 would not instantiate")
        try:
            vals: dict[str, float] = {"mode": 0.0, "corr": float(amount), "fastmode": 1.0 if fast else 0.0}
            for i in range(12):
                vals[f"m{i:02d}"] = 1.0 if i in scale_pcs else 0.0
            vals.update(controls)
            self._controls = {}
            for sym, idx in self.ports.items():
                if sym in ("midiin", "in", "out"):
                    continue
                buf = np.zeros(1, np.float32)
                if sym in vals:
                    buf[0] = vals[sym]
                elif sym in ("tuning",):
                    buf[0] = 440.0
                elif sym == "bias":
                    buf[0] = 0.5
                elif sym == "filter":
                    buf[0] = 0.1
                elif sym == "bendrange":
                    buf[0] = 2.0
                self._controls[sym] = buf
                d.connect_port(h, idx, buf.ctypes.data)
            inb = np.zeros(block, np.float32)
            outb = np.zeros(block, np.float32)
            d.connect_port(h, self.ports["midiin"], self._seq.ctypes.data)
            d.connect_port(h, self.ports["in"], inb.ctypes.data)
            d.connect_port(h, self.ports["out"], outb.ctypes.data)
            if d.activate:  # LV2 lets a plugin leave activate/deactivate NULL
                d.activate(h)
            n = len(x)
            y = np.zeros(n, np.float32)
            for i in range(0, n, block):
                m = min(block, n - i)
                inb[:m] = x[i:i + m]
                inb[m:] = 0.0
                self._seq[:4] = (8, self._seq_type, 0, 0)
                d.run(h, block)
                y[i:i + m] = outb[:m]
            if d.deactivate:
                d.deactivate(h)
            return y
        finally:
            d.cleanup(h)
