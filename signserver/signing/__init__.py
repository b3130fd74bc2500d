"""Signature authorisation (activation tokens) and hash signing with credentials."""
