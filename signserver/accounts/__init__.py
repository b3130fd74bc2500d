"""Accounts of signers: identity, password, OTP, lockout, recovery, and the applications that serve them."""
