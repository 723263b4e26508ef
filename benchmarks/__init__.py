"""vla-edge benchmarks: latency and success tables, on-robot path against the cloud path and peers.

Commands: `python -m benchmarks --help`.
"""

__version__ = "0.1.0"
