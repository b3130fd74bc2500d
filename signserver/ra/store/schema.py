"""The RA's tables (SQLAlchemy Core). Instants are whole seconds since 1970 (portable; 64 bits). Kept in
step with the migrations in migrations/versions (a test compares them)."""

from sqlalchemy import (BigInteger, Column, Float, ForeignKey, Index, Integer, LargeBinary, MetaData,
                        PrimaryKeyConstraint, String, Table, Text, text)

metadata = MetaData()

# A renewal no longer under way; at most one renewal of a certificate is not (ux_ra_renewals_open_serial).
FINAL_STATE_VALUES = ("activated", "completed_in_person", "refused")
OPEN_RENEWAL = text("state NOT IN (" + ", ".join(f"'{state}'" for state in FINAL_STATE_VALUES) + ")")

holders = Table(
    "ra_holders", metadata,
    Column("account", String(128), primary_key=True),
    Column("id_type", String(32), nullable=False),
    Column("id_number", String(64), nullable=False),
    Column("name", String(256), nullable=False),
    Column("birth_date", String(10), nullable=False),  # ISO date
    Column("emails", Text, nullable=False),  # JSON list
    Column("updated_at", BigInteger, nullable=False),
)

renewals = Table(
    "ra_renewals", metadata,
    Column("id", String(32), primary_key=True),
    Column("serial", String(64), nullable=False),
    Column("account", String(128), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("state", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("subject_name", String(256), nullable=False),
    Column("emails", Text, nullable=False),  # JSON list
    Column("confirmed_by", String(128), nullable=False),
    Column("notice_sent_at", BigInteger),
    Column("consent_reference", String(64), nullable=False),
    Column("consent_at", BigInteger),
    Column("registry_checked_at", BigInteger),
    Column("face_score", Float),
    Column("agreement_at", BigInteger),
    Column("application_sha256", String(64), nullable=False, server_default=""),
    Column("resume_step", String(32), nullable=False),
    Column("activation_reference", String(64), nullable=False),
    Column("new_serial", String(64), nullable=False),
    Column("new_expires", BigInteger),
    Column("help_code", String(16), nullable=False),
    Column("refusal", Text, nullable=False),
    # The refusal's stable reason (errors.Refusal.reason): what the pages read, never the sentence.
    Column("refusal_reason", String(32), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # The holder's token: only its SHA-256 (hex), so the database never holds a usable one.
    Column("holder_token_hash", String(64), nullable=False, server_default=""),
    Column("holder_token_expires", BigInteger),
    # Counted by an atomic increment only (never written back from a renewal that was read).
    Column("registry_lookups", Integer, nullable=False, server_default="0"),
    Column("face_comparisons", Integer, nullable=False, server_default="0"),
    # Until when a signing of the application through the core is under way (NULL: none): claimed
    # before the core is asked, so that a second one sent meanwhile asks it nothing.
    Column("application_signing_until", BigInteger),
    Index("ix_ra_renewals_serial", "serial"),
    Index("ix_ra_renewals_state", "state"),
    Index("ux_ra_renewals_open_serial", "serial", unique=True, sqlite_where=OPEN_RENEWAL,
          postgresql_where=OPEN_RENEWAL),
)

# The codes e-mailed for a renewal: one to each address to verify it, and the notice sign-in's to
# all of them at once (address holder_sign_in.SIGN_IN_LIMITS, which verifies none). Attempts are
# counted here by an atomic increment only, so that guesses sent at once are all counted.
email_verifications = Table(
    "ra_email_verifications", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("renewal_id", String(32), ForeignKey("ra_renewals.id"), nullable=False),
    Column("address", String(320), nullable=False),
    Column("code_hash", LargeBinary, nullable=False),  # salted SHA-256; the code is only in the e-mail
    Column("salt", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("verified_at", BigInteger),
    Index("ix_ra_email_verifications_renewal", "renewal_id", "address"),
)

# How many codes went to an address of a renewal and how many wrong codes were typed for it, in
# total: past the limits the address is blocked (blocked_at) until an operator reopens it.
code_limits = Table(
    "ra_code_limits", metadata,
    Column("renewal_id", String(32), ForeignKey("ra_renewals.id"), nullable=False),
    Column("address", String(320), nullable=False),
    Column("codes_sent", Integer, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("blocked_at", BigInteger),
    PrimaryKeyConstraint("renewal_id", "address", name="pk_ra_code_limits"),
)

# The application document generated for a renewal's agreement, and the holder's signed copy.
applications = Table(
    "ra_applications", metadata,
    Column("renewal_id", String(32), ForeignKey("ra_renewals.id"), primary_key=True),
    Column("agreed_at", BigInteger, nullable=False),  # the agreement the document records
    Column("document", LargeBinary, nullable=False),
    Column("document_sha256", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("signed_document", LargeBinary),
    Column("signed_sha256", String(64), nullable=False),
    Column("signed_at", BigInteger),
    Column("signed_with", String(32), nullable=False),  # "cloud-signature" or "upload"
    Column("signer", Text, nullable=False),
)

# Append-only and hash-chained: each entry's hash covers the previous one's, so an entry removed
# or changed breaks the chain (verify_trail). Never a secret in it.
audit_trail = Table(
    "ra_audit_trail", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("renewal_id", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("previous_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# Queued in the transaction of the event it tells about; the background sender deletes a message
# once the SMTP server has taken it, so a code's e-mail does not outlive its delivery; and one
# that has outlived its use (a code past its expiry: discard_after) is deleted unsent. A message
# given up (given_up_at) stays for the operators to see, its body (a code, a holder's link) erased,
# for GIVEN_UP_KEPT_SECONDS (repository.py), until an operator marks it dealt with (dismissed_at,
# dismissed_by: it then counts no more on the dashboard, and stays listed by `signserver ra outbox`).
# renewal_id: the renewal the message is about (the operators reach its holder from it); NULL for
# messages queued before it was recorded.
outbox = Table(
    "ra_outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", BigInteger, nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("discard_after", BigInteger),
    # Why the last attempt failed (the SMTP server's reply, or the connection's error): never the
    # message's body, never a secret. Empty until an attempt fails.
    Column("last_error", Text, nullable=False, server_default=""),
    Column("given_up_at", BigInteger),
    Column("renewal_id", String(32)),
    Column("dismissed_at", BigInteger),
    Column("dismissed_by", String(128)),
    # The mailer (signserver/ra/mailer.py): the messages still to go to an address, which a later
    # message to it waits for, without the given-up ones kept for the operators.
    Index("ix_ra_outbox_unsent_recipient", "recipient", "id", sqlite_where=text("given_up_at IS NULL"),
          postgresql_where=text("given_up_at IS NULL")),
)

# The pages' sessions: the cookie carries a random id, the table only its SHA-256 (hex), so the
# database never holds a usable one. Expired rows are removed by the background pass.
web_sessions = Table(
    "ra_web_sessions", metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # "anonymous", "holder" or "operator"
    Column("subject", String(128), nullable=False),
    Column("data", Text, nullable=False),  # JSON object
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
    Column("signed_in_at", BigInteger),
    Index("ix_ra_web_sessions_last_seen", "last_seen"),
)

# The single-use ids already spent: a captcha challenge answered, an operator's form sent (its
# submission id). Inserting the row is what spends an id, so that of submissions racing with one
# id exactly one goes on.
web_spent_single_use_ids = Table(
    "ra_web_spent_single_use_ids", metadata,
    Column("single_use_id", String(64), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_ra_web_spent_single_use_ids_expires_at", "expires_at"),
)

# The operators who sign in to the operators' pages with a password and a one-time password; the
# OTP seed is sealed (AES-GCM) under the RA's secret key.
operator_accounts = Table(
    "ra_operator_accounts", metadata,
    Column("name", String(128), primary_key=True),
    Column("password_hash", String(256), nullable=False),
    Column("otp_seed_sealed", LargeBinary, nullable=False),
    Column("last_otp_step", BigInteger),
    Column("disabled_at", BigInteger),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
)

# The operators' sign-in lockout (signserver/ra/operator_lockout.py), by the keyed hash of the
# name tried, known or not; a row is deleted once forget_at has passed.
operator_lockouts = Table(
    "ra_operator_lockouts", metadata,
    Column("name_hash", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", BigInteger),
    Column("forget_at", BigInteger, nullable=False),
    Index("ix_ra_operator_lockouts_forget_at", "forget_at"),
)

# An enrolment under way: recorded before the core is asked to make the holder's account (its
# reference, the idempotency key, goes to the core in the request's evidence), deleted in the
# transaction that records the holder. A row left here means the core may have made the account
# while the RA did not record it (its database failed, the process stopped): `enrol
# --existing-account` finishes it. Never the holder's secrets (OTP seed, recovery code).
pending_enrolments = Table(
    "ra_pending_enrolments", metadata,
    Column("account", String(128), primary_key=True),
    Column("reference", String(32), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("holder", Text, nullable=False),  # JSON: the registered identity data
    Column("operator", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
