"""One test per accessor of uniq_tf.internals: the private attributes of TFMOT, tf_keras and
LiteRT the package reads, checked against the pinned TensorFlow so that an upgrade that moves
one fails here, by name."""

import numpy as np
import pytest

import uniq_tf
from uniq_tf import internals
from uniq_tf._keras import keras

L = keras.layers


@pytest.fixture(scope="module")
def shared_model():
    """conv -> relu -> [dense shared by two branches] -> add -> dense."""
    inputs = keras.Input((6, 6, 1), name="x")
    h = L.Conv2D(4, 3, name="conv")(inputs)
    h = L.ReLU(name="relu")(h)
    h = L.Flatten(name="flat")(h)
    shared = L.Dense(8, name="shared")
    a = shared(h)
    b = shared(L.Lambda(lambda t: t * 0.5, name="half")(h))
    out = L.Dense(3, name="fc")(L.Add(name="add")([a, b]))
    return keras.Model(inputs, out), shared


@pytest.fixture(scope="module")
def quantized():
    inputs = keras.Input((6, 6, 1))
    h = L.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, L.Dense(3, name="fc")(L.Flatten()(h)))
    return uniq_tf.quantize_model(model, 4, 8)


def test_wrapper_weight_vars_pairs_each_kernel_with_its_quantizer(quantized):
    wrapper = next(w for w in quantized.layers if w.name.endswith("conv"))
    (weight, quantizer, variables), = internals.wrapper_weight_vars(wrapper)
    assert weight.name == "conv/kernel:0" and weight.shape == (3, 3, 1, 4)  # the float variable
    assert isinstance(quantizer, uniq_tf.KQuantileWeightQuantizer)
    assert "mode" in variables


def test_wrapper_output_quantizer_vars_hold_the_activation_range(quantized):
    conv = next(w for w in quantized.layers if w.name.endswith("conv"))
    fc = next(w for w in quantized.layers if w.name.endswith("fc"))
    (quantizer,) = internals.wrapper_output_quantizers(conv)
    assert isinstance(quantizer, uniq_tf.SwitchableActivationQuantizer)
    assert {"min_var", "max_var"} <= set(internals.wrapper_output_quantizer_vars(conv))
    assert internals.wrapper_output_quantizers(fc) == []  # a linear output: not quantized


def test_is_graph_network_tells_functional_from_subclassed(shared_model):
    class Sub(keras.Model):
        def call(self, x):
            return x

    assert internals.is_graph_network(shared_model[0])
    assert not internals.is_graph_network(Sub())


def test_keras_history_names_the_producing_call(shared_model):
    model, shared = shared_model
    history = internals.keras_history(model.outputs[0])
    assert history.layer.name == "fc" and history.node_index == 0 and history.tensor_index == 0
    add_inputs = model.get_layer("add").input
    assert [internals.keras_history(t).layer for t in add_inputs] == [shared, shared]
    assert [internals.keras_history(t).node_index for t in add_inputs] == [0, 1]


def test_inbound_nodes_has_one_node_per_call(shared_model):
    model, shared = shared_model
    assert len(internals.inbound_nodes(shared)) == 2
    assert len(internals.inbound_nodes(model.get_layer("conv"))) == 1


def test_nodes_by_depth_puts_the_output_layer_at_depth_zero(shared_model):
    model, _ = shared_model
    depths = internals.nodes_by_depth(model)
    assert [n.layer.name for n in depths[0]] == ["fc"]
    assert max(depths) >= 5


def test_is_network_node_excludes_calls_from_another_model(shared_model):
    model, shared = shared_model
    features = keras.Input((64,))
    other = keras.Model(features, shared(features))  # a third call, in another model
    assert internals.is_network_node(model, shared, 0)
    assert internals.is_network_node(model, shared, 1)
    assert not internals.is_network_node(model, shared, 2)
    assert internals.is_network_node(other, shared, 2)


def test_interpreter_ops_lists_the_operators(tmp_path):
    from tflite_export import runtime
    from uniq_tf._keras import tf

    model = keras.Sequential([keras.Input((4,)), L.Dense(2, activation="relu")])
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    ops = internals.interpreter_ops(runtime.load(content, inspect=True))
    assert [op["op_name"] for op in ops] == ["FULLY_CONNECTED"]
    assert {"inputs", "outputs"} <= set(ops[0])


def test_a_moved_attribute_fails_loudly_with_the_reason():
    class NotAWrapper:
        pass

    with pytest.raises(AttributeError, match="has no attribute '_weight_vars'.*internals.py"):
        internals.wrapper_weight_vars(NotAWrapper())


def test_learned_ranges_without_tflite_internals_name_the_calibrated_path(monkeypatch):
    import builtins

    from tflite_export import ConversionError, ranges

    real_import = builtins.__import__

    def without_tflite_tools(name, *args, **kwargs):
        if name.startswith("tensorflow.lite.tools"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_tflite_tools)
    with pytest.raises(ConversionError, match="ranges='calibrated'"):
        ranges.override_ranges(b"", {"conv": (0.0, 1.0, 8)})


def test_quantize_annotate_type_is_what_tfmot_annotates_with():
    import tensorflow_model_optimization as tfmot

    annotated = tfmot.quantization.keras.quantize_annotate_layer(L.Dense(2))
    assert type(annotated) is internals.quantize_annotate_type()


def test_set_calibrate_only_makes_the_converter_return_the_calibrated_float_model():
    from uniq_tf._keras import tf

    model = keras.Sequential([keras.Input((4,)), L.Dense(2, activation="relu")])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([np.ones((1, 4), "float32")] for _ in range(4))
    internals.set_calibrate_only(converter)
    content = converter.convert()
    from tflite_export import runtime

    details = runtime.load(content, inspect=True).get_tensor_details()
    assert all(d["dtype"] == np.float32 for d in details)  # float, not int8: stopped early
    with pytest.raises(AttributeError, match="_experimental_calibrate_only"):
        internals.set_calibrate_only(object())


@pytest.mark.parametrize("make, count", [
    (lambda: keras.optimizers.SGD(0.1, momentum=0.9), 1),
    (lambda: keras.optimizers.Adam(1e-3), 2),
    (lambda: keras.optimizers.legacy.SGD(0.1, momentum=0.9), 1),
    (lambda: keras.mixed_precision.LossScaleOptimizer(keras.optimizers.Adam(1e-3)), 2),
])
def test_build_optimizer_and_optimizer_slots_find_each_variables_slots(make, count):
    from uniq_tf._keras import tf

    optimizer = make()
    kernel, bias = tf.Variable(np.ones((3, 2), "f4")), tf.Variable(np.zeros(2, "f4"))
    internals.build_optimizer(optimizer, [kernel, bias])
    slots = internals.optimizer_slots(optimizer, kernel)
    assert len(slots) == count and all(s.shape == kernel.shape for s in slots)
    assert not {s.ref() for s in slots} & {s.ref() for s in internals.optimizer_slots(
        optimizer, bias)}
    optimizer.apply_gradients([(tf.ones((3, 2)), kernel), (tf.ones(2), bias)])
    assert any(np.any(s.numpy() != 0) for s in slots)  # they are the ones the update moved


def test_node_accessors_read_a_calls_inputs_outputs_and_layer(shared_model):
    model, _ = shared_model
    add = model.get_layer("add")
    (node,) = internals.inbound_nodes(add)
    assert internals.node_layer(node) is add and not internals.node_is_input(node)
    assert [layer.name for layer, _, _ in internals.node_inbound(node)] == ["shared", "shared"]
    assert [index for _, index, _ in internals.node_inbound(node)] == [0, 1]
    assert len(internals.node_inputs(node)) == 2 and len(internals.node_outputs(node)) == 1
    (input_node,) = internals.inbound_nodes(model.layers[0])
    assert internals.node_is_input(input_node)


def test_assign_moving_average_and_merge_call():
    from uniq_tf._keras import tf

    variable = tf.Variable(4.0)
    assert float(internals.assign_moving_average(variable, tf.constant(2.0), 0.75)) == 3.5
    seen = []
    internals.merge_call(lambda strategy, value: seen.append((strategy, value)), 7)
    assert seen[0][1] == 7 and seen[0][0] is tf.distribute.get_strategy()


def test_keras_v3_save_is_seen_during_a_keras_format_save_only(quantized, tmp_path):
    assert internals.keras_v3_save() is None
    keys = []

    class Spy(L.Layer):
        def get_config(self):
            keys.append(internals.keras_v3_save())
            return super().get_config()

    inputs = keras.Input((2,))
    model = keras.Model(inputs, Spy()(inputs))
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    assert keys[0] is not None and keys[-1] is None  # the .keras save, then the .h5 one


def test_the_keras_format_warning_survives_clone_model(quantized, tmp_path):
    from uniq_tf.integration.saving import KERAS_FORMAT_WARNING

    with uniq_tf.quantize_scope():
        clone = keras.models.clone_model(quantized)
    with pytest.warns(UserWarning) as record:
        clone.save(tmp_path / "clone.keras")
    assert [str(w.message) for w in record].count(KERAS_FORMAT_WARNING) == 1


def test_no_source_reads_a_private_attribute_outside_internals():
    """Private attributes of TensorFlow, tf_keras and TFMOT (and ``tf.__internal__``) are read in
    uniq_tf/internals.py alone: outside it, no source reads an ``_attribute`` of anything but
    ``self`` or ``cls``."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for package in ("uniq_tf", "tflite_export", "fpga_export", "examples", "bench"):
        for path in sorted((root / package).rglob("*.py")):
            if path == root / "uniq_tf" / "internals.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Attribute):
                    continue
                dunder = node.attr.startswith("__") and node.attr.endswith("__")
                private = node.attr.startswith("_") and (not dunder or node.attr == "__internal__")
                own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                if private and not own:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}: "
                                     f"{ast.unparse(node)}")
    assert not offenders, offenders
