"""The model-wide UNIQ settings, their defaults and their checks: written once, read by all.

:class:`UniqSettings` is what ``quantize_model``, ``quantize_apply``, ``UniqScheme``, the
weight quantizer's own defaults, ``summary`` and ``allocate_bits`` take or build. Every value
is checked here, so each entry point refuses what the others refuse, with the same message.

The defaults are the measured best of docs/benchmarks.md (section 4): a Gaussian fit per
tensor (the paper's), the "clipped" noise (the paper's noise of one bin's width, clipped so a
noisy weight never passes the outer codebook levels; docs/method.md, "Noise models"), W4A8.
"""

from __future__ import annotations

import dataclasses

from uniq_tf.util import checks

WEIGHT_BITS_RANGE = (1, 16)
ACTIVATION_BITS_RANGE = (2, 16)
GAUSSIAN = "gaussian"
EMPIRICAL = "empirical"
DISTRIBUTIONS = (GAUSSIAN, EMPIRICAL)
PAPER = "paper"
CLIPPED = "clipped"
BIN_MATCHED = "bin_matched"
NOISE_MODELS = (PAPER, CLIPPED, BIN_MATCHED)
HIGH_NOISE_SCALE = 2.0  # the reference code's "high noise": e ~ U[-1/k, 1/k]


def check_weight_bits(value, what: str = "weight_bits") -> int:
    """``value`` if it is a codebook index width b in 1..16 (k = 2^b levels)."""
    return checks.check_int(value, what, *WEIGHT_BITS_RANGE)


def check_activation_bits(value, what: str = "activation_bits") -> int:
    """``value`` if it is an activation width in 2..16."""
    return checks.check_int(value, what, *ACTIVATION_BITS_RANGE)


def check_distribution(value, what: str = "distribution") -> str:
    """``value`` if it names a fitted CDF (:data:`DISTRIBUTIONS`)."""
    return checks.check_choice(value, what, DISTRIBUTIONS)


def check_noise(value, what: str = "noise") -> str:
    """``value`` if it names a noise model (:data:`NOISE_MODELS`)."""
    return checks.check_choice(value, what, NOISE_MODELS)


@dataclasses.dataclass(frozen=True)
class UniqSettings:
    """The settings every quantized layer of a model shares unless a layer sets its own bits.

    Args:
        weight_bits: codebook index width b, 1..16 (k = 2^b levels per codebook).
        activation_bits: activation width, 2..16.
        per_channel: one codebook per output channel instead of one per kernel.
        distribution: the fitted CDF, "gaussian" (the paper) or "empirical" (exact quantiles).
        noise: the training noise model: "clipped" (default), "paper" or "bin_matched"
            (docs/method.md, "Noise models").
        high_noise: noise of +-1/k instead of +-1/(2k) (the reference code's variant).

    Raises:
        ValueError: a value outside the allowed ones (the message names the setting).
    """

    weight_bits: int = 4
    activation_bits: int = 8
    per_channel: bool = False
    distribution: str = GAUSSIAN
    noise: str = CLIPPED
    high_noise: bool = False

    def __post_init__(self):
        checked = {
            "weight_bits": check_weight_bits(self.weight_bits),
            "activation_bits": check_activation_bits(self.activation_bits),
            "per_channel": checks.check_bool(self.per_channel, "per_channel"),
            "distribution": check_distribution(self.distribution),
            "noise": check_noise(self.noise),
            "high_noise": checks.check_bool(self.high_noise, "high_noise"),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def noise_scale(self) -> float:
        """The noise's width in bins: 1 (the paper), or 2 with ``high_noise``."""
        return HIGH_NOISE_SCALE if self.high_noise else 1.0

    def replace(self, **changes) -> UniqSettings:
        """A copy with ``changes`` (checked like the constructor's arguments)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def resolve(cls, settings: UniqSettings | None = None, **overrides) -> UniqSettings:
        """``settings`` (default: the defaults) with every override that is not None.

        The entry points call this with their keyword arguments: a setting left at None
        keeps the value of ``settings``. An unknown name is a TypeError that lists the
        settings.
        """
        if settings is not None and not isinstance(settings, UniqSettings):
            raise TypeError(f"settings must be a uniq_tf.UniqSettings, got "
                            f"{type(settings).__name__}")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown UNIQ settings {unknown}; the settings are {sorted(names)}")
        base = settings if settings is not None else cls()
        given = {name: value for name, value in overrides.items() if value is not None}
        return base.replace(**given) if given else base


DEFAULTS = UniqSettings()

__all__ = [
    "ACTIVATION_BITS_RANGE", "BIN_MATCHED", "CLIPPED", "DEFAULTS", "DISTRIBUTIONS", "EMPIRICAL",
    "GAUSSIAN", "HIGH_NOISE_SCALE", "NOISE_MODELS", "PAPER", "UniqSettings", "WEIGHT_BITS_RANGE",
    "check_activation_bits", "check_distribution", "check_noise", "check_weight_bits",
]
