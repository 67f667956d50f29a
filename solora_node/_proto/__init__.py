"""Generated protobuf and gRPC modules of the solora.v1 wire protocol."""
