"""Stand-in for torchaudio, for the pitch benchmark only (never on the engine's path).

PyPI's torchaudio does not load with torch 2.13 here; torchcrepe imports it only for its
file-loading helper, which the benchmark does not use (it passes arrays).
"""


def load(*_args, **_kwargs):
    raise RuntimeError("torchaudio stub: decode audio with melisma.audio_io.load_audio instead")
