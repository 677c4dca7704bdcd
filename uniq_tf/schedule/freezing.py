"""Freezing quantized kernels during ``fit`` without retracing: what GradualQuantization does to
the optimizer.

TFMOT's QuantizeWrapperV2 ignores its ``trainable`` flag (its ``trainable_weights`` always lists
the wrapped kernel and bias, and setting it duplicates weights in ``weights``), so freezing by
``trainable`` leaves the kernel to the optimizer. Instead, :class:`FrozenKernels` wraps
``optimizer.apply_gradients`` while a fit runs:

- every quantized kernel has a scalar bool "frozen" ``tf.Variable`` of its own;
- before the optimizer's update the wrapper reads each such kernel and its optimizer slots
  (momentum, Adam's m and v, ...); after it, it assigns those values back (``tf.cond`` on the
  flag) where the kernel is frozen.

So a frozen kernel and its slots end each step bit-identical to how they began it: no gradient
step, no momentum step, no weight decay and no step from its kernel regularizer. The flags are
variables read inside the traced step, so the train function is traced once per ``fit`` and
freezing more kernels only assigns them. The optimizer is still built with every trainable
variable, in the model's order, so its checkpointed slots match across resumed runs. The
restore goes through ``merge_call`` and ``strategy.extended.update``, as the optimizer's own
update does, so it runs on every replica's copy under tf.distribute. :meth:`remove` gives the
optimizer its own ``apply_gradients`` back.
"""

from __future__ import annotations

from uniq_tf import internals
from uniq_tf._keras import tf

_PATCH_MARK = "_uniq_frozen_filter"


class FrozenKernels:
    """Flags that freeze kernels, and the optimizer wrapper that honours them."""

    def __init__(self):
        # kernel ref -> its scalar bool "frozen" variable, read inside the traced step.
        self.flags: dict = {}

    def add(self, kernels: list[tuple[str, tf.Variable]], strategy) -> None:
        """A flag (False: trained) per (name, kernel variable), created in ``strategy``'s scope
        so that every replica reads its own copy; kernels seen before keep theirs."""
        with strategy.scope():
            for name, kernel in kernels:
                if kernel.ref() not in self.flags:
                    self.flags[kernel.ref()] = tf.Variable(
                        False, trainable=False, dtype=tf.bool, name=f"uniq_frozen_{name}")

    def freeze(self, refs: set) -> None:
        """Sets every flag: frozen for the kernels whose ``ref()`` is in ``refs`` (no retrace:
        the step reads the flags)."""
        for ref, flag in self.flags.items():
            frozen = ref in refs
            if bool(flag.numpy()) != frozen:
                flag.assign(frozen)

    def install(self, optimizer) -> None:
        """Wraps ``optimizer.apply_gradients`` (module docstring); a wrapper installed before
        is replaced."""
        if optimizer is None:
            raise ValueError("GradualQuantization needs a compiled model (model.optimizer).")
        remove(optimizer)
        original = optimizer.apply_gradients
        flags = self.flags

        def apply_gradients(grads_and_vars, *args, **kwargs):
            pairs = list(grads_and_vars)
            # Build with every variable in the caller's order (slot variables are checkpointed
            # by position), before the slots are looked up below. Legacy optimizers create
            # their slots in _create_all_weights.
            if pairs:
                with tf.init_scope():
                    internals.build_optimizer(optimizer, [v for _, v in pairs])
            # Each freezable kernel and its slots, with the kernel's flag, read before the
            # update (automatic control dependencies keep the order of reads and writes).
            watched = [
                (tracked, flags[v.ref()])
                for _, v in pairs if v.ref() in flags
                for tracked in (v, *internals.optimizer_slots(optimizer, v))
            ]
            before = [tf.identity(variable) for variable, _ in watched]
            frozen = [tf.identity(flag) for _, flag in watched]
            result = original(pairs, *args, **kwargs)
            if watched:
                _restore([v for v, _ in watched], before, frozen)
            return result

        setattr(apply_gradients, _PATCH_MARK, True)
        optimizer.apply_gradients = apply_gradients


def remove(optimizer) -> None:
    """Restores the optimizer's own apply_gradients if :class:`FrozenKernels` wrapped it."""
    if optimizer is not None and hasattr(optimizer.apply_gradients, _PATCH_MARK):
        del optimizer.apply_gradients


def is_installed(optimizer) -> bool:
    """True while ``optimizer.apply_gradients`` is the freezing wrapper."""
    return optimizer is not None and hasattr(optimizer.apply_gradients, _PATCH_MARK)


def _restore(variables, before, frozen) -> None:
    """Assigns ``before`` back to each variable whose flag in ``frozen`` is set, on every
    replica (called in replica context, as apply_gradients is)."""

    def restore(variable, value, is_frozen):
        def assign():
            variable.assign(value, read_value=False)

        return tf.cond(is_frozen, assign, lambda: None)

    def merge(strategy, before, frozen):
        for variable, value, is_frozen in zip(variables, before, frozen, strict=True):
            strategy.extended.update(variable, restore, args=(value, is_frozen), group=False)

    internals.merge_call(merge, before, frozen)


__all__ = ["FrozenKernels", "is_installed", "remove"]
