"""Train-step time of UNIQ and TFMOT's 8-bit QAT relative to the float model.

ResNet-20 (CIFAR layout) on 32x32x3 synthetic data, one process, every variant compiled with the
same optimizer and traced before timing; then rounds of ``calls_per_round`` steps per variant,
the variants in a fresh random order each round (``bench.common.interleaved_times``), so that
load from other processes falls on all variants alike. Reported: the median step time of each
variant and its ratio to float's median.

Variants (the first four are the comparison; the others say where UNIQ's time goes):
    float             the float model
    uniq              uniq_tf.quantize_model(W4A8), weights NOISY (UNIQ training), the default
    uniq_empirical    the same with distribution="empirical" (exact quantiles: a sort per step)
    tfmot_qat         tfmot.quantization.keras.quantize_model's default 8-bit scheme
    uniq_weights_only UNIQ's noisy kernels, no activation quantizers (ReLUs skipped)
    uniq_act_only     weights FLOAT, activations quantized: the activation quantizers and
                      the wrappers alone
    act_plain         TFMOT's MovingAverageQuantizer on the ReLUs without uniq_tf's mode
                      switch (--profile)
    uniq_quantized    weights QUANTIZED: the hard k-quantile forward of the STE ablation and
                      of frozen stages (--profile)

    .venv/bin/python -m bench.train_speed --quick --output_dir=outputs/bench
    .venv/bin/python -m bench.train_speed --model=resnet18 --input_size=64 --batch_size=32 \
        --rounds=6 --variants=float,uniq,tfmot_qat --output_dir=outputs/bench/resnet18_64
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import tensorflow_model_optimization as tfmot

import uniq_tf
from bench import common, peers
from uniq_tf._keras import keras, tf
from uniq_tf.zoo import models

_Q = tfmot.quantization.keras
VARIANTS = {
    "float": "float",
    "uniq": "UNIQ (noisy weights)",
    "uniq_empirical": "UNIQ, empirical CDF",
    "tfmot_qat": "TFMOT default 8-bit QAT",
    "uniq_weights_only": "UNIQ noisy kernels only (no activation quantizers)",
    "uniq_act_only": "UNIQ activation quantizers only (weights FLOAT)",
    "act_plain": "TFMOT MovingAverageQuantizer on ReLUs, no mode switch",
    "uniq_quantized": "k-quantile, hard (QUANTIZED mode)",
}
DEFAULT_VARIANTS = tuple(VARIANTS)[:6]


@dataclasses.dataclass
class SpeedConfig:
    model: str = "resnet20"
    input_shape: tuple = (32, 32, 3)
    batch_size: int = 128
    weight_bits: int = 4
    activation_bits: int = 8
    rounds: int = 12
    calls_per_round: int = 5
    warmup_calls: int = 3
    variants: tuple = DEFAULT_VARIANTS


@keras.utils.register_keras_serializable(package="uniq_tf_bench")
class NoOpQuantizeConfig(peers.OutputOnlyConfig):
    """Leaves a layer unquantized inside TFMOT's scheme (for layer types it does not know)."""


def tfmot_default_qat(model):
    """TFMOT's default 8-bit QAT of ``model``: ``quantize_model``, except that layer types its
    registry rejects (ResNet-20's zero-channel shortcut uses Rescaling) are annotated with a
    no-op config, which is TFMOT's documented way to pass them through."""

    def annotate(layer):
        if isinstance(layer, keras.layers.Rescaling):
            return _Q.quantize_annotate_layer(layer, NoOpQuantizeConfig())
        return _Q.quantize_annotate_layer(layer)

    with _Q.quantize_scope({"NoOpQuantizeConfig": NoOpQuantizeConfig}):
        annotated = keras.models.clone_model(model, clone_function=annotate)
        return _Q.quantize_apply(annotated)


@keras.utils.register_keras_serializable(package="uniq_tf_bench")
class PlainActivationConfig(NoOpQuantizeConfig):
    """A layer's output -> TFMOT MovingAverageQuantizer, as TFMOT's own schemes attach it."""

    def __init__(self, bits: int):
        self.bits = int(bits)

    def get_output_quantizers(self, layer):
        return [_Q.quantizers.MovingAverageQuantizer(
            num_bits=self.bits, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {"bits": self.bits}


def _relu_names(model) -> list[str]:
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.ReLU)]


def build_variant(name: str, float_model, config: SpeedConfig):
    if name == "float":
        return float_model
    if name == "tfmot_qat":
        return tfmot_default_qat(float_model)
    if name == "act_plain":
        quantizer = PlainActivationConfig(config.activation_bits)

        def wrap(layer):
            if isinstance(layer, keras.layers.ReLU):
                return _Q.QuantizeWrapperV2(layer, quantizer)
            return layer

        with _Q.quantize_scope({"PlainActivationConfig": PlainActivationConfig}):
            return keras.models.clone_model(float_model, clone_function=wrap)
    distribution = "empirical" if name == "uniq_empirical" else "gaussian"
    skip = _relu_names(float_model) if name == "uniq_weights_only" else ()
    model = uniq_tf.quantize_model(
        float_model, config.weight_bits, config.activation_bits, distribution=distribution,
        skip_layers=skip,
    )
    if name == "uniq_quantized":
        uniq_tf.set_weight_mode(model, uniq_tf.Mode.QUANTIZED)
    elif name == "uniq_act_only":
        uniq_tf.set_weight_mode(model, uniq_tf.Mode.FLOAT)
    elif name not in ("uniq", "uniq_empirical", "uniq_weights_only"):
        raise ValueError(f"Unknown variant {name!r}; allowed: {list(VARIANTS)}")
    return model


def _step_fn(model, config: SpeedConfig, seed: int):
    """One traced training step per call (Keras' own train_function on a repeated batch)."""
    rng = np.random.default_rng(seed)
    x = rng.random((config.batch_size, *config.input_shape), dtype=np.float32)
    y = rng.integers(0, 10, config.batch_size).astype(np.int32)
    model.compile(
        keras.optimizers.SGD(0.01, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    train_function = model.make_train_function()
    return lambda: train_function(iterator)


def run(config: SpeedConfig, progress=print) -> dict:
    """Builds and traces every variant, times them interleaved; returns the results."""
    common.set_seed(0)
    float_model = models.get_model(config.model, config.input_shape, 10)
    steps = {}
    for name in config.variants:
        progress(f"train_speed: building and tracing {name}")
        steps[name] = _step_fn(build_variant(name, float_model, config), config, seed=0)
    progress(f"train_speed: {config.rounds} rounds x {config.calls_per_round} steps per variant")
    times = common.interleaved_times(
        steps, config.rounds, config.calls_per_round, config.warmup_calls
    )
    return {
        "config": dataclasses.asdict(config),
        "summary": common.timing_summary(times, "float"),
        "times_s": times,
    }


def table(results: dict) -> str:
    """Markdown: variant, median step (ms), IQR (ms), steps timed, ratio to float."""
    config = results["config"]
    rows = []
    for name, entry in results["summary"].items():
        rows.append([
            VARIANTS[name], f"{1e3 * entry['median_s']:.1f}", f"{1e3 * entry['iqr_s']:.1f}",
            entry["calls"], f"**{entry['ratio']:.2f}x**" if name in ("uniq", "tfmot_qat")
            else f"{entry['ratio']:.2f}x",
        ])
    shape = "x".join(str(d) for d in config["input_shape"])
    return (
        f"{config['model']} at {shape}, batch {config['batch_size']}, synthetic data, "
        f"UNIQ at W{config['weight_bits']}A{config['activation_bits']}; median of "
        f"{config['rounds']} interleaved rounds x {config['calls_per_round']} steps.\n\n"
        + common.markdown_table(
            ["variant", "median step (ms)", "IQR (ms)", "steps", "vs. float"], rows
        )
    )


def quick_config() -> SpeedConfig:
    return SpeedConfig(batch_size=32, rounds=3, calls_per_round=2, warmup_calls=1,
                       variants=("float", "uniq", "tfmot_qat"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick run (CI's test)")
    parser.add_argument("--output_dir", default="outputs/bench")
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--profile", action="store_true", help="every variant (VARIANTS)")
    parser.add_argument("--model", default=None, help="a uniq_tf.models name (default resnet20)")
    parser.add_argument("--input_size", type=int, default=None, help="square input (default 32)")
    parser.add_argument("--variants", default=None, help="comma-separated, among VARIANTS")
    args = parser.parse_args(argv)
    config = quick_config() if args.quick else SpeedConfig()
    if args.batch_size:
        config.batch_size = args.batch_size
    if args.rounds:
        config.rounds = args.rounds
    if args.profile:
        config.variants = tuple(VARIANTS)
    if args.model:
        config.model = args.model
    if args.input_size:
        config.input_shape = (args.input_size, args.input_size, 3)
    if args.variants:
        unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
        if unknown:
            parser.error(f"--variants: unknown {unknown}; allowed: {list(VARIANTS)}")
        config.variants = tuple(args.variants.split(","))
    results = run(config)
    out = Path(args.output_dir)
    common.write_json(str(out / "train_speed.json"), results)
    common.write_text(str(out / "train_speed.md"), table(results))
    print(table(results))


if __name__ == "__main__":
    main()
