"""Train the ornament frame classifier and export it as a full-integer (int8) TFLite model.

Defaults reproduce the committed ``models/ornaments/melisma_ornaments_int8.tflite``::

    nice .venv-train/bin/python models/ornaments/train_ornaments.py

(on 2 CPU cores: about 10 min to make the 12,000 contours, 14 min for the 100 epochs and the
export; the committed model's run took 823 s after the contours). It writes the int8 model to ``--out``
and, under ``--build`` (git-ignored), the contour cache (re-used by a re-run with the same data
options), the float TFLite model, the Keras model and the training log. Everything is seeded
(``--seed``) and ``TF_DETERMINISTIC_OPS=1`` is set, so a re-run should give the same weights up to
float summation order across thread counts (not checked bit for bit).

The network is fully convolutional (48 channels): a 5-tap input convolution, five residual blocks of 5-tap
convolutions dilated 1, 2, 4, 8, 16 (receptive field 129 frames = 0.64 s, about four vibrato
cycles), a 1x1 layer and a per-frame softmax over ``FRAME_CLASSES``. It is trained on random
512-frame crops with class-balanced frame weights, and exported with a fixed input of
``(1, WINDOW_FRAMES, N_FEATURES)``, int8 in and out, calibrated on training crops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import make_contours  # noqa: E402
from melisma.analysis.ornament_model import FRAME_CLASSES, N_FEATURES, WINDOW_FRAMES  # noqa: E402


def build_model(*, width: int = 48, dilations=(1, 2, 4, 8, 16), length: int | None = None):
    import tensorflow as tf
    from tensorflow import keras

    inp = keras.Input((length, N_FEATURES), name="contour")
    x = keras.layers.Conv1D(width, 5, padding="same", activation="relu")(inp)
    for d in dilations:
        y = keras.layers.Conv1D(width, 5, dilation_rate=d, padding="same", activation="relu")(x)
        x = keras.layers.Add()([x, y])
    x = keras.layers.Conv1D(width, 1, activation="relu")(x)
    out = keras.layers.Conv1D(len(FRAME_CLASSES), 1, activation="softmax", name="frame_probs")(x)
    del tf
    return keras.Model(inp, out, name="melisma_ornaments")


def crops(features: np.ndarray, labels: np.ndarray, n: int, length: int, rng: np.random.Generator):
    starts = rng.integers(0, len(labels) - length, n)
    idx = starts[:, None] + np.arange(length)[None, :]
    return features[idx], labels[idx]


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Per-class frame weights ~ 1/sqrt(frequency), normalised to a weighted mean of 1."""
    counts = np.bincount(labels, minlength=len(FRAME_CLASSES)).astype(np.float64)
    freq = counts / counts.sum()
    w = 1.0 / np.sqrt(np.maximum(freq, 1e-4))
    return (w / np.sum(w * freq)).astype(np.float32)


def export_tflite(model, representative: np.ndarray, path_int8: Path, build: Path, *, width: int = 48,
                  dilations=(1, 2, 4, 8, 16)) -> None:
    """Write the int8 model to ``path_int8``, and the SavedModel and float TFLite model under ``build``."""
    import tensorflow as tf

    fixed = build_model(width=width, dilations=dilations, length=WINDOW_FRAMES)
    fixed.set_weights(model.get_weights())

    # a SavedModel with a fixed (1, WINDOW_FRAMES, N_FEATURES) signature freezes cleanly
    saved = build / "savedmodel"
    fixed.export(str(saved), format="tf_saved_model", verbose=False,
                 input_signature=[tf.TensorSpec((1, WINDOW_FRAMES, N_FEATURES), tf.float32, name="contour")])
    (build / "melisma_ornaments_float.tflite").write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())

    def rep():
        for x in representative:
            yield [x[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    path_int8.write_bytes(conv.convert())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=12000, help="training phrases (half tracker-made)")
    ap.add_argument("--n-val", type=int, default=200, help="validation phrases (seed + 1)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--steps", type=int, default=200, help="batches per epoch")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--width", type=int, default=48, help="channels per convolution")
    ap.add_argument("--dilations", type=str, default="1,2,4,8,16", help="dilation of each residual block")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "melisma_ornaments_int8.tflite")
    ap.add_argument("--build", type=Path, default=REPO / "build" / "ornaments")
    args = ap.parse_args(argv)

    import tensorflow as tf
    from tensorflow import keras

    keras.utils.set_random_seed(args.seed)
    args.build.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cache = args.build / f"contours_s{args.seed}_n{args.n_train}_v{args.n_val}.npz"
    if cache.is_file():
        data = dict(np.load(cache))
        print(f"contours from {cache}")
    else:
        print(f"making {args.n_train} training + {args.n_val} validation contours ...", flush=True)
        tr = make_contours.pack(make_contours.make_dataset(args.n_train, seed=args.seed, verbose=True))
        va = make_contours.pack(make_contours.make_dataset(args.n_val, seed=args.seed + 1))
        data = {"train_x": tr["features"], "train_y": tr["labels"], "val_x": va["features"], "val_y": va["labels"]}
        np.savez(cache, **data)
    t_data = time.time() - t0
    print(f"train frames {len(data['train_y'])}, val frames {len(data['val_y'])}; "
          f"class counts {np.bincount(data['train_y'], minlength=len(FRAME_CLASSES)).tolist()} ({t_data:.0f} s)")

    cw = class_weights(data["train_y"])
    rng = np.random.default_rng(args.seed)
    dilations = tuple(int(d) for d in args.dilations.split(","))
    model = build_model(width=args.width, dilations=dilations)
    model.summary(print_fn=lambda s: None)
    n_params = model.count_params()
    sched = keras.optimizers.schedules.CosineDecay(args.lr, args.epochs * args.steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(sched), loss="sparse_categorical_crossentropy",
                  weighted_metrics=["accuracy"])
    val_x, val_y = crops(data["val_x"], data["val_y"], 400, WINDOW_FRAMES, np.random.default_rng(args.seed + 1))
    log = []
    for epoch in range(args.epochs):
        x, y = crops(data["train_x"], data["train_y"], args.steps * args.batch, WINDOW_FRAMES, rng)
        h = model.fit(x, y, sample_weight=cw[y], batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
        pred = np.argmax(model.predict(val_x, batch_size=64, verbose=0), axis=-1)
        f1 = _f1_per_class(val_y.ravel(), pred.ravel())
        log.append({"epoch": epoch + 1, "loss": float(h.history["loss"][0]), "val_f1": f1})
        print(f"epoch {epoch + 1}/{args.epochs} loss {h.history['loss'][0]:.4f} val F1 "
              + " ".join(f"{c}={f1[c]:.3f}" for c in FRAME_CLASSES) + f" ({time.time() - t0:.0f} s)", flush=True)
    model.save(args.build / "melisma_ornaments.keras")
    rep_x, _ = crops(data["train_x"], data["train_y"], 300, WINDOW_FRAMES, np.random.default_rng(args.seed + 7))
    export_tflite(model, rep_x, args.out, args.build, width=args.width, dilations=dilations)
    size = args.out.stat().st_size
    info = {"params": int(n_params), "int8_bytes": size, "train_s": round(time.time() - t0, 1),
            "data_s": round(t_data, 1), "args": {k: str(v) for k, v in vars(args).items()}, "log": log}
    (args.build / "train_log.json").write_text(json.dumps(info, indent=1))
    print(f"wrote {args.out} ({size} bytes, {n_params} parameters) in {time.time() - t0:.0f} s")
    del tf
    return 0


def _f1_per_class(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    out = {}
    for c, name in enumerate(FRAME_CLASSES):
        tp = np.sum((p == c) & (y == c))
        prec = tp / max(np.sum(p == c), 1)
        rec = tp / max(np.sum(y == c), 1)
        out[name] = float(2 * prec * rec / max(prec + rec, 1e-9))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
