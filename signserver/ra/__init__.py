"""The registration authority (RA): a separate process with its own database, settings and audit
trail. It holds the renewal workflow of the documents as a persisted state machine and reaches the
core only through ``signserver.client`` (gRPC over mutual TLS with an RA client certificate)."""
