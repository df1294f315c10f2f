"""Generated protobuf and gRPC code for the inferd.v1 package (make proto)."""
