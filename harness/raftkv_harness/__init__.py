"""The chaos harness: drives real ``raftkv serve`` processes from outside, as any client would.

It is test code and ships apart from the product: TCP proxies between the nodes (partitions, delay, loss),
a seeded nemesis (kill, pause, power loss), a concurrent workload and a linearizability checker.
"""
