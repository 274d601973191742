"""The box's own audio I/O on PortAudio (PyAudio): devices, calibration, recording, monitoring, playback.

Modules: :mod:`.devices` (listing, picking, format checks, :class:`~.devices.AudioSettings`),
:mod:`.stream` (the callback stream and its figures), :mod:`.calibrate` (loopback latency),
:mod:`.record` (a take while the backing plays), :mod:`.monitor` (live monitoring through the
vocal chain), :mod:`.play` (playback), :mod:`.cli` (``melisma-device audio ...``).
PyAudio is imported only when a stream or device list is needed.
"""
