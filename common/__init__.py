"""What both tiers use, below both: configuration, logging, JSON, the client
side of the gRPC connection to the core (channels, TLS), credentials' files,
tracing, the event loop, and the wire constants the two tiers share. Nothing
here imports core or gateway."""
