"""The TFLite loader: real runtimes on the committed int8 pitch model, clear errors on bad files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from melisma.errors import ModelError
from melisma.models_runtime import (
    RUNTIMES,
    TfliteModel,
    available_runtimes,
    check_tflite_file,
    load_interpreter,
    model_path,
    models_dir,
)

PITCH_MODEL = models_dir() / "pitch" / "melisma_pitch_int8.tflite"


def _require(runtime: str) -> None:
    if runtime not in available_runtimes():
        pytest.skip(f"{runtime} is not installed (or does not import) in this environment; "
                    f"pip install {'tflite-runtime' if runtime == 'tflite_runtime' else 'ai-edge-litert'} to run this case")


def test_some_runtime_is_installed():
    assert available_runtimes(), "install ai-edge-litert (or tflite-runtime with numpy<2)"


def test_committed_pitch_model_is_small_and_present():
    assert PITCH_MODEL.is_file()
    assert PITCH_MODEL.stat().st_size <= 200 * 1024


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_loads_and_runs_int8_model_on_each_runtime(runtime):
    _require(runtime)
    model = TfliteModel(PITCH_MODEL, runtime=runtime)
    assert model.runtime == runtime
    assert model.is_int8
    assert model.output_names == ("pitch_logits", "voicing_logit")
    x = np.random.default_rng(0).uniform(0, 1, (5, *model.input_shape[1:])).astype(np.float32)
    logits, voicing = model.predict(x)
    assert logits.dtype == np.float32 and logits.shape == (5, 300)
    assert voicing.shape == (5, 1)
    assert np.all(np.isfinite(logits))
    # different inputs give different outputs: the interpreter really ran
    assert np.abs(logits[0] - logits[1]).max() > 0


def test_dequantised_outputs_match_a_raw_interpreter_run():
    runtime = available_runtimes()[0]
    model = TfliteModel(PITCH_MODEL, runtime=runtime)
    interp = load_interpreter(PITCH_MODEL, runtime=runtime)
    (inp,) = interp.get_input_details()
    scale, zero = inp["quantization"]
    x = np.random.default_rng(1).uniform(0, 1, tuple(inp["shape"])).astype(np.float32)
    q = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    interp.set_tensor(inp["index"], q)
    interp.invoke()
    got = model.predict_dict(x)
    for d in interp.get_output_details():
        raw = interp.get_tensor(d["index"])
        s, z = d["quantization"]
        expect = (raw.astype(np.float32) - z) * s
        matches = [np.allclose(v, expect) for v in got.values() if v.shape == expect.shape]
        assert any(matches)


def test_batch_resize_keeps_per_frame_results():
    model = TfliteModel(PITCH_MODEL)
    x = np.random.default_rng(2).uniform(0, 1, (6, *model.input_shape[1:])).astype(np.float32)
    batched, _ = model.predict(x)
    single = np.concatenate([model.predict(x[i : i + 1])[0] for i in range(3)])
    np.testing.assert_allclose(single, batched[:3], atol=1e-6)


def test_both_runtimes_agree_when_both_installed():
    if len(available_runtimes()) < 2:
        pytest.skip(f"only {available_runtimes()} installed here; the comparison needs tflite_runtime and ai_edge_litert")
    ma = TfliteModel(PITCH_MODEL, runtime="tflite_runtime")
    # 64 frames: the voicing output has one value per frame, so the share of differing values needs many
    x = np.random.default_rng(3).uniform(0, 1, (64, *ma.input_shape[1:])).astype(np.float32)
    a = ma.predict(x)
    b = TfliteModel(PITCH_MODEL, runtime="ai_edge_litert").predict(x)
    for u, v, d in zip(a, b, ma.output_details, strict=False):
        step = d["quantization"][0]
        # the two runtimes' int8 kernels may round an accumulator differently: one step at most
        assert np.max(np.abs(u - v)) <= 1.01 * step
        # measured on the committed pitch model: 12 % of pitch logits and 22-27 % of voicing logits
        # (a single requantised dense output) differ by that one step; most must still be identical
        assert np.mean(u != v) < 0.4


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.tflite"
    with pytest.raises(ModelError, match=r"nope.tflite does not exist"):
        load_interpreter(missing)


@pytest.mark.parametrize("cut", ["empty", "garbage", 2000, -1, -200])
def test_corrupt_or_truncated_file_is_refused_without_crashing(tmp_path, cut):
    # tflite-runtime 2.14 segfaults on a truncated flatbuffer: the loader must catch it first
    data = PITCH_MODEL.read_bytes()
    bad = tmp_path / "bad.tflite"
    content = {"empty": b"", "garbage": b"this is not a flatbuffer" * 10}.get(cut)
    bad.write_bytes(content if content is not None else data[:cut])
    with pytest.raises(ModelError) as info:
        load_interpreter(bad)
    assert str(bad) in str(info.value)
    assert check_tflite_file(bad) is not None
    assert check_tflite_file(PITCH_MODEL) is None


def test_runtime_failures_name_each_runtime_tried(monkeypatch):
    # Make one runtime unimportable for real (an import of a module set to None raises ImportError),
    # so the message for a runtime that is missing is checked even where both are installed.
    gone = available_runtimes()[-1]
    monkeypatch.setitem(sys.modules, RUNTIMES[gone], None)
    missing = [name for name in RUNTIMES if name not in available_runtimes()]
    assert gone in missing
    with pytest.raises(ModelError) as info:
        load_interpreter(PITCH_MODEL, runtime=missing[0])
    msg = str(info.value)
    assert str(PITCH_MODEL) in msg and f"{missing[0]}: not importable" in msg
    monkeypatch.setenv("MELISMA_TFLITE_RUNTIME", missing[0])
    with pytest.raises(ModelError, match=missing[0]):
        TfliteModel(PITCH_MODEL)


def test_unknown_runtime_and_bad_threads_are_refused():
    with pytest.raises(ModelError, match="runtime='tensorflow' is unknown"):
        load_interpreter(PITCH_MODEL, runtime="tensorflow")
    with pytest.raises(ModelError, match="num_threads=0"):
        load_interpreter(PITCH_MODEL, num_threads=0)


def test_wrong_input_shape_is_refused():
    model = TfliteModel(PITCH_MODEL)
    with pytest.raises(ModelError, match="needs shape"):
        model.predict(np.zeros((2, 3, 64), np.float32))


def test_models_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MELISMA_MODELS_DIR", str(tmp_path))
    assert models_dir() == tmp_path
    with pytest.raises(ModelError, match="MELISMA_MODELS_DIR"):
        model_path("pitch", "melisma_pitch_int8.tflite")
    monkeypatch.delenv("MELISMA_MODELS_DIR")
    assert model_path("pitch", "melisma_pitch_int8.tflite") == PITCH_MODEL


def test_runtime_never_imports_tensorflow():
    code = (
        "import sys, numpy as np\n"
        "from melisma.models_runtime import TfliteModel, models_dir\n"
        "m = TfliteModel(models_dir() / 'pitch' / 'melisma_pitch_int8.tflite')\n"
        "m.predict(np.zeros((1,) + m.input_shape[1:], np.float32))\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras', 'torch')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
