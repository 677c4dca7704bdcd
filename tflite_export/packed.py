"""A packed file for codebook models: b-bit indices, per-layer codebooks, the rest float32.

TFLite has no palettized weights (the converter never stores fewer than 8 bits per weight);
this format is where a 2^b-level codebook's size gain becomes real. A packed file is a zip
archive: the binary entries are stored uncompressed, so their size is what the format costs;
the two JSON entries are deflated:

    manifest.json            format, version, and per entry: name, dtype, shape
    architecture.json        the stripped model's ``to_json()``
    codebooks/<key>.idx      indices, b bits each, little-endian bit order:
                             index i occupies bits [i*b, (i+1)*b) of the byte string,
                             ceil(N * b / 8) bytes for N weights
    codebooks/<key>.levels   the codebook levels, float32, (k,) or (C, k) per channel
    weights/<layer>/<name>   every other weight (biases, batch norm), raw little-endian

Kernels are rebuilt as ``Codebook.dequantize()`` (levels gathered by index), which equals
``uniq_tf.strip_quantization``'s kernel exactly, so the round trip is bit-exact.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from tflite_export._atomic import atomic_output
from tflite_export.errors import ExportPathError, VerificationError
from uniq_tf import get_codebooks, is_quantized_model, strip_quantization
from uniq_tf._keras import keras, require_keras2_model
from uniq_tf.quantize import Codebook, flatten_layers

FORMAT = "uniq_tf.packed"
VERSION = 1


def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """Packs non-negative integers < 2^bits into ceil(N * bits / 8) bytes (bit order above)."""
    flat = np.asarray(indices, dtype=np.int64).ravel()
    if flat.size and (flat.min() < 0 or flat.max() >= 2**bits):
        raise ValueError(f"indices must be in 0..{2**bits - 1} for {bits} bits")
    bit_matrix = (flat[:, None] >> np.arange(bits)) & 1
    return np.packbits(bit_matrix.astype(np.uint8).ravel(), bitorder="little").tobytes()


def unpack_indices(data: bytes, bits: int, count: int) -> np.ndarray:
    """The inverse of :func:`pack_indices`: ``count`` int32 indices."""
    bit_values = np.unpackbits(
        np.frombuffer(data, dtype=np.uint8), count=count * bits, bitorder="little"
    )
    weights = (1 << np.arange(bits)).astype(np.int64)
    return (bit_values.reshape(count, bits).astype(np.int64) @ weights).astype(np.int32)


@dataclass
class PackedReport:
    """Bytes of a packed file, by part. The index bytes are what b-bit storage costs."""

    path: str
    file_bytes: int
    index_bytes: int
    codebook_bytes: int
    other_bytes: int
    kernel_float32_bytes: int
    kernel_bits: float  # weight-count-weighted mean b over the quantized kernels

    @property
    def index_ratio(self) -> float:
        """Packed index bytes / float32 kernel bytes; the limit is b / 32."""
        return self.index_bytes / self.kernel_float32_bytes


def _weight_name(weight) -> str:
    return weight.name.split("/")[-1].split(":")[0]


def _weights_by_layer(model) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for layer in flatten_layers(model):
        if layer.name in out:
            raise ValueError(
                f"Layer name {layer.name!r} occurs twice; packed files need unique layer names."
            )
        names = [_weight_name(w) for w in layer.weights]
        if len(set(names)) != len(names):
            raise ValueError(f"Layer {layer.name!r} has two weights named alike: {names}")
        out[layer.name] = dict(zip(names, layer.weights, strict=True))
    return out


def _check_round_trip(loaded, stripped, path) -> None:
    """A file that does not give back the stripped weights bit for bit replaces nothing."""
    for weight, want in zip(loaded.weights, stripped.get_weights(), strict=True):
        if weight.numpy().tobytes() != want.tobytes():
            raise VerificationError(
                f"The packed file for {os.fspath(path)!r} does not give back {weight.name} "
                "exactly; nothing was written."
            )


def _entries(codebooks: dict[str, Codebook], stripped) -> dict[str, bytes]:
    """The archive's entries, by name (layout in the module docstring)."""
    entries: dict[str, bytes] = {}
    manifest = {"format": FORMAT, "version": VERSION, "codebooks": [], "weights": []}
    for key, codebook in codebooks.items():
        levels = codebook.levels.astype("<f4")
        entries[f"codebooks/{key}.idx"] = pack_indices(codebook.indices, codebook.bits)
        entries[f"codebooks/{key}.levels"] = levels.tobytes()
        manifest["codebooks"].append({
            "key": key, "layer": codebook.layer, "weight": codebook.weight,
            "bits": codebook.bits, "shape": list(codebook.indices.shape),
            "levels_shape": list(levels.shape), "channel_axes": codebook.channel_axes,
            "distribution": codebook.distribution,
        })
    packed = {(c.layer, c.weight) for c in codebooks.values()}
    for layer, weights in _weights_by_layer(stripped).items():
        for name, weight in weights.items():
            if (layer, name) in packed:
                continue
            value = weight.numpy()
            dtype = value.dtype.newbyteorder("<")
            entries[f"weights/{layer}/{name}"] = value.astype(dtype).tobytes()
            manifest["weights"].append(
                {"layer": layer, "weight": name, "dtype": dtype.str, "shape": list(value.shape)}
            )
    entries["architecture.json"] = stripped.to_json().encode()
    entries["manifest.json"] = json.dumps(manifest, indent=1).encode()
    return entries


def _write_archive(temp, entries: dict[str, bytes], path) -> None:
    try:
        with zipfile.ZipFile(temp, "x") as archive:
            for name, data in entries.items():
                method = zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED
                archive.writestr(name, data, method)
    except OSError as error:
        raise ExportPathError(f"Cannot write {os.fspath(path)!r}: {error}") from error


def save_packed(model, path: str | os.PathLike) -> PackedReport:
    """Writes a UNIQ-quantized model as a packed file (see the module docstring), after
    checking that it loads back into the stripped model bit for bit.

    Args:
        model: a quantized model (``uniq_tf.quantize_model``).
        path: the file to write (atomically: a failed check leaves no file).

    Returns:
        A :class:`PackedReport`: the file's bytes, split into indices, codebooks and the other
        (float) weights.

    Raises:
        ValueError: ``model`` has no quantized layer, or the written file does not load back
            into the stripped model bit for bit.
    """
    model = require_keras2_model(model)
    if not is_quantized_model(model):
        raise ValueError(
            f"Model {model.name!r} has no UNIQ-quantized layer, so there are no codebooks to "
            "pack; call uniq_tf.quantize_model first."
        )
    codebooks = get_codebooks(model)
    stripped = strip_quantization(model)
    entries = _entries(codebooks, stripped)
    with atomic_output(path) as temp:
        _write_archive(temp, entries, path)
        file_bytes = os.path.getsize(temp)
        _check_round_trip(load_packed(temp), stripped, path)
    counts = {k: c.indices.size for k, c in codebooks.items()}
    return PackedReport(
        path=os.fspath(path),
        file_bytes=file_bytes,
        index_bytes=sum(len(entries[f"codebooks/{k}.idx"]) for k in codebooks),
        codebook_bytes=sum(len(entries[f"codebooks/{k}.levels"]) for k in codebooks),
        other_bytes=sum(len(v) for k, v in entries.items() if k.startswith("weights/")),
        kernel_float32_bytes=4 * sum(counts.values()),
        kernel_bits=sum(codebooks[k].bits * n for k, n in counts.items()) / sum(counts.values()),
    )


def _read_values(archive: zipfile.ZipFile, manifest: dict) -> dict[tuple[str, str], np.ndarray]:
    """(layer, weight name) -> value, kernels rebuilt from their indices and codebooks."""
    values = {}
    for entry in manifest["codebooks"]:
        shape = tuple(entry["shape"])
        indices = unpack_indices(
            archive.read(f"codebooks/{entry['key']}.idx"), entry["bits"], int(np.prod(shape))
        ).reshape(shape)
        levels = np.frombuffer(
            archive.read(f"codebooks/{entry['key']}.levels"), dtype="<f4"
        ).reshape(entry["levels_shape"]).astype(np.float32)
        axes = tuple(entry["channel_axes"]) if entry["channel_axes"] else None
        codebook = Codebook(
            entry["layer"], entry["weight"], entry["bits"], levels, indices, axes,
            entry["distribution"],
        )
        values[(entry["layer"], entry["weight"])] = codebook.dequantize()
    for entry in manifest["weights"]:
        data = archive.read(f"weights/{entry['layer']}/{entry['weight']}")
        values[(entry["layer"], entry["weight"])] = np.frombuffer(
            data, dtype=entry["dtype"]
        ).reshape(entry["shape"])
    return values


def load_packed(path: str | os.PathLike, custom_objects: dict | None = None):
    """The stripped tf_keras model stored in a packed file (kernels = codebook values).

    Args:
        path: a file written by :func:`save_packed`.
        custom_objects: custom layer classes of the model, by name.

    Returns:
        A plain tf_keras model equal, bit for bit, to ``uniq_tf.strip_quantization`` of the
        model that was saved.

    Raises:
        ValueError: ``path`` is not a packed file of this version, or lacks some weights.
    """
    not_packed = f"{os.fspath(path)!r} is not a {FORMAT} file of version {VERSION}"
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{not_packed} (not a zip archive).") from error
    with archive:
        manifest = json.loads(archive.read("manifest.json"))
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise ValueError(
                f"{not_packed} (found {manifest.get('format')!r} version "
                f"{manifest.get('version')!r})."
            )
        model = keras.models.model_from_json(
            archive.read("architecture.json").decode(), custom_objects=custom_objects
        )
        values = _read_values(archive, manifest)
    for layer, weights in _weights_by_layer(model).items():
        missing = [name for name in weights if (layer, name) not in values]
        if missing:
            raise ValueError(f"{os.fspath(path)!r} lacks weights {missing} of layer {layer!r}.")
        for name, weight in weights.items():
            weight.assign(values[(layer, name)])
    return model
