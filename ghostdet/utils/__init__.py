"""Helpers around the models: analysis, benchmarking, training logs."""
