"""The federation's logic as plain code, shared by the daemon and the simulator.

No I/O here: no sockets, no files, no clocks or randomness of its own. The ledger
(what a node holds and accepts), the round step (mask agreement, choice of blocks,
aggregation), the one version order, and topology planning.
"""
