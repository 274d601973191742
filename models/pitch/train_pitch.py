"""Train the pitch model, quantise it to full-integer int8 TFLite and report float vs int8 accuracy.

Runs in the training environment (TensorFlow/Keras), never on the device. The defaults reproduce
the committed ``models/pitch/melisma_pitch_int8.tflite`` (seeded; multi-threaded CPU kernels may
change the last digits)::

    nice python models/pitch/train_pitch.py            # data generated on the fly (cached in --work)

Steps: generate the synthetic training set and a held-out set with different seeds
(``make_pitch_data.py``), train the Keras model (architecture in :func:`build_model`), convert it
to TFLite twice (float32 and int8 with a representative data set of training frames), evaluate
both on the held-out set, write the int8 model and ``training_report.json`` next to it.

Model: input (batch, 5, 128): three spectrogram frames and two level rows (see
``melisma.analysis.pitch_model``; ``--no-level-input``: the three spectral rows only); outputs
``pitch_logits`` (batch, 300) over 20-cent bins from 46.875 Hz and ``voicing_logit`` (batch, 1).
Loss: cross-entropy against a Gaussian (25 cents) around the true bin on voiced frames, plus
binary cross-entropy for voicing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))  # make_pitch_data

from make_pitch_data import (  # noqa: E402
    add_data_options,
    data_option_defaults,
    data_options,
    data_options_argv,
    data_options_tag,
)
from melisma.analysis.pitch_model import (  # noqa: E402
    CENTS_PER_BIN,
    CONTEXT_FRAMES,
    LEVEL_ROWS,
    N_INPUT_BINS,
    N_PITCH_BINS,
    decode_pitch,
    hz_to_pitch_bin,
)

TARGET_SIGMA_BINS = 25.0 / CENTS_PER_BIN


def build_model(keras, *, channels: tuple[int, int, int] = (16, 32, 32), voicing_head: str = "bottleneck",
                level_input: bool = True):
    """The network: a small 1-D conv stack along frequency, then dense pitch and voicing heads.

    ``voicing_head``: 'bottleneck' feeds the voicing head the flattened 6-channel bottleneck only
    (as the pitch head); 'pooled' adds the maximum and mean over frequency of each channel of the
    last wide conv layer (how strongly and how widely each harmonic-pattern detector fired), which
    costs a few hundred weights. ``level_input``: the input has the two level rows after the
    three spectral rows; they enter the conv stack as two more channels and go straight to the
    voicing head as well (the level of a faint tail is what tells it from singing)."""
    layers = keras.layers
    rows = CONTEXT_FRAMES + (LEVEL_ROWS if level_input else 0)
    inp = keras.Input((rows, N_INPUT_BINS), name="spectrum")
    x = layers.Permute((2, 1))(inp)  # (bins, context frames [+ level rows] as channels)
    # the level rows are constant across bins: bin 0 of every channel carries them to the voicing head
    level_direct = layers.Flatten()(layers.Cropping1D((0, N_INPUT_BINS - 1))(x)) if level_input else None

    def conv(x, filters, kernel):
        x = layers.Conv1D(filters, kernel, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    c1, c2, c3 = channels
    x = conv(x, c1, 7)
    x = conv(x, c2, 5)
    x = layers.MaxPooling1D(2)(x)
    wide = conv(x, c3, 5)
    x = conv(wide, 6, 1)
    flat = layers.Flatten()(x)
    pitch = layers.Dense(N_PITCH_BINS, name="pitch_logits")(flat)
    if voicing_head == "pooled":
        vin = layers.Concatenate()([flat, layers.GlobalMaxPooling1D()(wide), layers.GlobalAveragePooling1D()(wide)])
    elif voicing_head == "bottleneck":
        vin = flat
    else:
        raise ValueError(f"voicing_head={voicing_head!r}: use 'bottleneck' or 'pooled'")
    if level_direct is not None:
        vin = layers.Concatenate()([vin, level_direct])
    v = layers.Dense(32, activation="relu")(vin)
    voicing = layers.Dense(1, name="voicing_logit")(v)
    return keras.Model(inp, [pitch, voicing])


def make_losses(tf):
    bins = tf.range(N_PITCH_BINS, dtype=tf.float32)[None, :]

    def pitch_loss(y_true, logits):
        b = tf.reshape(y_true, [-1, 1])
        voiced = tf.cast(b[:, 0] >= 0, tf.float32)
        target = tf.exp(-0.5 * tf.square((bins - b) / TARGET_SIGMA_BINS))
        target = target / (tf.reduce_sum(target, axis=1, keepdims=True) + 1e-9)
        ce = tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=logits)
        return ce * voiced

    def voicing_loss(y_true, logit):
        t = tf.reshape(y_true, [-1])
        known = tf.cast(t >= 0, tf.float32)  # -1: ambiguous frame, left out
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.maximum(t, 0.0), logits=tf.reshape(logit, [-1]))
        return bce * known

    return pitch_loss, voicing_loss


def targets(f0_hz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    voiced = f0_hz > 0
    b = np.where(voiced, hz_to_pitch_bin(np.where(voiced, f0_hz, 1.0)), -1.0).astype(np.float32)
    b[voiced] = np.clip(b[voiced], 0, N_PITCH_BINS - 1)
    return b, voiced.astype(np.float32)


def frame_scores(hz: np.ndarray, ref: np.ndarray) -> dict:
    rv, ev = ref > 0, hz > 0
    both = rv & ev
    err = np.full(len(ref), np.inf)
    err[both] = np.abs(1200 * np.log2(hz[both] / ref[both]))
    return {
        "raw_pitch_accuracy": float(np.mean(err[rv] < 50)),
        "voicing_recall": float(np.mean(ev[rv])),
        "voicing_false_alarm": float(np.mean(ev[~rv])) if (~rv).any() else 0.0,
        "median_cents_error": float(np.median(err[both])) if both.any() else float("nan"),
        "overall_accuracy": float(np.mean(np.where(rv, ev & (err < 50), ~ev))),
    }


def convert(tf, model, saved_dir: Path, rep_x: np.ndarray | None) -> bytes:
    import keras

    # a model with named outputs, so the TFLite signature names them (not 'output_0', 'output_1')
    named = keras.Model(model.inputs, {"pitch_logits": model.outputs[0], "voicing_logit": model.outputs[1]})
    named.export(str(saved_dir), format="tf_saved_model", verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_dir))
    if rep_x is not None:
        def rep():
            for i in range(0, len(rep_x), 16):
                yield [rep_x[i : i + 16].astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def eval_tflite(path: Path, x: np.ndarray, f0: np.ndarray) -> dict:
    from melisma.analysis.pitch_model import TflitePitchTracker

    tracker = TflitePitchTracker(model_path=path)
    x = x[:, : tracker.model.input_shape[1]]  # the held-out set has the level rows; an old model takes 3 rows
    logits = np.zeros((len(x), N_PITCH_BINS), np.float32)
    voicing = np.zeros(len(x), np.float32)
    m = tracker.model
    for c0 in range(0, len(x), 256):
        out = m.predict_dict(x[c0 : c0 + 256].astype(np.float32))
        logits[c0 : c0 + 256] = out["pitch_logits"]
        voicing[c0 : c0 + 256] = out["voicing_logit"].reshape(-1)
    hz, _ = decode_pitch(logits, voicing)
    return frame_scores(hz, f0)


def eval_tflite_subprocess(path: Path, held_npz: Path) -> dict:
    """:func:`eval_tflite` in a fresh interpreter without TensorFlow loaded: a TFLite runtime and
    TensorFlow in one process can crash (two copies of the TFLite kernels)."""
    code = (f"import json, sys, numpy as np; sys.path.insert(0, {str(HERE)!r}); from train_pitch import eval_tflite; "
            f"h = np.load({str(held_npz)!r}); print(json.dumps(eval_tflite({str(path)!r}, h['x'].astype(np.float32), h['f0_hz'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_data(work: Path, name: str, clips: int, seed_base: int, options: dict | None = None) -> Path:
    """The data file for these clips and :data:`make_pitch_data.DATA_OPTIONS` (default: all at
    their defaults), made by ``make_pitch_data.py`` unless ``work`` already has it."""
    options = {**data_option_defaults(), **(options or {})}
    out = work / f"{name}_{clips}_{seed_base}_levels{data_options_tag(options)}.npz"
    if not out.exists():
        cmd = [
            sys.executable,
            str(HERE / "make_pitch_data.py"),
            "--clips",
            str(clips),
            "--seed-base",
            str(seed_base),
            "--out",
            str(out),
            *data_options_argv(options),
        ]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return out


def recalibrate_batchnorm(keras, model, x, *, seed: int, batches: int = 100, batch_size: int = 512) -> None:
    """Re-estimate BatchNorm statistics for the current (averaged) weights.

    The moving statistics were gathered under the raw training weights; the averaged weights
    shift each layer's activations a little, so the statistics are measured again in training
    mode (no gradient step) on random training frames.
    """
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.9  # 100 batches: the old statistics weigh 0.9**100, nothing
    rng = np.random.default_rng(seed + 7)
    for _ in range(batches):
        xb = x[rng.choice(len(x), size=batch_size, replace=False)].astype(np.float32)
        model(xb, training=True)
    for layer, momentum in zip(layers, saved, strict=False):
        layer.momentum = momentum


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-clips", type=int, default=1000)
    ap.add_argument("--heldout-clips", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=os.environ.get("MELISMA_PITCH_WORK", "/tmp/melisma_pitch_work"))
    ap.add_argument("--out", default=str(HERE / "melisma_pitch_int8.tflite"))
    ap.add_argument("--channels", default="16,32,32", help="conv channels of the three wide layers")
    ap.add_argument("--voicing-head", default="bottleneck", choices=["bottleneck", "pooled"])
    add_data_options(ap, scope="training clips (the held-out clips keep the defaults): ")
    ap.add_argument(
        "--no-level-input",
        dest="level_input",
        action="store_false",
        help="train without the two level rows (input (batch, 3, 128), the session-1 model)",
    )
    ap.add_argument("--train-npz", help="use this training set instead of generating one")
    ap.add_argument("--heldout-npz", help="use this held-out set instead of generating one")
    ap.add_argument(
        "--ema-momentum",
        type=float,
        default=None,
        help="keep an exponential moving average of the weights with this momentum (e.g. 0.9995) "
        "and ship the average; BatchNorm statistics are then re-estimated on training frames",
    )
    args = ap.parse_args(argv)
    if args.ema_momentum is not None and not 0.0 < args.ema_momentum < 1.0:
        ap.error(f"--ema-momentum {args.ema_momentum} is outside (0, 1); try 0.9995")

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train_npz = Path(args.train_npz) if args.train_npz else ensure_data(work, "train", args.train_clips, 0, data_options(args))
    held_npz = Path(args.heldout_npz) if args.heldout_npz else ensure_data(work, "heldout", args.heldout_clips, 900000)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(args.seed)

    rows = CONTEXT_FRAMES + (LEVEL_ROWS if args.level_input else 0)
    d = np.load(train_npz)
    x, f0 = d["x"][:, :rows], d["f0_hz"]
    h = np.load(held_npz)
    hx, hf0 = h["x"][:, :rows].astype(np.float32), h["f0_hz"]
    yb, yv = targets(f0)
    if "voicing_ignore" in d.files:
        yv[d["voicing_ignore"]] = -1.0
    print(f"train frames {len(x)} ({yv.mean():.2f} voiced), held-out frames {len(hx)}", flush=True)

    model = build_model(
        keras,
        channels=tuple(int(c) for c in args.channels.split(",")),
        voicing_head=args.voicing_head,
        level_input=args.level_input,
    )
    n_params = model.count_params()
    print(f"parameters: {n_params}", flush=True)
    pitch_loss, voicing_loss = make_losses(tf)
    steps = args.epochs * int(np.ceil(len(x) / args.batch_size))
    sched = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=steps, alpha=0.02)
    ema = {"use_ema": True, "ema_momentum": args.ema_momentum} if args.ema_momentum is not None else {}
    model.compile(optimizer=keras.optimizers.Adam(sched, **ema), loss=[pitch_loss, voicing_loss], loss_weights=[1.0, 1.0])
    ds = (
        tf.data.Dataset.from_tensor_slices((x, (yb, yv)))
        .shuffle(len(x), seed=args.seed, reshuffle_each_iteration=True)
        .batch(args.batch_size)
        .map(lambda a, b: (tf.cast(a, tf.float32), b))
        .prefetch(2)
    )
    t0 = time.time()
    hist = model.fit(ds, epochs=args.epochs, verbose=2)  # with EMA, fit ends by loading the averaged weights
    if args.ema_momentum is not None:
        recalibrate_batchnorm(keras, model, x, seed=args.seed)
    train_s = time.time() - t0

    # float (Keras) accuracy on the held-out set
    p, v = model.predict(hx, batch_size=1024, verbose=0)
    hz, _ = decode_pitch(p, v)
    float_scores = frame_scores(hz, hf0)
    print("held-out float:", json.dumps(float_scores), flush=True)

    rng = np.random.default_rng(args.seed)
    rep_x = x[rng.choice(len(x), size=2000, replace=False)].astype(np.float32)
    tfl_float = convert(tf, model, work / "saved_float", None)
    tfl_int8 = convert(tf, model, work / "saved_int8", rep_x)
    float_path = work / "melisma_pitch_float.tflite"
    float_path.write_bytes(tfl_float)
    out = Path(args.out)
    out.write_bytes(tfl_int8)
    tfl_float_scores = eval_tflite_subprocess(float_path, held_npz)
    int8_scores = eval_tflite_subprocess(out, held_npz)
    print("held-out float tflite:", json.dumps(tfl_float_scores))
    print("held-out int8 tflite:", json.dumps(int8_scores))
    report = {
        "args": vars(args),
        "parameters": n_params,
        "train_frames": int(len(x)),
        "heldout_frames": int(len(hx)),
        "train_seconds": round(train_s, 1),
        "loss_history": {k: [round(float(a), 4) for a in vals] for k, vals in hist.history.items()},
        "int8_bytes": len(tfl_int8),
        "float_bytes": len(tfl_float),
        "heldout_keras_float": float_scores,
        "heldout_tflite_float": tfl_float_scores,
        "heldout_tflite_int8": int8_scores,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    out.with_name("training_report.json").write_text(json.dumps(report, indent=1))  # next to the model
    print(f"wrote {out} ({len(tfl_int8)} bytes); trained in {train_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
