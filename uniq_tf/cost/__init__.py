"""What a quantized model costs and how to spend a budget: bit widths on the graph, BOPs,
bit allocation, and the plots of accuracy against cost and of each layer's codebook."""
