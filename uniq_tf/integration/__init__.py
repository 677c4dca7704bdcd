"""UNIQ in Keras and TFMOT: which layers get which quantizer (registry, configs, plan), the
one apply path (annotate, apply, layout, scheme), reading and changing a quantized model
(inspection, names, modes) and saving it."""
