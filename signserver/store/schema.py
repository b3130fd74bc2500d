"""The tables, in SQLAlchemy Core. Instants are whole seconds since 1970 (portable and exact).

Changing a table means adding an Alembic migration in ``migrations/versions``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

accounts = Table(
    "accounts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("holder_name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),  # personal | corporate | government
    Column("organisation", String(200), nullable=False, server_default=""),
    Column("department", String(200), nullable=False, server_default=""),
    Column("title", String(200), nullable=False, server_default=""),
    # The holder's given name and surname as the identity documents show them (UTF-8); certificates
    # of natural persons carry them (ETSI EN 319 412-2). Empty for accounts enrolled before.
    Column("given_name", String(200), nullable=False, server_default=""),
    Column("surname", String(200), nullable=False, server_default=""),
    Column("status", String(16), nullable=False),  # active | disabled
    Column("password_hash", String(255), nullable=False),
    Column("password_changed_at", BigInteger, nullable=False),
    Column("otp_seed_sealed", LargeBinary, nullable=False),
    Column("otp_last_step", BigInteger, nullable=True),
    Column("recovery_code_hash", String(255), nullable=False),
    Column("revocation_phrase_hash", String(255), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # The algorithm of the holder's keys: enrolment's choice, kept for renewals.
    Column("key_algorithm", String(16), nullable=False, server_default="rsa-2048"),
    # The holder's seal (signserver/accounts/holder_seal.py): packages are sealed to the public
    # half; the private half is stored only under keys derived from the password and, when the
    # holder chose recovery by code, the recovery code. None for accounts older than packages
    # until their holder's next sign-in.
    Column("seal_public_key", LargeBinary, nullable=True),
    Column("seal_key_by_password", LargeBinary, nullable=True),
    Column("seal_key_by_recovery", LargeBinary, nullable=True),
)

# The lockout state of every name tried, with or without an account (so that an unknown name
# locks exactly like a known one): a row exists while a run of failures or a lock is on. A run is
# forgotten at forget_at (its last failure plus the lock's duration); such rows are deleted. A
# name is kept only as its keyed hash (accounts/name_keys.py): holders type their password into
# the account field, and what they typed is stored nowhere.
name_lockouts = Table(
    "name_lockouts", metadata,
    Column("name_key", String(64), primary_key=True),  # HMAC-SHA256 of the name, hex
    Column("failed_attempts", Integer, nullable=False, server_default="0"),
    Column("locked_until", BigInteger, nullable=True),
    Column("forget_at", BigInteger, nullable=False, index=True),
)

# Authentications being evaluated right now (argon2 and the OTP), so that no more are evaluated
# at once than the failures a name has left before its lock. Rows older than a minute are from a
# process that died and no longer count.
auth_attempts = Table(
    "auth_attempts", metadata,
    Column("id", String(32), primary_key=True),
    Column("name_key", String(64), nullable=False, index=True),  # as name_lockouts.name_key
    Column("started_at", BigInteger, nullable=False),
)

# The locks whose "account locked" e-mail the background work is still to queue
# (accounts/lock_notices.py): the failure that locks a name writes one row of this shape whether
# or not an account has the name, and the background work turns it into the e-mail, or drops it,
# and deletes it. ``account_id`` is the account that had the name when it locked (None: none
# had); no foreign key, whose check would run for an account only.
lock_notices = Table(
    "lock_notices", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name_key", String(64), nullable=False),  # as name_lockouts.name_key
    Column("account_id", Integer, nullable=True),
    Column("locked_until", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# Keys the server keeps in the database sealed by the HSM's sealing key (hsm/sealing.py), made on
# first use and opened by every worker and node that holds that key: "name-lockout" keys the
# hashes of the names the lockout keeps.
sealed_keys = Table(
    "sealed_keys", metadata,
    Column("purpose", String(32), primary_key=True),
    Column("sealed", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

account_emails = Table(
    "account_emails", metadata,
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("address", String(254), nullable=False),
)

credentials = Table(
    "credentials", metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    # "package": key_id names a row of signing_packages; "token": a key on the token (CKA_ID in
    # hex), as every credential was before packages, and as they keep working.
    Column("key_id", String(128), nullable=False, unique=True),
    Column("key_store", String(16), nullable=False, server_default="token"),
    Column("key_algorithm", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # active | disabled
    Column("description", String(200), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
)

applications = Table(
    "applications", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("api_key_hash", String(64), nullable=True, unique=True),  # SHA-256 hex of a 256-bit key
    Column("client_certificate_sha256", String(64), nullable=True, unique=True),
    Column("otp_required", Boolean, nullable=False),
    Column("all_accounts", Boolean, nullable=False),
    Column("status", String(16), nullable=False),  # active | disabled
    Column("created_at", BigInteger, nullable=False),
    # May send the holder's factors together with the document (SignPdf), or only use the
    # two-step flow (PrepareSignature, Authorize, CompleteSignature).
    Column("one_call_signing", Boolean, nullable=False, server_default="1"),
)

application_accounts = Table(
    "application_accounts", metadata,
    Column("application_id", Integer, ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
)

activation_tokens = Table(
    "activation_tokens", metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256 hex of a 256-bit random token
    Column("credential_id", String(64), ForeignKey("credentials.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("application_id", Integer, ForeignKey("applications.id", ondelete="CASCADE"), nullable=False),
    Column("hash_algorithm", String(16), nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("revoked", Boolean, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    # For a package credential: the wrapped private key, sealed under a key derived from the token
    # itself (never stored), so any worker given the token can unwrap it in the HSM.
    Column("sealed_key", LargeBinary, nullable=True),
    # Digests not signed yet: when the last is taken the sealed key is erased, as on revocation
    # and expiry, so that a token that was once seen opens nothing later.
    Column("unspent", Integer, nullable=False, server_default="0"),
)

activation_token_digests = Table(
    "activation_token_digests", metadata,
    Column("token_hash", String(64), ForeignKey("activation_tokens.token_hash", ondelete="CASCADE"),
           primary_key=True),
    Column("digest", String(128), primary_key=True),  # hex
    Column("used", Boolean, nullable=False, server_default="0"),
    # One row per digest authorised: on SQLite the row lives in its key's b-tree (migration 0020).
    sqlite_with_rowid=False,
)

# Signing data packages: a holder key outside the token (signserver/hsm/packages.py). The package
# key is wrapped by a master key (only the HSM opens it; a master rotation re-wraps it); the
# private key, wrapped by the package key, is sealed to the holder (only the holder's secrets open it).
signing_packages = Table(
    "signing_packages", metadata,
    Column("key_id", String(64), primary_key=True),  # credentials.key_id
    Column("algorithm", String(16), nullable=False),
    Column("public_key", LargeBinary, nullable=False),  # SubjectPublicKeyInfo DER
    Column("master_label", String(64), nullable=False, index=True),
    Column("mechanism", String(32), nullable=False),
    Column("wrapped_package_key", LargeBinary, nullable=True),  # None once the package is destroyed
    Column("sealed_private_key", LargeBinary, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

# The master keys that wrap packages: one is active (new packages, re-wraps), older ones are
# retiring until no package needs them, then retired (and destroyed on the token).
master_keys = Table(
    "master_keys", metadata,
    Column("label", String(64), primary_key=True),
    Column("check_value", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # active | retiring | retired
    Column("created_at", BigInteger, nullable=False),
    Column("retired_at", BigInteger, nullable=True),
    # Not retired before then: the end of the grace its rotation was given (migration 0029).
    Column("retire_after", BigInteger, nullable=True),
)

audit_log = Table(
    "audit_log", metadata,
    # On SQLite an INTEGER key is the rowid itself, not a second b-tree (migration 0020).
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False),
    Column("at", BigInteger, nullable=False),
    Column("event", String(64), nullable=False),
    Column("actor", String(200), nullable=False),  # who acted: application, operator, holder
    Column("subject", String(200), nullable=False),  # what it concerns: account, credential
    Column("detail", Text, nullable=False),  # canonical JSON
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# One row: the newest record's seq and hash. Appenders lock it, which orders the chain.
audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# A chain of seals, numbered 1, 2, ...: each signs its number, the sealed record's seq and hash,
# its time and the previous seal's digest. A heartbeat seals an unchanged head again, so one seq
# may be sealed several times. Seals are verified with the key pinned in the state directory.
audit_seals = Table(
    "audit_seals", metadata,
    Column("number", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False, index=True),
    Column("hash", String(64), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("key_id", String(128), nullable=False),  # for people only: never used to verify
    Column("signature", LargeBinary, nullable=False),
    Column("format", Integer, nullable=False, server_default="1"),  # 1: before the chain, 2: chained
    Column("prev_seal", String(64), nullable=False, server_default=""),  # SHA-256 of the previous seal
)

# Segments of the log written to files (``signserver audit export``): records first_seq..last_seq
# and the seals up to ``seal_number``, the seal of last_seq. Only records a segment holds may be
# removed from the database.
audit_exports = Table(
    "audit_exports", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False, index=True),
    Column("last_hash", String(64), nullable=False),
    Column("seal_number", BigInteger, nullable=False),
    Column("seal_digest", String(64), nullable=False),  # SealContent.digest() of that seal
    # The newest server.started / server.stopped record up to last_seq (None: there is none).
    Column("lifecycle_seq", BigInteger, nullable=True),
    Column("lifecycle_event", String(64), nullable=True),
    Column("file_sha256", String(64), nullable=False),
    Column("file_name", String(1000), nullable=False),  # for people only
    Column("exported_at", BigInteger, nullable=False),
)

# One row once records were removed (``signserver audit prune``): the live chain starts after
# record ``seq``, whose hash it follows, and its seals after seal ``seal_number`` (kept), which
# sealed that record. The prune is also an ``audit.pruned`` record of the chain, which verification
# compares with this row.
audit_anchor = Table(
    "audit_anchor", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("seal_number", BigInteger, nullable=False),
    Column("seal_digest", String(64), nullable=False),
    Column("lifecycle_seq", BigInteger, nullable=True),
    Column("lifecycle_event", String(64), nullable=True),
    Column("export_sha256", String(64), nullable=False),
    Column("pruned_at", BigInteger, nullable=False),
)

outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", BigInteger, nullable=False),
    Column("recipient", String(254), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", BigInteger, nullable=False, index=True),
    Column("claimed_until", BigInteger, nullable=True),
    Column("sent_at", BigInteger, nullable=True),
    Column("last_error", String(500), nullable=True),
    # When the sender gave the message up (refused for good, or not sent in time): never tried again.
    Column("given_up_at", BigInteger, nullable=True),
)

authorities = Table(
    "authorities", metadata,
    Column("name", String(32), primary_key=True),  # root | issuing | ocsp-responder
    Column("key_id", String(128), nullable=False),  # the key in the HSM (CKA_ID, hex)
    Column("certificate", LargeBinary, nullable=True),  # None while an external root is awaited
    Column("created_at", BigInteger, nullable=False),
)

# The OCSP responder's and TSA's keys that renewals replaced, kept until the background work
# removes them from the token (signserver/ca/authority.py, remove_superseded_keys): recorded in the
# renewal's own transaction, so that no crash leaves a replaced key on the token that nothing names.
superseded_ca_keys = Table(
    "superseded_ca_keys", metadata,
    Column("key_id", String(128), primary_key=True),  # the key in the HSM (CKA_ID, hex)
    Column("role", String(32), nullable=False),  # ocsp-responder | tsa: the authority it served
    Column("certificate", LargeBinary, nullable=True),  # the certificate it served under, DER
    Column("superseded_at", BigInteger, nullable=False),
)

# The label a CA set-up step (or a service key renewal) is about to generate, written before the
# token is asked: a step interrupted after generating finds its key again instead of leaving it behind.
pending_ca_keys = Table(
    "pending_ca_keys", metadata,
    Column("purpose", String(32), primary_key=True),  # ca-root | ca-issuing | ca-ocsp-responder | ca-tsa
    Column("label", String(64), nullable=False),
    Column("algorithm", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

certificates = Table(
    "certificates", metadata,
    Column("serial", String(64), primary_key=True),  # hex
    Column("profile", String(64), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="SET NULL"), nullable=True, index=True),
    Column("credential_id", String(64), ForeignKey("credentials.id", ondelete="SET NULL"), nullable=True,
           index=True),
    Column("subject", Text, nullable=False),  # RFC 4514; the holder's fields together have no fixed bound
    Column("not_before", BigInteger, nullable=False),
    Column("not_after", BigInteger, nullable=False, index=True),
    Column("status", String(16), nullable=False),  # valid | revoked
    Column("revoked_at", BigInteger, nullable=True),
    Column("revocation_reason", String(32), nullable=True),
    Column("predecessor_serial", String(64), nullable=True),
    Column("expiry_notice_at", BigInteger, nullable=True),
    Column("issued_at", BigInteger, nullable=False),
    Column("der", LargeBinary, nullable=False),
)

# A certificate has at most one successor that is not revoked: two renewals of one certificate
# running at once (two RA processes, a retried request) cannot both issue (signserver/ca/issuance.py).
LIVE_SUCCESSOR = "status = 'valid' AND predecessor_serial IS NOT NULL"
Index("uq_certificates_live_successor", certificates.c.predecessor_serial, unique=True,
      sqlite_where=text(LIVE_SUCCESSOR), postgresql_where=text(LIVE_SUCCESSOR))
# The listings' order (signserver/ca/repository.py certificate_page): a page starts where the
# previous one ended without reading the rows before it.
Index("ix_certificates_issued_at_serial", certificates.c.issued_at, certificates.c.serial)
# The listings of one status in that order: the few revoked among a million are found without
# reading the others.
Index("ix_certificates_status_issued_at_serial", certificates.c.status, certificates.c.issued_at,
      certificates.c.serial)
# The expiry notices' pass (signserver/ca/expiry_notices.py): the valid certificates still due a
# notice, soonest first, without the ones noticed already. The status leads, as an equality the
# query states: SQLite, without statistics, would otherwise prefer the index on status above.
NOT_NOTICED = "expiry_notice_at IS NULL"
Index("ix_certificates_due_expiry_notice", certificates.c.status, certificates.c.not_after, certificates.c.serial,
      sqlite_where=text(NOT_NOTICED), postgresql_where=text(NOT_NOTICED))

# The outbox's sender (signserver/notify/sender.py): the messages still to go to an address, which
# a later message to it waits for, without the sent ones retention keeps.
UNSENT = "sent_at IS NULL AND given_up_at IS NULL"
Index("ix_outbox_unsent_recipient", outbox.c.recipient, outbox.c.id,
      sqlite_where=text(UNSENT), postgresql_where=text(UNSENT))

# The erasure of expired tokens' sealed keys (signserver/signing/activation.py forget_sealed_keys):
# the expired ones that still carry a key, without the day of erased ones retention keeps.
STILL_SEALED = "sealed_key IS NOT NULL"
Index("ix_activation_tokens_sealed_expiry", activation_tokens.c.expires_at,
      sqlite_where=text(STILL_SEALED), postgresql_where=text(STILL_SEALED))

crls = Table(
    "crls", metadata,
    Column("authority", String(32), primary_key=True),
    Column("number", BigInteger, nullable=False),
    Column("this_update", BigInteger, nullable=False),
    Column("next_update", BigInteger, nullable=False),
    Column("der", LargeBinary, nullable=False),
)

csc_access_tokens = Table(
    # Bearer tokens of the CSC API (auth/login, OAuth 2.0 client credentials): only their SHA-256
    # is kept, so that any worker accepts a token another issued and a stolen database shows none.
    "csc_access_tokens", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("application_id", Integer, ForeignKey("applications.id", ondelete="CASCADE"), nullable=False),
    Column("scope", String(32), nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("created_at", BigInteger, nullable=False),
    # RFC 8705: the SHA-256 (hex) of the client certificate the login presented; the token is then
    # accepted only over a connection presenting that certificate. None after an API-key login.
    Column("certificate_sha256", String(64), nullable=True),
)

# The CSC API's asynchronous signatures: written when one starts, answered to polls from any
# worker, erased once expired. A running operation whose worker died fails at its deadline.
csc_operations = Table(
    "csc_operations", metadata,
    Column("id_hash", String(64), primary_key=True),  # SHA-256 of the responseID, hex
    Column("application_id", Integer, ForeignKey("applications.id", ondelete="CASCADE"), nullable=False),
    Column("state", String(16), nullable=False),  # running | done | failed
    Column("started_at", BigInteger, nullable=False),
    Column("deadline", BigInteger, nullable=False),  # still running then: its worker died
    Column("expires_at", BigInteger, nullable=False, index=True),  # erased from then on
    Column("keep_seconds", Integer, nullable=False),  # how long the outcome is kept once known
    Column("status_code", Integer, nullable=True),  # the HTTP status of the outcome
    Column("answer", LargeBinary, nullable=True),  # the outcome's JSON: the result, or the CSC error
)

# Documents prepared in the two-step flow (PrepareSignature), waiting for CompleteSignature on any
# worker of any node: the half-done signature as data (pyHanko's interrupted signing, see
# signserver/pades/prepared_signature.py) and the name of the prepared PDF's file in the spool
# directory. Deleting the row is what takes the document: one completion only.
prepared_documents = Table(
    "prepared_documents", metadata,
    Column("id_hash", String(64), primary_key=True),  # SHA-256 of the document id (a bearer handle), hex
    Column("application_id", Integer, ForeignKey("applications.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("credential_id", String(64), ForeignKey("credentials.id", ondelete="CASCADE"), nullable=False),
    Column("certificate_sha256", LargeBinary, nullable=False),  # the signer's certificate it was prepared with
    Column("level", String(8), nullable=False),  # B-B | B-T | B-LT | B-LTA
    Column("md_algorithm", String(16), nullable=False),
    Column("document_digest", LargeBinary, nullable=False),  # over the /ByteRange: what the holder authorises
    Column("reserved_start", BigInteger, nullable=False),  # the /Contents placeholder in the file
    Column("reserved_end", BigInteger, nullable=False),
    Column("signing_time", BigInteger, nullable=False),
    Column("post_sign", Text, nullable=True),  # B-LT, B-LTA: the DSS data and document time-stamp, JSON
    Column("file_name", String(64), nullable=False, unique=True),  # in the spool directory
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
)

# Named leases (signserver/store/leases.py): work that must run once across the nodes of one
# database runs in the process whose holder id the row names, until expires_at; it renews the
# lease while it works and releases it (holder "") on a clean stop.
leases = Table(
    "leases", metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=False),  # host:pid:random, or "" once released
    Column("acquired_at", BigInteger, nullable=False),  # since when this holder has it without a break
    Column("expires_at", BigInteger, nullable=False),
)

# The nonces of the registration authorities' requests (signserver/ca/ra_requests.py), kept while a
# request that carries one could still be inside the accepted time window: a nonce seen again is
# a replay.
ra_request_nonces = Table(
    "ra_request_nonces", metadata,
    Column("nonce", String(128), primary_key=True),
    Column("operator", String(200), nullable=False),  # the RA operator that sent it
    Column("seen_at", BigInteger, nullable=False, index=True),
)

__all__ = ["metadata", "accounts", "name_lockouts", "auth_attempts", "lock_notices", "sealed_keys", "account_emails", "credentials", "applications", "application_accounts",
           "activation_tokens", "activation_token_digests", "signing_packages", "master_keys", "audit_log", "audit_head", "audit_seals",
           "audit_exports", "audit_anchor",
           "outbox", "authorities", "superseded_ca_keys", "pending_ca_keys", "certificates", "crls",
           "csc_access_tokens", "csc_operations", "prepared_documents", "leases", "ra_request_nonces"]
