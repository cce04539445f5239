"""Generated protobuf and gRPC code for coda.v1. Never edit: run `make protos`."""
