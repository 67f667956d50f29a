"""Test doubles and synthetic workloads: an in-memory BlockStore, seeded blocks, loopback peers.

Only tests and `solora-node bench` import this package; the daemon, the simulator and
the wire never do (tests/unit/test_light_imports.py checks it).
"""
