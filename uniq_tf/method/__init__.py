"""The method: UNIQ's settings, the k-quantile math, the codebook, and the TFMOT quantizers
that apply them to a layer's tensors."""
