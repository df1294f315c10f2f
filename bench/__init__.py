"""Benchmarks: a compiled load generator (h2load) against inferd, a gRPC floor and an in-process floor."""
