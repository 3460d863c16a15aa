"""connformance harness library: peers, faults, observers and reports. Knows nothing of pytest."""

__version__ = "0.1.0"
