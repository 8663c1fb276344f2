"""Language workers: configs, the managed registry, processes, gRPC channels, supervision, function metadata."""
