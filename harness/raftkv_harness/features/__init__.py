"""The chaos workload's clients of the newer API, beside the register clients of ``workload``: idempotent
writers, money transfers in transactions, watch streams and a lease holder, each recording what the checks of
``raftkv_harness.checks`` judge. ``suite`` runs them together."""
