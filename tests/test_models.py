"""Model builders: torchvision parameter counts, names, shortcuts, applications, the demo CNN."""

import numpy as np
import pytest

import uniq_tf
from uniq_tf import models
from uniq_tf._keras import keras
from uniq_tf.integration.inspection import kernel_wrappers


def trainable_count(model) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


@pytest.mark.parametrize(
    "name, expected",
    [("resnet18", 11_689_512), ("resnet34", 21_797_672)],  # torchvision's counts
)
def test_imagenet_resnets_have_torchvision_parameter_counts(name, expected):
    model = models.get_model(name, (224, 224, 3), 1000)
    assert trainable_count(model) == expected
    assert model.output_shape == (None, 1000)


def test_resnet18_is_named_like_torchvision_with_separate_relus():
    model = models.resnet18((32, 32, 3), 10)
    names = [layer.name for layer in model.layers]
    for expected in ("conv1", "bn1", "relu", "maxpool", "layer1.0.conv1", "layer1.1.bn2",
                     "layer2.0.downsample.0", "layer2.0.downsample.1", "layer4.1.conv2", "fc"):
        assert expected in names
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    # 17 convolutions on the main path + 3 projection shortcuts, none with a bias.
    assert len(convs) == 20 and not any(conv.use_bias for conv in convs)
    # Every ReLU is its own layer after a batch norm (or the residual add), where the
    # activation quantizer goes; no convolution has a fused activation.
    relus = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    assert len(relus) == 17
    assert all(conv.activation.__name__ == "linear" for conv in convs)
    assert names.index("layer3.1.bn2") < names.index("layer3.1.add") < names.index(
        "layer3.1.relu2")


def test_strided_conv_pads_symmetrically_like_torchvision():
    """The 7x7/2 stem pads 3 pixels on every side (Keras "same" would pad bottom/right only):
    a one-hot image at the top-left corner reaches output (0, 0) through kernel tap (3, 3)."""
    model = models.resnet18((32, 32, 3), 10)
    stem = keras.Model(model.input, model.get_layer("conv1").output)
    kernel = np.zeros((7, 7, 3, 64), "float32")
    kernel[3, 3, 0, 0] = 1.0
    stem.get_layer("conv1").set_weights([kernel])
    image = np.zeros((1, 32, 32, 3), "float32")
    image[0, 0, 0, 0] = 1.0
    out = stem(image).numpy()
    assert out.shape == (1, 16, 16, 64)
    assert out[0, 0, 0, 0] == 1.0 and np.count_nonzero(out) == 1


def test_resnet20_matches_he_et_al_and_its_shortcut_is_zero_padding():
    model = models.resnet20((32, 32, 3), 10)
    assert trainable_count(model) == 269_722  # the usual ResNet-20 (option A) count
    kernels = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D,
                                                                      keras.layers.Dense))]
    assert len(kernels) == 20  # 19 convolutions + fc: the "20"
    probe = keras.Model(
        model.input,
        [model.get_layer("layer1.2.relu2").output, model.get_layer("layer2.0.zero_pad").output],
    )
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    block_in, shortcut = (t.numpy() for t in probe(x))
    assert shortcut.shape == (2, 16, 16, 32)
    np.testing.assert_array_equal(shortcut[..., :16], block_in[:, ::2, ::2, :])
    np.testing.assert_array_equal(shortcut[..., 16:], 0.0)


def test_resnet20_runs_on_digits_sized_inputs_and_quantizes():
    model = models.resnet20((8, 8, 1), 10)
    q = uniq_tf.quantize_model(model, 4, 8)
    assert len(kernel_wrappers(q)) == 20
    out = q(np.zeros((3, 8, 8, 1), "float32"), training=False)
    assert out.shape == (3, 10) and np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("name, kernels", [("resnet50", 54), ("mobilenet_v1", 28)])
def test_applications_build_small_with_logits_and_quantize(name, kernels):
    model = models.get_model(name, (32, 32, 3), 7)
    assert model.output_shape == (None, 7)
    out = model(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32"))
    # Logits, not probabilities: the softmax is left to the loss.
    assert not np.allclose(out.numpy().sum(axis=1), 1.0)
    assert len(kernel_wrappers(uniq_tf.quantize_model(model, 4, 8))) == kernels


def test_application_weights_file_is_passed_through(tmp_path):
    source = models.mobilenet_v1((32, 32, 3), 5, alpha=0.25)
    path = str(tmp_path / "weights.h5")
    source.save_weights(path)
    copy = models.mobilenet_v1((32, 32, 3), 5, weights=path, alpha=0.25)
    x = np.random.default_rng(1).uniform(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(copy(x).numpy(), source(x).numpy(), rtol=1e-6, atol=1e-6)


def test_imagenet_weights_with_other_classes_get_a_new_head(tmp_path, monkeypatch):
    """weights="imagenet" with 10 classes: pretrained backbone (include_top=False) + Dense "fc".
    The weights "download" is a local file standing in for Keras' ImageNet file."""
    backbone = keras.applications.MobileNet(
        input_shape=(128, 128, 3), include_top=False, weights=None, alpha=0.25
    )
    path = str(tmp_path / "mobilenet_notop.h5")
    backbone.save_weights(path)
    from tf_keras.src.utils import data_utils

    monkeypatch.setattr(data_utils, "get_file", lambda *args, **kwargs: path)
    model = models.mobilenet_v1((128, 128, 3), 10, weights="imagenet", alpha=0.25)
    assert model.layers[-1].name == "fc" and model.output_shape == (None, 10)
    np.testing.assert_array_equal(
        model.get_layer("conv1").get_weights()[0], backbone.get_layer("conv1").get_weights()[0]
    )


def test_get_model_rejects_unknown_names_and_bad_shapes():
    with pytest.raises(ValueError, match=r"Unknown model 'resnet19'.*resnet18"):
        models.get_model("resnet19", (32, 32, 3), 10)
    with pytest.raises(ValueError, match="input_shape"):
        models.get_model("resnet20", (32, 32), 10)
    with pytest.raises(ValueError, match=">= 32"):
        models.get_model("resnet18", (16, 16, 3), 10)
    with pytest.raises(ValueError, match="num_classes"):
        models.get_model("small_cnn", (8, 8, 1), 1)
