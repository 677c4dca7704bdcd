"""A packed file for codebook models: b-bit indices, per-layer codebooks, the rest float32.

TFLite has no palettized weights (the converter never stores fewer than 8 bits per weight);
this format is where a 2^b-level codebook's size gain becomes real. A packed file is a zip
archive: the binary entries are stored uncompressed, so their size is what the format costs;
the two JSON entries are deflated:

    manifest.json            format, version, and per entry: name, dtype, shape
    architecture.json        the stripped model's ``to_json()``
    codebooks/<key>.idx      indices, b bits each (``uniq_tf.method.codebook.pack_indices``:
                             ceil(N * b / 8) bytes for N weights)
    codebooks/<key>.levels   the codebook levels, float32, (k,) or (C, k) per channel
    weights/<layer>/<name>   every other weight (biases, batch norm), raw little-endian

Kernels are rebuilt as ``Codebook.dequantize()`` (levels gathered by index), which equals
``uniq_tf.strip_quantization``'s kernel exactly, so the round trip is bit-exact. Every file is
written atomically and read back before it replaces an older one.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from uniq_tf._keras import keras
from uniq_tf.integration.inspection import inspect_quantized, is_quantized_model
from uniq_tf.method.codebook import Codebook, unpack_indices
from uniq_tf.util import atomic, graph

FORMAT = "uniq_tf.packed"
VERSION = 1


@dataclass
class PackedReport:
    """Bytes of a packed file, by part. ``file_bytes`` is the file on disk, everything in it:
    indices, codebooks, per-channel rows, the other weights, the architecture and manifest."""

    path: str
    file_bytes: int
    index_bytes: int
    codebook_bytes: int
    other_bytes: int
    kernel_float32_bytes: int
    kernel_bits: float  # weight-count-weighted mean b over the quantized kernels
    weight_float32_bytes: int = 0  # every weight of the model at 4 bytes

    @property
    def index_ratio(self) -> float:
        """Packed index bytes / float32 kernel bytes: b/32 up to the last byte's padding
        (a property of the format, not a measurement)."""
        return self.index_bytes / self.kernel_float32_bytes

    @property
    def file_ratio(self) -> float:
        """The file's bytes on disk (indices, codebooks, per-channel rows, the float weights,
        architecture and manifest) over b/32 of the model's float32 weight bytes: 1 would be
        every weight at b bits and nothing else; batch norm, biases, codebooks and the header
        push it above."""
        return self.file_bytes / (self.kernel_bits / 32 * self.weight_float32_bytes)


class PackedFileError(ValueError):
    """A packed file could not be written or does not give the model back; nothing was
    written or replaced."""


def _weights_by_layer(model) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for layer in graph.layers(model):
        if layer.name in out:
            raise ValueError(
                f"Layer name {layer.name!r} occurs twice; packed files need unique layer names."
            )
        names = [graph.weight_name(w) for w in layer.weights]
        if len(set(names)) != len(names):
            raise ValueError(f"Layer {layer.name!r} has two weights named alike: {names}")
        out[layer.name] = dict(zip(names, layer.weights, strict=True))
    return out


def _check_round_trip(loaded, stripped, path) -> None:
    """A file that does not give back the stripped weights bit for bit replaces nothing."""
    for weight, want in zip(loaded.weights, stripped.get_weights(), strict=True):
        if weight.numpy().tobytes() != want.tobytes():
            raise PackedFileError(
                f"The packed file for {os.fspath(path)!r} does not give back {weight.name} "
                "exactly; nothing was written."
            )


def _entries(codebooks: dict[str, Codebook], stripped) -> dict[str, bytes]:
    """The archive's entries, by name (layout in the module docstring)."""
    entries: dict[str, bytes] = {}
    manifest = {"format": FORMAT, "version": VERSION, "codebooks": [], "weights": []}
    for key, codebook in codebooks.items():
        levels = codebook.levels.astype("<f4")
        entries[f"codebooks/{key}.idx"] = codebook.packed_indices()
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
        raise PackedFileError(f"Cannot write {os.fspath(path)!r}: {error}") from error


def save_packed(model, path: str | os.PathLike) -> PackedReport:
    """Writes a UNIQ-quantized model as a packed file (see the module docstring), after
    checking that it loads back into the stripped model bit for bit.

    Args:
        model: a quantized model (``uniq_tf.quantize_model``) or a ``uniq_tf.QuantizedModel``.
        path: the file to write (atomically: a failed check leaves no file); its directory
            must exist.

    Returns:
        A :class:`PackedReport`: the file's bytes, split into indices, codebooks and the other
        (float) weights.

    Raises:
        ValueError: ``model`` has no quantized layer.
        PackedFileError: ``path`` cannot be written, or the written file does not load back
            into the stripped model bit for bit (a ValueError too).
    """
    if isinstance(model, keras.Model) and not is_quantized_model(model):
        raise ValueError(
            f"Model {model.name!r} has no UNIQ-quantized layer, so there are no codebooks to "
            "pack; call uniq_tf.quantize_model first."
        )
    quantized = inspect_quantized(model)
    codebooks = quantized.codebooks
    stripped = quantized.stripped
    entries = _entries(codebooks, stripped)
    if not os.path.isdir(os.path.dirname(os.path.abspath(os.fspath(path)))):
        raise PackedFileError(f"Cannot write {os.fspath(path)!r}: its directory does not exist.")
    with atomic.atomic_path(path) as temp:
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
        weight_float32_bytes=4 * sum(int(np.prod(w.shape)) for w in stripped.weights),
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
