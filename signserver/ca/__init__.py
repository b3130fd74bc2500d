"""The certification authority: keys in the HSM, profiles, issue / renew / revoke, CRL and OCSP."""
