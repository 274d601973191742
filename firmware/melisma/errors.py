"""One exception root for Melisma, with a subclass per subsystem.

Every message names the bad value and says what would work, so the CLI can print it as is
and exit non-zero without a traceback.
"""

from __future__ import annotations


class MelismaError(Exception):
    """Root of every error Melisma raises on purpose."""

    #: Process exit status the CLI uses for this kind of error.
    exit_code = 1


class AudioIOError(MelismaError):
    """A file could not be read or written as audio."""

    exit_code = 3


class DecodeError(AudioIOError):
    """Missing, empty, truncated, corrupt or non-audio input."""


class OutputExistsError(AudioIOError):
    """The output path already exists and overwriting was not asked for."""


class AudioContentError(MelismaError):
    """Audio that decodes but cannot be used: silence, NaN/Inf samples, far too long."""

    exit_code = 4


class AlignmentError(MelismaError):
    """The take could not be lined up with the backing."""

    exit_code = 5


class AlignmentUnknownError(AlignmentError):
    """The take's offset behind the backing could not be measured and no latency was given;
    nothing was mixed (accept the best guess explicitly to mix anyway).
    """


class AnalysisError(MelismaError):
    """Pitch, note, ornament or key analysis failed."""

    exit_code = 5


class PlanError(MelismaError):
    """A plan file is missing, malformed, from an incompatible version or refers to missing media."""

    exit_code = 6


class ConfigError(MelismaError):
    """A setting (slider, preset, option, config file value) is out of range or unknown."""

    exit_code = 2


class RenderError(MelismaError):
    """The mix could not be rendered."""

    exit_code = 7


class ModelError(MelismaError):
    """A TFLite model could not be loaded or run."""

    exit_code = 8


class ProtocolError(MelismaError):
    """A BLE protocol message is malformed, truncated, oversized or of an incompatible version."""

    exit_code = 9


class DeviceError(MelismaError):
    """The device service (jobs, storage, BLE peripheral) failed."""

    exit_code = 10


class AudioDeviceError(MelismaError):
    """The box's own audio I/O (PortAudio devices, streams, calibration) failed or was misconfigured."""

    exit_code = 11


class UpdateError(MelismaError):
    """A firmware bundle was refused or an install, rollback or health check failed (``melisma-update``)."""

    exit_code = 12


class RadioLostError(DeviceError):
    """The box's radio (its HCI transport: adapter, USB dongle, virtual controller) went away while it ran."""

    exit_code = 14
