"""Train the learned denoiser's band-gain and comb network and export it as a full-integer (int8) TFLite model.

Defaults reproduce the committed ``models/denoise/melisma_denoise_int8.tflite``::

    python models/denoise/make_denoise_data.py --get-extra MIRROR   # once: the voices not in ../shared/data
    nice .venv-train/bin/python models/denoise/train_denoise.py

It makes its mixtures first (``make_denoise_data.py``; cached under ``--build``, git-ignored), then
trains, exports the float and int8 models, and checks the int8 model against the Keras and float
TFLite ones on the validation clips (the weighted √gain error of each, so the cost of quantisation
is measured, not assumed); ``models/denoise/training_report.json`` records it. The same check on
real takes: ``tools/bench_denoise.py --float-model build/denoise/melisma_denoise_float.tflite``.
Everything is seeded (``--seed``) and ``TF_DETERMINISTIC_OPS=1`` is set.

The network (``melisma.render.learned_denoise`` holds the frame, band and feature definitions)
is fully convolutional over time with 'valid' padding: a 3-tap convolution from the 128 features
to ``--width`` channels, three residual blocks of 3-tap convolutions dilated 2, 4, 8 (receptive
field 31 frames = 310 ms, 20 ms of it ahead), a 1x1 layer and a sigmoid layer of 64 outputs per
frame: 32 band gains, then 32 comb depths (``learned_denoise.comb_gains_to_bins``: how far each
band's bins between the frame's harmonics are lowered below its gain; ``--no-comb``: band gains
only, the shape of the models before session 16). The loss is RNNoise's (the squared error of the
square roots of the gains, 0 in digital silence) plus ``--energy-weight`` times the cleaned
frame's error energy, band by band: the voice that the gain and the comb remove and the noise
they keep (exact for the stage's masks, from the per-band sums ``make_denoise_data`` stores), over
the frame's power. Both weigh removing voice ``1 + --over-suppression`` times leaving noise (2x by
default; 0 gives the symmetric loss of an earlier model, which lost 1-2 dB on real vocals at 20 dB
SNR by over-suppressing them).
It is exported with a fixed input of ``(1, OUT_FRAMES + CONTEXT_FRAMES - 1, N_FEATURES)``, int8
in and out, calibrated on training clips.
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
sys.path.insert(0, str(REPO))

from melisma.render import learned_denoise as ld  # noqa: E402

DILATIONS = (2, 4, 8)


def build_model(*, width: int = 64, length: int | None = None, comb: bool = True):
    from tensorflow import keras

    inp = keras.Input((length, ld.N_FEATURES), name="features")
    x = keras.layers.Conv1D(width, 3, padding="valid", activation="relu")(inp)
    for d in DILATIONS:
        y = keras.layers.Conv1D(width, 3, dilation_rate=d, padding="valid", activation="relu")(x)
        x = keras.layers.Add()([keras.layers.Cropping1D((d, d))(x), y])
    x = keras.layers.Conv1D(width, 1, activation="relu")(x)
    if not comb:
        out = keras.layers.Conv1D(ld.N_BANDS, 1, activation="sigmoid", name="band_gains")(x)
    else:  # band gains, then each band's comb depth (learned_denoise.comb_gains_to_bins), in one output
        out = keras.layers.Conv1D(2 * ld.N_BANDS, 1, activation="sigmoid", name="gains_and_depths")(x)
    return keras.Model(inp, out, name="melisma_denoise")


def receptive_field() -> int:
    return 3 + sum(2 * d for d in DILATIONS)


ENERGY_WEIGHT = 2.0
#: Extra weight on the errors that remove voice (the predicted gain below the target): 0 = symmetric.
OVER_SUPPRESSION = 1.0


def make_loss(over_suppression: float = OVER_SUPPRESSION, *, comb: bool = True, energy_weight: float = ENERGY_WEIGHT):
    """The training loss, with errors that remove voice weighted ``1 + over_suppression``."""

    def gain_loss(y_true, y_pred):
        """RNNoise's weighted error of sqrt(gain) plus the cleaned frame's error energy, band by band.

        y_true packs [target gains, weights, the comb's error terms (make_denoise_data's ``r``)] on
        the last axis; y_pred is [band gains, comb depths]. The first term keeps quiet bands (the
        gaps, the top octave) in the fit; the second is what the cleaned frame's error is made of
        (loud bands dominate the SDR): per band, the voice that the gain ``g`` and the comb of depth
        ``c`` remove, ``sum (1 - g m)^2 P_voice`` with ``m = 1 - c u``, and the noise they keep,
        ``sum g^2 m^2 P_noise``, over the frame's power. Both weigh removing voice
        ``1 + over_suppression`` times leaving noise.
        """
        import tensorflow as tf

        n = ld.N_BANDS
        t, w, r = y_true[..., :n], y_true[..., n : 2 * n], y_true[..., 2 * n :]
        g = y_pred[..., :n]
        c = y_pred[..., n : 2 * n] if comb else tf.zeros_like(g)
        err = tf.sqrt(t + 1e-6) - tf.sqrt(g + 1e-6)
        w_sqrt = w * (1.0 + over_suppression * tf.cast(err > 0, tf.float32))
        rnnoise = tf.reduce_sum(w_sqrt * (err**2 + 0.5 * err**4), axis=-1) / n
        s0, s1, s2, n0, n1, n2 = (r[..., k * n : (k + 1) * n] for k in range(6))
        voice_lost = (1.0 - g) ** 2 * s0 + 2.0 * (1.0 - g) * g * c * s1 + (g * c) ** 2 * s2
        noise_kept = g**2 * (n0 - 2.0 * c * n1 + c**2 * n2)
        energy = tf.reduce_sum(w * ((1.0 + over_suppression) * voice_lost + noise_kept), axis=-1)
        return rnnoise + energy_weight * energy

    return gain_loss


def export_tflite(model, representative: np.ndarray, path_int8: Path, build: Path, *, width: int, comb: bool) -> Path:
    """Write the int8 model to ``path_int8`` and the float TFLite model under ``build``; returns the float one's path."""
    import tensorflow as tf

    n_in = ld.OUT_FRAMES + ld.CONTEXT_FRAMES - 1
    fixed = build_model(width=width, length=n_in, comb=comb)
    fixed.set_weights(model.get_weights())
    saved = build / "savedmodel"
    fixed.export(str(saved), format="tf_saved_model", verbose=False,
                 input_signature=[tf.TensorSpec((1, n_in, ld.N_FEATURES), tf.float32, name="features")])
    float_path = build / "melisma_denoise_float.tflite"
    float_path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())

    def rep():
        for x in representative:
            yield [x[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    tmp = path_int8.with_name(path_int8.name + ".part")  # a run stopped here leaves the committed model whole
    tmp.write_bytes(conv.convert())
    tmp.replace(path_int8)
    return float_path


def windows(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random model-input windows (rows) from the clips' feature rows."""
    n_in = ld.OUT_FRAMES + ld.CONTEXT_FRAMES - 1
    clip = rng.integers(0, x.shape[0], n)
    start = rng.integers(0, x.shape[1] - n_in + 1, n)
    return np.stack([x[c, s : s + n_in] for c, s in zip(clip, start, strict=True)]).astype(np.float32)


def tflite_gains(path: Path, rows: np.ndarray) -> np.ndarray:
    """Band gains for a clip's feature rows through a TFLite file, chunked as the stage does."""
    from melisma.models_runtime import TfliteModel

    model = TfliteModel(path)
    n_in = ld.OUT_FRAMES + ld.CONTEXT_FRAMES - 1
    n_out = rows.shape[0] - ld.CONTEXT_FRAMES + 1
    out = np.zeros((n_out, model.output_details[0]["shape"][-1]), np.float32)
    for a in range(0, n_out, ld.OUT_FRAMES):
        w = np.zeros((1, n_in, ld.N_FEATURES), np.float32)
        seg = rows[a : a + n_in]
        w[0, : seg.shape[0]] = seg
        (g,) = model.predict(w)
        k = min(ld.OUT_FRAMES, n_out - a)
        out[a : a + k] = g[0, :k]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=2400, help="training clips of 4 s")
    ap.add_argument("--n-val", type=int, default=96, help="validation clips (another seed)")
    ap.add_argument("--epochs", type=int, default=36)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=80, help="channels per convolution")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--over-suppression", type=float, default=OVER_SUPPRESSION,
                    help="extra loss weight on errors that remove voice (0: the symmetric loss of the first model)")
    ap.add_argument("--workers", type=int, default=2, help="processes making the mixtures")
    ap.add_argument("--out", type=Path, default=HERE / "melisma_denoise_int8.tflite")
    ap.add_argument("--build", type=Path, default=REPO / "build" / "denoise")
    ap.add_argument("--data-only", action="store_true", help="make (or check) the cached clips and stop")
    ap.add_argument("--energy-weight", type=float, default=ENERGY_WEIGHT,
                    help="weight of the cleaned frame's error energy against RNNoise's sqrt-gain term")
    ap.add_argument("--no-comb", action="store_true", help="band gains only (no comb depths): the previous model's shape")
    ap.add_argument("--real-share", type=float, default=None,
                    help="share of clips with a real voice (default: make_denoise_data.REAL_VOICE_SHARE)")
    args = ap.parse_args(argv)
    assert receptive_field() == ld.CONTEXT_FRAMES, "the network's receptive field must match learned_denoise"

    args.build.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)  # before the training, not after it
    t0 = time.time()
    import make_denoise_data

    share = ""
    if args.real_share is not None and args.real_share != make_denoise_data.REAL_VOICE_SHARE:
        make_denoise_data.REAL_VOICE_SHARE = args.real_share  # read by the clip makers (forked after this)
        share = f"_r{args.real_share:g}"
    cache = args.build / f"clips_d{make_denoise_data.DATA_VERSION}_s{args.seed}_n{args.n_train}_v{args.n_val}{share}.npz"
    if cache.is_file():
        data = dict(np.load(cache))
        print(f"clips from {cache}")
    else:
        print(f"making {args.n_train} training + {args.n_val} validation clips ...", flush=True)
        tr = make_denoise_data.make_dataset(args.n_train, seed=args.seed, workers=args.workers, verbose=True)
        va = make_denoise_data.make_dataset(args.n_val, seed=args.seed + 1, workers=args.workers)
        data = {f"{part}_{k}": d[k] for part, d in (("train", tr), ("val", va)) for k in ("x", "y", "w", "r")}
        np.savez(cache, **data)
    t_data = time.time() - t0
    print(f"{data['train_x'].shape[0]} training clips, {data['val_x'].shape[0]} validation clips ({t_data:.0f} s)", flush=True)
    if args.data_only:
        return 0

    import tensorflow as tf
    from tensorflow import keras

    keras.utils.set_random_seed(args.seed)
    comb = not args.no_comb
    model = build_model(width=args.width, comb=comb)
    n_params = model.count_params()
    steps = int(np.ceil(data["train_x"].shape[0] / args.batch))
    sched = keras.optimizers.schedules.CosineDecay(args.lr, args.epochs * steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(sched), loss=make_loss(args.over_suppression, comb=comb, energy_weight=args.energy_weight))
    x = data["train_x"].astype(np.float32)
    yw = np.concatenate([data["train_y"], data["train_w"], data["train_r"]], axis=-1).astype(np.float32)
    vx = data["val_x"].astype(np.float32)
    vyw = np.concatenate([data["val_y"], data["val_w"], data["val_r"]], axis=-1).astype(np.float32)
    log = []
    for epoch in range(args.epochs):
        h = model.fit(x, yw, batch_size=args.batch, epochs=1, verbose=0, shuffle=True, validation_data=(vx, vyw))
        log.append({"epoch": epoch + 1, "loss": float(h.history["loss"][0]), "val_loss": float(h.history["val_loss"][0])})
        print(f"epoch {epoch + 1}/{args.epochs} loss {log[-1]['loss']:.5f} val {log[-1]['val_loss']:.5f} "
              f"({time.time() - t0:.0f} s)", flush=True)
    model.save(args.build / "melisma_denoise.keras")
    rep = windows(data["train_x"], 300, np.random.default_rng(args.seed + 7))
    float_path = export_tflite(model, rep, args.out, args.build, width=args.width, comb=comb)

    # int8 against float on the validation clips: band gains and the gains' effect on the band SNR
    keras_gains = model.predict(vx, verbose=0)
    err: dict[str, list[float]] = {"keras": [], "float_tflite": [], "int8": []}
    loss_of = {"keras": [], "float_tflite": [], "int8": []}
    loss_fn = make_loss(args.over_suppression, comb=comb, energy_weight=args.energy_weight)
    for c in range(vx.shape[0]):
        t, w = data["val_y"][c].astype(np.float32), data["val_w"][c].astype(np.float32)
        for name, g in (("keras", keras_gains[c]), ("float_tflite", tflite_gains(float_path, data["val_x"][c].astype(np.float32))),
                        ("int8", tflite_gains(args.out, data["val_x"][c].astype(np.float32)))):
            gb = g[:, : ld.N_BANDS]
            err[name].append(float(np.sum(w * (np.sqrt(t) - np.sqrt(np.maximum(gb, 0))) ** 2) / max(np.sum(w), 1)))
            loss_of[name].append(float(np.mean(loss_fn(tf.constant(vyw[c]), tf.constant(g.astype(np.float32))))))
    size = args.out.stat().st_size
    info = {"params": int(n_params), "int8_bytes": size, "float_bytes": float_path.stat().st_size,
            "train_s": round(time.time() - t0, 1), "data_s": round(t_data, 1),
            "val_sqrt_gain_mse": {k: round(float(np.mean(v)), 6) for k, v in err.items()},
            "val_loss": {k: round(float(np.mean(v)), 6) for k, v in loss_of.items()},
            "args": {k: str(v) for k, v in vars(args).items()}, "log": log}
    (args.build / "train_log.json").write_text(json.dumps(info, indent=1))
    # beside the model: a trial run written elsewhere (--out) leaves the committed report alone
    (args.out.parent / "training_report.json").write_text(json.dumps({k: v for k, v in info.items() if k != "log"}
                                                          | {"final_epoch": log[-1]}, indent=1) + "\n")
    print(f"wrote {args.out} ({size} bytes, {n_params} parameters) in {time.time() - t0:.0f} s; "
          f"val sqrt-gain MSE {info['val_sqrt_gain_mse']}")
    del tf
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
