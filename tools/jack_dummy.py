"""A JACK dummy server for tests and benchmarks: real-time PortAudio streams with no sound card.

``JackDummy`` starts ``jackd --no-realtime -d dummy -r RATE -p PERIOD`` (Debian's jackd2) under a
server name of its own (``JACK_DEFAULT_SERVER``, which libjack, and so PortAudio's JACK host API,
reads), waits until it answers, and stops it afterwards. :meth:`JackDummy.loop_portaudio` wires
PortAudio's first output port to its first input port with ``jack_connect``: a loopback cable
inside the JACK graph. :meth:`JackDummy.iodelay` runs ``jack_iodelay`` on the same kind of loop.

Used by tests/melisma/device/audio (a fixture) and tools/bench_audio.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time


class JackUnavailable(RuntimeError):
    """jackd is not installed or would not start."""


#: Server names tried in turn when none is given. JACK keeps at most 8 servers in its shared
#: registry and frees a dead server's entry only when a server of the same name registers, so
#: names from a small pool (not random ones) get the entries of killed servers back.
NAME_POOL = tuple(f"melisma-test-{k}" for k in range(16))


class JackDummy:
    def __init__(self, *, rate: int = 48000, period: int = 256, name: str | None = None, realtime: bool = False):
        self.rate, self.period, self.realtime = rate, period, realtime
        self._pool = [name] if name else list(NAME_POOL)
        self.name = self._pool[0]
        self.proc: subprocess.Popen | None = None
        self._saved_env: str | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "JACK_DEFAULT_SERVER": self.name, "JACK_NO_AUDIO_RESERVATION": "1"}

    def start(self, timeout_s: float = 10.0) -> JackDummy:
        """Start jackd under the first free name of the pool (a name in use by a live server is skipped)."""
        last: JackUnavailable | None = None
        for name in self._pool:
            self.name = name
            probe = subprocess.run(["jack_lsp"], env={**self.env, "JACK_NO_START_SERVER": "1"}, capture_output=True,
                                   text=True, timeout=5)
            if probe.returncode == 0:  # a live server (another test session's) has this name
                last = JackUnavailable(f"a JACK server named {name} already runs")
                continue
            try:
                return self._start(timeout_s)
            except JackUnavailable as exc:
                last = exc
                if "already" not in str(exc) and "Too many servers" not in str(exc):
                    raise
        assert last is not None
        raise last

    def _start(self, timeout_s: float) -> JackDummy:
        if shutil.which("jackd") is None or shutil.which("jack_connect") is None:
            raise JackUnavailable("jackd / jack_connect not found; install Debian's jackd2 (tools/run does)")
        rt = ["-R", "-P", "70"] if self.realtime else ["--no-realtime"]
        # jackd's messages go to a file, not a pipe: under load it logs every xrun, and a pipe no one
        # reads fills up, blocks jackd's writes and with them the graph (PortAudio's stop then waits
        # for a process callback that never comes). -t: a generous client timeout, so a client slowed
        # by a loaded machine is not dropped from the graph (zombified) either.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server; closed by stop()
        self.proc = subprocess.Popen(["jackd", *rt, "-t", "10000", "-d", "dummy", "-r", str(self.rate),
                                      "-p", str(self.period)],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=self._log,
                                     start_new_session=True)
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                self._log.seek(0)
                err = self._log.read().decode(errors="replace")
                raise JackUnavailable(f"jackd exited with {self.proc.returncode}: {err[-500:]}")
            r = subprocess.run(["jack_lsp"], env=self.env, capture_output=True, text=True, timeout=5)
            if r.returncode == 0 and "system:capture_1" in r.stdout:
                time.sleep(0.2)
                if self.proc.poll() is None:  # ours answered (not another server that took the name first)
                    break
            time.sleep(0.1)
        else:
            self.stop()
            raise JackUnavailable(f"jackd did not answer within {timeout_s} s")
        self._saved_env = os.environ.get("JACK_DEFAULT_SERVER")
        os.environ["JACK_DEFAULT_SERVER"] = self.name  # for PortAudio in this process
        os.environ["JACK_NO_AUDIO_RESERVATION"] = "1"
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
            self._log = None
        self.proc = None
        if self._saved_env is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = self._saved_env

    def __enter__(self) -> JackDummy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        """What jackd has logged so far (read without moving the file offset jackd writes at)."""
        log = getattr(self, "_log", None)
        if log is None:
            return ""
        size = os.fstat(log.fileno()).st_size
        return os.pread(log.fileno(), size, 0).decode(errors="replace")

    def xrun_counts(self) -> dict[str, int]:
        """xruns jackd has logged so far, by cause.

        ``driver``: the dummy driver's own timer woke up late (``JackTimedDriver::Process XRun``),
        whatever the clients did; ``client``: a client had not finished its cycle in time
        (``JackEngine::XRun: client = ... was not finished`` / ``... finished after current callback``).
        """
        text = self.log_text()
        return {"driver": text.count("JackTimedDriver::Process XRun"),
                "client": len(re.findall(r"JackEngine::XRun: client", text))}

    def native_passthrough(self, seconds: float) -> dict[str, int]:
        """Run ``jack_thru`` (a C client: capture -> playback) for ``seconds``; the xruns jackd logged meanwhile.

        The peer with no Python at all: what the server and the machine do on their own.
        """
        if shutil.which("jack_thru") is None:
            raise JackUnavailable("jack_thru not found (Debian's jackd2 ships it)")
        before = self.xrun_counts()
        proc = subprocess.Popen(["jack_thru"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            t_end = time.monotonic() + 5
            while "jack_thru:input_1" not in self.ports():
                if proc.poll() is not None or time.monotonic() > t_end:
                    raise JackUnavailable(f"jack_thru did not register its ports: {self.ports()}")
                time.sleep(0.05)
            time.sleep(seconds)
        finally:
            proc.terminate()
            proc.wait(5)
        after = self.xrun_counts()
        return {k: after[k] - before[k] for k in after}

    def ports(self) -> list[str]:
        r = subprocess.run(["jack_lsp"], env=self.env, capture_output=True, text=True, timeout=5)
        return r.stdout.split()

    def connect(self, src: str, dst: str, attempts: int = 3) -> None:
        """``jack_connect src dst``; a client that could not open (a loaded machine) is tried again."""
        for attempt in range(attempts):
            r = subprocess.run(["jack_connect", src, dst], env=self.env, capture_output=True, text=True, timeout=5)
            if r.returncode == 0 or "already" in (r.stdout + r.stderr):
                return
            if "Cannot open" not in (r.stdout + r.stderr) or attempt == attempts - 1:
                raise RuntimeError(f"jack_connect {src} {dst}: {r.stdout}{r.stderr}")
            time.sleep(0.2)

    def disconnect(self, src: str, dst: str) -> None:
        subprocess.run(["jack_disconnect", src, dst], env=self.env, capture_output=True, timeout=5)

    def portaudio_ports(self, timeout_s: float = 5.0) -> tuple[str, str]:
        """(first output port, first input port) of the PortAudio client, once they exist."""
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            ports = self.ports()
            outs = sorted(p for p in ports if re.match(r"PortAudio[^:]*:out_0$", p))
            ins = sorted(p for p in ports if re.match(r"PortAudio[^:]*:in_0$", p))
            if outs and ins:
                return outs[0], ins[0]
            time.sleep(0.05)
        raise RuntimeError(f"no PortAudio ports in the JACK graph: {self.ports()}")

    def loop_portaudio(self) -> None:
        """Connect PortAudio's out_0 to its in_0 (a loopback cable in the graph)."""
        out, inp = self.portaudio_ports()
        self.connect(out, inp)

    def iodelay(self, seconds: float = 2.0) -> float:
        """Round trip in frames that ``jack_iodelay`` measures on a direct loop jack_delay:out -> jack_delay:in."""
        if shutil.which("jack_iodelay") is None:
            raise JackUnavailable("jack_iodelay not found (Debian's jackd2 ships it)")
        proc = subprocess.Popen(["stdbuf", "-oL", "jack_iodelay"], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            t_end = time.monotonic() + 5
            while "jack_delay:in" not in self.ports():
                if time.monotonic() > t_end:
                    raise RuntimeError("jack_iodelay did not register its ports")
                time.sleep(0.05)
            self.connect("jack_delay:out", "jack_delay:in")
            time.sleep(seconds)
        finally:
            proc.terminate()
            out = proc.communicate(timeout=5)[0].decode(errors="replace")
        found = re.findall(r"([\d.]+) frames\s+([\d.]+) ms total roundtrip latency", out.replace("\r", "\n"))
        if not found:
            raise RuntimeError(f"jack_iodelay printed no measurement: {out[-300:]!r}")
        return float(found[-1][0])
