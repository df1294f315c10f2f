"""The data plane: batcher, batch policy, execution policy, stream admission and schedulers."""
