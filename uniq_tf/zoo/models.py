"""Model builders for the examples and benchmarks (tf_keras Functional API, un-compiled).

Every builder takes ``input_shape`` (H, W, C) and ``num_classes`` and returns logits (no
softmax), so training uses ``from_logits=True``. Layers have explicit names, so ``layer_bits``,
``skip_layers`` and stage lists can name them:

- ``resnet18``, ``resnet34``: the ImageNet basic-block ResNets of He et al. (2016), laid out and
  named like torchvision (``conv1``, ``bn1``, ``layer2.0.conv1``, ``layer2.0.downsample.0``,
  ``fc``). Convolutions have no bias and strided convolutions pad explicitly as torchvision
  does, so the trainable parameter counts equal torchvision's (11,689,512 and 21,797,672 at
  1000 classes) and torchvision weights map one to one.
- ``resnet20``: the CIFAR ResNet-20 of He et al. (2016, section 4.2): 3 stages of 3 basic
  blocks with 16/32/64 filters and parameter-free shortcuts (option A), about 0.27M parameters.
- ``resnet50``, ``mobilenet_v1``: ``tf_keras.applications`` ResNet50 and MobileNet (Keras'
  layer names), with ``weights=None`` (random init), ``"imagenet"`` or a weights file path.
- ``small_cnn``: a three-conv network for the 8x8 digits demo.

Activations are separate ReLU layers (not fused into convolutions), so activation quantizers
sit after batch norm, where the values are quantized at inference.
"""

from __future__ import annotations

from collections.abc import Callable

from uniq_tf._keras import keras

L = keras.layers
_BN_EPSILON = 1e-5  # torchvision's BatchNorm2d default
_BN_MOMENTUM = 0.9  # = 1 - torchvision's momentum 0.1


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, bn_name: str):
    """Conv (no bias) then BN. Strided convs pad explicitly: torchvision's symmetric padding,
    where Keras' "same" would pad bottom/right only."""
    if stride > 1 and kernel > 1:
        x = L.ZeroPadding2D(kernel // 2, name=f"{name}.pad")(x)
        padding = "valid"
    else:
        padding = "same"
    x = L.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)
    return L.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=bn_name)(x)


def _basic_block(x, filters: int, stride: int, name: str, shortcut: str = "projection"):
    """He et al.'s basic block: conv3x3-BN-ReLU-conv3x3-BN, + shortcut, ReLU.

    shortcut: "projection" (1x1 strided conv + BN where the shape changes, as in torchvision),
    or "zero_pad" (He et al.'s CIFAR option A: subsample and append zero channels).
    """
    in_filters = x.shape[-1]
    out = _conv_bn(x, filters, 3, stride, f"{name}.conv1", f"{name}.bn1")
    out = L.ReLU(name=f"{name}.relu1")(out)
    out = _conv_bn(out, filters, 3, 1, f"{name}.conv2", f"{name}.bn2")
    if stride == 1 and in_filters == filters:
        identity = x
    elif shortcut == "projection":
        identity = _conv_bn(
            x, filters, 1, stride, f"{name}.downsample.0", f"{name}.downsample.1"
        )
    else:
        # Option A from stock layers (no Lambda, so the model saves and loads anywhere):
        # a 1x1 pool with the block's stride subsamples; the appended channels are zeros.
        identity = L.AveragePooling2D(1, strides=stride, name=f"{name}.subsample")(x)
        zeros = L.Rescaling(0.0, name=f"{name}.zeros")(identity)
        identity = L.Concatenate(name=f"{name}.zero_pad")(
            [identity] + [zeros] * (filters // in_filters - 1)
        )
    out = L.Add(name=f"{name}.add")([out, identity])
    return L.ReLU(name=f"{name}.relu2")(out)


def _check_args(input_shape, num_classes: int, min_size: int = 1) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or any(not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"input_shape must be (height, width, channels) integers, got {shape}")
    if min(shape[:2]) < min_size:
        raise ValueError(f"input_shape {shape}: height and width must be >= {min_size}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return shape


def _imagenet_resnet(input_shape, num_classes: int, blocks: list[int], name: str):
    inputs = keras.Input(_check_args(input_shape, num_classes, min_size=32), name="input")
    x = _conv_bn(inputs, 64, 7, 2, "conv1", "bn1")
    x = L.ReLU(name="relu")(x)
    # Zero padding equals torchvision's -inf padding here: the inputs are ReLU outputs >= 0.
    x = L.ZeroPadding2D(1, name="maxpool.pad")(x)
    x = L.MaxPooling2D(3, strides=2, name="maxpool")(x)
    widths = (64, 128, 256, 512)
    for stage, (count, filters) in enumerate(zip(blocks, widths, strict=True), start=1):
        for i in range(count):
            stride = 2 if stage > 1 and i == 0 else 1
            x = _basic_block(x, filters, stride, f"layer{stage}.{i}")
    x = L.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = L.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet18(input_shape=(224, 224, 3), num_classes: int = 1000) -> keras.Model:
    """ResNet-18 (He et al. 2016), torchvision layout: 11,689,512 parameters at 1000 classes."""
    return _imagenet_resnet(input_shape, num_classes, [2, 2, 2, 2], "resnet18")


def resnet34(input_shape=(224, 224, 3), num_classes: int = 1000) -> keras.Model:
    """ResNet-34 (He et al. 2016), torchvision layout: 21,797,672 parameters at 1000 classes."""
    return _imagenet_resnet(input_shape, num_classes, [3, 4, 6, 3], "resnet34")


def resnet20(input_shape=(32, 32, 3), num_classes: int = 10) -> keras.Model:
    """CIFAR ResNet-20 (He et al. 2016, section 4.2): 6n+2 layers with n = 3, option A
    shortcuts, 16/32/64 filters on 32x32, 16x16, 8x8 maps (any input of at least 4x4 works)."""
    inputs = keras.Input(_check_args(input_shape, num_classes, min_size=4), name="input")
    x = _conv_bn(inputs, 16, 3, 1, "conv1", "bn1")
    x = L.ReLU(name="relu")(x)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for i in range(3):
            stride = 2 if stage > 1 and i == 0 else 1
            x = _basic_block(x, filters, stride, f"layer{stage}.{i}", shortcut="zero_pad")
    x = L.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = L.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, outputs, name="resnet20")


def small_cnn(input_shape=(8, 8, 1), num_classes: int = 10) -> keras.Model:
    """The digits demo: conv32-conv64-maxpool-conv64-avgpool-fc, each conv with BN and ReLU."""
    inputs = keras.Input(_check_args(input_shape, num_classes, min_size=2), name="input")
    x = inputs
    for i, filters in enumerate((32, 64, 64), start=1):
        x = _conv_bn(x, filters, 3, 1, f"conv{i}", f"bn{i}")
        x = L.ReLU(name=f"relu{i}")(x)
        if i == 2:
            x = L.MaxPooling2D(2, name="maxpool")(x)
    x = L.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = L.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def _application(
    factory: Callable, name: str, input_shape, num_classes: int, weights: str | None, **kwargs
) -> keras.Model:
    """A keras.applications model with logits. ImageNet weights with another class count keep
    the pretrained backbone and put a new Dense head ("fc") on its average-pooled features."""
    shape = _check_args(input_shape, num_classes, min_size=32)
    if weights == "imagenet" and num_classes != 1000:
        base = factory(
            input_shape=shape, include_top=False, weights=weights, pooling="avg", **kwargs
        )
        outputs = L.Dense(num_classes, name="fc")(base.output)
        return keras.Model(base.input, outputs, name=name)
    model = factory(
        input_shape=shape, include_top=True, weights=weights, classes=num_classes,
        classifier_activation=None, **kwargs,
    )
    return keras.Model(model.input, model.output, name=name)


def resnet50(
    input_shape=(224, 224, 3), num_classes: int = 1000, weights: str | None = None
) -> keras.Model:
    """keras.applications.ResNet50 (expects "caffe" preprocessing with ImageNet weights)."""
    return _application(
        keras.applications.ResNet50, "resnet50", input_shape, num_classes, weights
    )


def mobilenet_v1(
    input_shape=(224, 224, 3), num_classes: int = 1000, weights: str | None = None,
    alpha: float = 1.0,
) -> keras.Model:
    """keras.applications.MobileNet v1 (expects inputs in [-1, 1] with ImageNet weights, whose
    files exist for 128/160/192/224 inputs only)."""
    return _application(
        keras.applications.MobileNet, "mobilenet_v1", input_shape, num_classes, weights,
        alpha=alpha,
    )


MODELS: dict[str, Callable[..., keras.Model]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet20": resnet20,
    "resnet50": resnet50,
    "mobilenet_v1": mobilenet_v1,
    "small_cnn": small_cnn,
}

# The input normalization each model's pretrained weights expect (see uniq_tf.data).
PREPROCESSING = {"resnet50": "caffe", "mobilenet_v1": "tf"}


def get_model(name: str, input_shape, num_classes: int, **kwargs) -> keras.Model:
    """Builds the registered model ``name`` (see MODELS); kwargs go to its builder."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; allowed: {sorted(MODELS)}")
    return MODELS[name](input_shape=input_shape, num_classes=num_classes, **kwargs)
