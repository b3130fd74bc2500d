"""HTTP adapter: the CA's public endpoints (CRLs, OCSP, CA certificates, the policy statement)."""
