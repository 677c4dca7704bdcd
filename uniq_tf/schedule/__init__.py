"""The stage-wise (gradual) schedule: the GradualQuantization callback and the freezing of
quantized kernels it relies on."""
