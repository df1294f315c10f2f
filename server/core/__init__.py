"""Plain data and errors shared by every layer (no protobuf, no grpc)."""
