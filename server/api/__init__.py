"""The gRPC edges: protobuf stops here (servicers, codec, health, interceptors, status views)."""
