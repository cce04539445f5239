"""Coda: a gRPC-first runtime for a local-first voice and text assistant."""

__version__ = "0.1.0"
