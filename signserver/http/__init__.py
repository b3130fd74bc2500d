"""HTTP adapter: the CA's public endpoints (CRLs, OCSP, time-stamps, CA certificates, the policy
statement). ``endpoints`` routes requests to the service; ``server`` is the HTTP/1.1 transport."""
