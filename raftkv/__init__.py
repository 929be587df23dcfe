"""raftkv: a clustered key-value store on Raft."""
