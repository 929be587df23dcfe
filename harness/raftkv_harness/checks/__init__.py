"""Invariant checks of a chaos run beside linearizability, one module each: exactly-once idempotent writes,
transfers that keep the total, complete and ordered watch streams, and leases that never end early.

Each takes plain records of what the clients saw and returns a list of problems (readable sentences); an empty
list means the invariant held. None of them talks to a node.
"""
