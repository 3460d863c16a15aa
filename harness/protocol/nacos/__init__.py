"""The Nacos 2.x gRPC connection layer: ``wire`` (the proto messages and method paths) and
``codec`` (JSON bodies, message type names, error codes)."""
