"""inferd server: the gRPC service, model registry, slots and batching."""

__version__ = "0.1.0"
