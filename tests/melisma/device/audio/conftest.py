"""A JACK dummy server for the box-audio tests: real PortAudio streams, no sound card.

The server runs under a name of its own (JACK_DEFAULT_SERVER) for the whole session;
``tools/run`` installs Debian's jackd2. Without jackd installed the tests skip (it is the one
thing that cannot be made here), and fail if it is installed but will not start.
"""

from __future__ import annotations

import shutil
import threading

import pytest

from tools.jack_dummy import JackDummy

JACK_PERIOD = 256


@pytest.fixture(scope="session")
def jack():
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (Debian's jackd2; `tools/run test` installs it)")
    server = JackDummy(rate=48000, period=JACK_PERIOD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def loop_later(jack):
    """Wire PortAudio's out_0 -> in_0 after ``delay_s``, from another thread (the stream is already running)."""
    threads = []

    def arm(delay_s: float = 0.6):
        def wire():
            threading.Event().wait(delay_s)
            jack.loop_portaudio()

        t = threading.Thread(target=wire, daemon=True)
        t.start()
        threads.append(t)
        return t

    yield arm
    for t in threads:
        t.join(10)
