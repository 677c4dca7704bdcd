"""The models and data sets of the commands, examples and benchmarks."""
