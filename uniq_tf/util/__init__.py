"""Utilities the whole package shares: argument checks, atomic files, the one input convention,
and walks over (nested) Keras models."""
