"""connformance harness library: peers, faults, observers and reports. Knows nothing of pytest."""

import os as _os

# grpcio's fork handlers crash children forked while a gRPC call is in flight in this process
# (SIGSEGV/SIGABRT in ~1 of 8 peer starts with a raw probe's stream open, measured). The harness
# starts peers with fork+exec and never uses gRPC in a forked child, so turn them off before any
# grpc import.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
