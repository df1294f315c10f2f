"""The Open Inference Protocol v2 (KServe v2 / Triton gRPC, ``inference.GRPCInferenceService``) over the same
registry, routing, validation, batcher and statistics as inferd.v1 (docs/protocol.md, "Open Inference Protocol v2")."""
