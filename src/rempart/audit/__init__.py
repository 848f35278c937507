"""Tamper-evident audit log: RFC 9162 Merkle tree, proofs and signed checkpoints."""
