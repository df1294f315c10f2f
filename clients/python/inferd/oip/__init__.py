"""The Open Inference Protocol (KServe v2 / Triton gRPC) as generated code: see inferd.oip.v2."""
