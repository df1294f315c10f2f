"""Generated protobuf and gRPC code for the Open Inference Protocol v2, protobuf package ``inference`` (make proto)."""
