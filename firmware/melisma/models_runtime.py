"""Loading and running the on-device TFLite models, without TensorFlow.

The models are full-integer (int8) TFLite flatbuffers. Two runtimes share the same
``Interpreter`` API and either will do:

* ``tflite_runtime`` (pip ``tflite-runtime``; what Raspberry Pi OS images ship; needs numpy < 2),
* ``ai_edge_litert`` (pip ``ai-edge-litert``; its successor, works with numpy 1 and 2).

:func:`load_interpreter` tries them in that order (or the one named by ``runtime=`` or the
``MELISMA_TFLITE_RUNTIME`` environment variable). :class:`TfliteModel` wraps an interpreter so
callers pass and get float32 arrays: int8/uint8 inputs are quantised and outputs dequantised with
each tensor's own scale and zero point, and the batch (first) dimension is resized on demand.
:func:`models_dir` says where the ``.tflite`` files live.

Examples
--------
>>> from melisma.models_runtime import TfliteModel, models_dir
>>> model = TfliteModel(models_dir() / "pitch" / "melisma_pitch_int8.tflite")  # doctest: +SKIP
>>> model.input_shape, model.output_names  # doctest: +SKIP
((1, 3, 128), ('pitch_logits', 'voicing_logit'))
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError

__all__ = [
    "RUNTIMES",
    "TfliteModel",
    "available_runtimes",
    "check_tflite_file",
    "load_interpreter",
    "model_path",
    "models_dir",
]

#: Runtime name -> module holding ``Interpreter``, in the order they are tried.
RUNTIMES: dict[str, str] = {
    "tflite_runtime": "tflite_runtime.interpreter",
    "ai_edge_litert": "ai_edge_litert.interpreter",
}

#: Environment variable that picks the runtime (a key of :data:`RUNTIMES`).
RUNTIME_ENV = "MELISMA_TFLITE_RUNTIME"
#: Environment variable that points at the models directory.
MODELS_DIR_ENV = "MELISMA_MODELS_DIR"


def _import_interpreter(runtime: str) -> Any:
    """The ``Interpreter`` class of ``runtime``; raises ImportError (or whatever the import raised)."""
    module = importlib.import_module(RUNTIMES[runtime])
    return module.Interpreter


def available_runtimes() -> list[str]:
    """Names of the TFLite runtimes that import here, in the order :func:`load_interpreter` tries them.

    >>> set(available_runtimes()) <= set(RUNTIMES)
    True
    """
    found = []
    for name in RUNTIMES:
        if name == "tflite_runtime" and int(np.__version__.split(".")[0]) >= 2:
            continue  # it would crash at Interpreter() (see load_interpreter)
        try:
            _import_interpreter(name)
        except Exception:
            continue
        found.append(name)
    return found


def load_interpreter(path: str | os.PathLike, *, num_threads: int = 1, runtime: str | None = None) -> Any:
    """A TFLite interpreter for the model at ``path``, tensors allocated, ready to ``invoke``.

    Parameters
    ----------
    path : str or PathLike
        The ``.tflite`` file.
    num_threads : int
        CPU threads the interpreter may use (1: the engine budgets one core per job).
    runtime : {'tflite_runtime', 'ai_edge_litert'}, optional
        Use only this runtime. Default: ``$MELISMA_TFLITE_RUNTIME`` if set, else the first of
        :data:`RUNTIMES` that imports and loads the model.

    Returns
    -------
    Interpreter
        A ``tflite_runtime`` or ``ai_edge_litert`` interpreter; its runtime name is stored as
        the attribute ``melisma_runtime``.

    Raises
    ------
    ModelError
        The file is missing, unreadable or not a TFLite model, ``runtime`` is unknown, or no
        runtime is installed. The message names the path and every runtime tried.

    Examples
    --------
    >>> try:
    ...     load_interpreter("/nonexistent/model.tflite")
    ... except ModelError as exc:
    ...     print(str(exc)[:48])
    model file /nonexistent/model.tflite does not ex
    """
    p = Path(path)
    if num_threads < 1:
        raise ModelError(f"num_threads={num_threads}: use 1 or more")
    runtime = runtime or os.environ.get(RUNTIME_ENV) or None
    if runtime is not None and runtime not in RUNTIMES:
        raise ModelError(f"runtime={runtime!r} is unknown; use one of {', '.join(RUNTIMES)} (or leave it unset)")
    if not p.is_file():
        where = f"(models directory: {models_dir()}; set ${MODELS_DIR_ENV} to point elsewhere)"
        raise ModelError(f"model file {p} does not exist; {where}")
    problem = check_tflite_file(p)
    if problem:
        raise ModelError(f"model file {p} is not a usable TFLite model: {problem}; re-fetch or re-train it "
                         "(the file was not handed to a runtime: some crash on damaged files)")
    names = [runtime] if runtime else list(RUNTIMES)
    failures: list[str] = []
    for name in names:
        if name == "tflite_runtime" and int(np.__version__.split(".")[0]) >= 2:
            # tflite-runtime (last release 2.14) crashes the process in Interpreter() under numpy 2
            failures.append(f"{name}: skipped, it needs numpy < 2 and numpy {np.__version__} is installed")
            continue
        try:
            interpreter_cls = _import_interpreter(name)
        except Exception as exc:
            failures.append(f"{name}: not importable ({type(exc).__name__}: {exc})")
            continue
        try:
            interpreter = interpreter_cls(model_path=str(p), num_threads=int(num_threads))
            interpreter.allocate_tensors()
        except Exception as exc:
            failures.append(f"{name}: could not load it ({type(exc).__name__}: {str(exc).strip()[:200]})")
            continue
        interpreter.melisma_runtime = name
        return interpreter
    size = p.stat().st_size
    raise ModelError(
        f"could not load TFLite model {p} ({size} bytes); tried " + "; ".join(failures)
        + ". Install one runtime (pip install ai-edge-litert, or tflite-runtime with numpy<2) "
        "and check that the file is a complete .tflite model (re-fetch or re-train it)."
    )


def check_tflite_file(path: str | os.PathLike) -> str | None:
    """Why the file at ``path`` is not a complete TFLite flatbuffer, or None when it looks sound.

    A structural check of the parts a runtime dereferences first (the identifier, the Model
    table, its vectors, every buffer's data and external range, every subgraph's tensor and
    operator tables): tflite-runtime 2.14 does not verify the flatbuffer and segfaults on a
    truncated file, which would take the whole device service down.

    >>> import tempfile, os
    >>> bad = os.path.join(tempfile.mkdtemp(), "x.tflite")
    >>> _ = open(bad, "wb").write(b"not a model, only some text of a few dozen bytes")
    >>> check_tflite_file(bad)
    'no TFLite identifier (TFL3) at bytes 4-8: not a .tflite file'
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    n = len(data)
    if n < 16:
        return f"only {n} bytes long"
    if data[4:8] != b"TFL3":
        return "no TFLite identifier (TFL3) at bytes 4-8: not a .tflite file"
    import struct

    def u32(at: int) -> int:
        if at < 0 or at + 4 > n:
            raise _Truncated(at)
        return struct.unpack_from("<I", data, at)[0]

    def u16(at: int) -> int:
        if at < 0 or at + 2 > n:
            raise _Truncated(at)
        return struct.unpack_from("<H", data, at)[0]

    def u64(at: int) -> int:
        if at < 0 or at + 8 > n:
            raise _Truncated(at)
        return struct.unpack_from("<Q", data, at)[0]

    def table(at: int) -> tuple[int, int, int]:
        vt = at - struct.unpack_from("<i", data, at)[0] if 0 <= at <= n - 4 else -1
        size = u16(vt)
        inline = u16(vt + 2)
        if vt + size > n or at + inline > n:
            raise _Truncated(max(vt + size, at + inline))
        return at, vt, size

    def field(tab: tuple[int, int, int], i: int) -> int:
        at, vt, size = tab
        if 4 + 2 * i >= size:
            return 0
        off = u16(vt + 4 + 2 * i)
        return at + off if off else 0

    def ref(tab, i: int) -> int:
        f = field(tab, i)
        return f + u32(f) if f else 0

    def vector(tab, i: int, elem_size: int) -> tuple[int, int]:
        v = ref(tab, i)
        if not v:
            return 0, 0
        length = u32(v)
        if v + 4 + length * elem_size > n:
            raise _Truncated(v + 4 + length * elem_size)
        return v + 4, length

    def tables(tab, i: int):
        start, length = vector(tab, i, 4)
        for k in range(length):
            at = start + 4 * k
            yield table(at + u32(at))

    try:
        model = table(u32(0))
        for _ in tables(model, 1):  # operator codes
            pass
        desc = ref(model, 3)
        if desc and desc + 4 + u32(desc) > n:
            raise _Truncated(desc + 4 + u32(desc))
        vector(model, 5, 4)  # metadata buffer indices
        for meta in tables(model, 6):
            ref(meta, 0)
        for sig in tables(model, 7):  # signature defs and their tensor maps
            for _ in tables(sig, 0):
                pass
            for _ in tables(sig, 1):
                pass
        for buf in tables(model, 4):
            vector(buf, 0, 1)
            off_f, size_f = field(buf, 1), field(buf, 2)
            if off_f and size_f:
                offset, size = u64(off_f), u64(size_f)
                if offset > 1 and offset + size > n:
                    raise _Truncated(offset + size)
        n_subgraphs = 0
        for sub in tables(model, 2):
            n_subgraphs += 1
            for _ in tables(sub, 0):
                pass
            for _ in tables(sub, 3):
                pass
        if n_subgraphs == 0:
            return "the model has no subgraph"
    except _Truncated as exc:
        return f"truncated or damaged: it refers to byte {exc.args[0]} but is {n} bytes long"
    except struct.error as exc:
        return f"damaged ({exc})"
    return None


class _Truncated(Exception):
    pass


def models_dir() -> Path:
    """Directory holding the ``.tflite`` models (one sub-folder per model: ``pitch/``, ...).

    ``$MELISMA_MODELS_DIR`` if set; else ``<repo>/models`` when the package runs from a source
    checkout (editable install); else ``<sys.prefix>/share/melisma/models`` (installed data files).

    >>> models_dir().name
    'models'
    """
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env)
    repo_models = Path(__file__).resolve().parents[2] / "models"  # firmware/melisma/ -> repo root
    if repo_models.is_dir():
        return repo_models
    return Path(sys.prefix) / "share" / "melisma" / "models"


def model_path(*parts: str) -> Path:
    """Path of a model file under :func:`models_dir`, e.g. ``model_path("pitch", "x.tflite")``.

    Raises ModelError when it does not exist.
    """
    p = models_dir().joinpath(*parts)
    if not p.is_file():
        raise ModelError(
            f"model file {p} does not exist; set ${MODELS_DIR_ENV} to the folder holding "
            f"{'/'.join(parts)}, or re-install melisma with its models"
        )
    return p


class TfliteModel:
    """A TFLite model called with float32 arrays, whatever its tensors' types.

    Parameters
    ----------
    path : str or PathLike
        The ``.tflite`` file.
    num_threads : int
        Interpreter threads (default 1).
    runtime : str, optional
        Force a runtime (see :func:`load_interpreter`).

    Attributes
    ----------
    path : Path
    runtime : str
        Which runtime loaded it.
    input_shape : tuple of int
        Shape of the (first) input as stored in the model; the first dimension can be resized.
    input_names, output_names : tuple of str
        Tensor names (from the model's signature when it has one), sorted: :meth:`predict` takes
        inputs and returns outputs in this order, whatever order the converter numbered them in.

    Examples
    --------
    >>> m = TfliteModel(models_dir() / "pitch" / "melisma_pitch_int8.tflite")  # doctest: +SKIP
    >>> logits, voicing = m.predict(np.zeros((8,) + m.input_shape[1:], np.float32))  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, *, num_threads: int = 1, runtime: str | None = None) -> None:
        self.path = Path(path)
        self._interp = load_interpreter(self.path, num_threads=num_threads, runtime=runtime)
        self.runtime: str = self._interp.melisma_runtime
        # Names from the model's signature when it has one (the tensor names of a converted
        # SavedModel are 'StatefulPartitionedCall:0', ':1', ...), else from the tensors.
        sig_in, sig_out = _signature(self._interp)
        self._input_names = {idx: name for name, idx in sig_in.items()}
        self._output_names = {idx: name for name, idx in sig_out.items()}
        self._refresh_details()
        self.input_shape = tuple(int(s) for s in self._inputs[0]["shape"])
        self.input_names = tuple(self._input_names.get(d["index"], _clean_name(d["name"])) for d in self._inputs)
        self.output_names = tuple(self._output_names.get(d["index"], _clean_name(d["name"])) for d in self._outputs)
        self._batch = self.input_shape[0]

    def _refresh_details(self) -> None:
        self._inputs = sorted(self._interp.get_input_details(),
                              key=lambda d: (self._input_names.get(d["index"], d["name"]), d["index"]))
        self._outputs = sorted(self._interp.get_output_details(),
                               key=lambda d: (self._output_names.get(d["index"], d["name"]), d["index"]))

    # -- introspection ------------------------------------------------------------------------
    @property
    def input_details(self) -> list[dict]:
        return list(self._inputs)

    @property
    def output_details(self) -> list[dict]:
        return list(self._outputs)

    @property
    def is_int8(self) -> bool:
        """True when every input and output tensor is integer-quantised."""
        return all(np.dtype(d["dtype"]) in (np.int8, np.uint8) for d in self._inputs + self._outputs)

    # -- running ------------------------------------------------------------------------------
    def _resize(self, batch: int) -> None:
        if batch == self._batch:
            return
        for d in self._inputs:
            shape = list(d["shape"])
            shape[0] = batch
            self._interp.resize_tensor_input(d["index"], shape, strict=False)
        self._interp.allocate_tensors()
        self._refresh_details()
        self._batch = batch

    def predict(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        """Run the model on float inputs (batch first); returns float32 outputs in ``output_names`` order.

        Every input must have the model's shape apart from the first (batch) dimension, which
        may be any size >= 1 (the interpreter is resized when it changes; keep it fixed in
        loops, resizing costs an allocation).
        """
        if len(inputs) != len(self._inputs):
            raise ModelError(f"{self.path.name} takes {len(self._inputs)} input(s), got {len(inputs)}")
        arrays = [np.asarray(x, dtype=np.float32) for x in inputs]
        batch = arrays[0].shape[0] if arrays[0].ndim else 0
        if batch < 1:
            raise ModelError(f"{self.path.name}: inputs need a batch dimension of at least 1, got shape {arrays[0].shape}")
        self._resize(batch)
        for x, d in zip(arrays, self._inputs, strict=False):
            want = tuple(int(s) for s in d["shape"])
            if x.shape != want:
                raise ModelError(f"{self.path.name}: input {_clean_name(d['name'])!r} needs shape "
                                 f"(batch, {', '.join(map(str, want[1:]))}), got {x.shape}")
            self._interp.set_tensor(d["index"], _quantize(x, d))
        try:
            self._interp.invoke()
        except Exception as exc:
            raise ModelError(f"{self.path.name}: inference failed ({type(exc).__name__}: {exc})") from None
        return tuple(_dequantize(self._interp.get_tensor(d["index"]), d) for d in self._outputs)

    def predict_dict(self, *inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Like :meth:`predict`, keyed by output name."""
        return dict(zip(self.output_names, self.predict(*inputs), strict=False))

    __call__ = predict

    def __repr__(self) -> str:
        return f"TfliteModel({str(self.path)!r}, runtime={self.runtime!r}, input_shape={self.input_shape})"


def _signature(interpreter: Any) -> tuple[dict[str, int], dict[str, int]]:
    """(input name -> tensor index, output name -> tensor index) of the model's first signature, or empty dicts."""
    try:
        sigs = interpreter._get_full_signature_list()  # public get_signature_list() lacks the indices
    except Exception:
        return {}, {}
    if not sigs:
        return {}, {}
    sig = sigs.get("serving_default") or next(iter(sigs.values()))
    return dict(sig.get("inputs", {})), dict(sig.get("outputs", {}))


def _clean_name(name: str) -> str:
    """'StatefulPartitionedCall:0' style names keep their tail; 'serving_default_x:0' -> 'x'."""
    name = name.split(":")[0]
    for prefix in ("serving_default_", "StatefulPartitionedCall_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def _quant_params(detail: dict) -> tuple[float, int]:
    scale, zero = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return np.ascontiguousarray(x, dtype=np.float32)
    if dtype.kind not in "iu":
        raise ModelError(f"input tensor {detail['name']!r} has type {dtype}; only float32, int8 and uint8 are supported")
    scale, zero = _quant_params(detail)
    if scale == 0.0:
        raise ModelError(f"input tensor {detail['name']!r} is {dtype} without quantisation parameters")
    info = np.iinfo(dtype)
    q = np.round(x / scale) + zero
    return np.ascontiguousarray(np.clip(q, info.min, info.max).astype(dtype))


def _dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return np.array(q, dtype=np.float32)
    scale, zero = _quant_params(detail)
    if scale == 0.0:
        return q.astype(np.float32)
    return ((q.astype(np.float32) - np.float32(zero)) * np.float32(scale)).astype(np.float32)

