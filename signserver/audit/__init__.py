"""The append-only, hash-chained audit log of security events, sealed in the HSM."""
