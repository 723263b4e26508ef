"""vla-edge firmware bridge: actions over a serial port to the arm controller (pyserial, numpy; never torch).

Commands: `python -m firmware_bridge --help`.
"""

__version__ = "0.1.0"
