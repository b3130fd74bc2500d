"""spend_activation_token() takes digests only while the token's account is active, and never none.

The function of migration 0019 (see its description: a SignHash's writes on PostgreSQL in one call)
took a token's digests while the token held (unrevoked, unexpired, for this credential,
application and digest algorithm), whatever its account's status; and it took an empty list of
digests as a success, 0 taken of 0 asked. A disable revokes the account's tokens, but only those
that exist when it commits: a token issued as it committed signed for a disabled account. Now:

1. the digests are taken only while the token's account is active too (as on SQLite, where
   ``signserver.signing.activation.consume`` runs the same condition): a token never outlives a
   disable, whenever it was issued;
2. a call that takes no digest fails with SQLSTATE SSA01, as one that takes fewer than asked: an
   empty list spends nothing (the Python caller refuses one before the call).

Everything else is as 0019 made it. Going down restores 0019's function.

Revision ID: 0026
Revises: 0025
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

SPEND_ACTIVATION_TOKEN = """
CREATE OR REPLACE FUNCTION spend_activation_token(
    p_token_hash text, p_credential_id text, p_key_id text, p_certificate_serial text,
    p_application_id integer, p_hash_algorithm text, p_now bigint, p_digests text[], p_open_key boolean,
    p_count_down boolean,
    p_at bigint, p_event text, p_actor text, p_subject text, p_details text[], p_tails text[])
RETURNS TABLE (last_seq bigint, sealed_key bytea, expires_at bigint, unspent integer, algorithm text,
               wrapped_package_key bytea, master_label text, mechanism text)
LANGUAGE plpgsql
-- Its statements are the same every call but for their values, all lookups by key: planned once.
-- Left to choose, PostgreSQL planned them anew at every call.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    taken integer;
    head_seq bigint;
    head_hash text;
    new_hash text;
BEGIN
    PERFORM 1 FROM credentials AS c
     WHERE c.id = p_credential_id AND c.status = 'active' AND c.key_id = p_key_id
       AND (SELECT i.serial FROM certificates AS i WHERE i.credential_id = c.id
             ORDER BY i.issued_at DESC, i.serial DESC LIMIT 1) IS NOT DISTINCT FROM p_certificate_serial
       AND (p_certificate_serial IS NULL
            OR EXISTS (SELECT 1 FROM certificates AS ce WHERE ce.serial = p_certificate_serial
                        AND ce.status = 'valid' AND ce.not_after > p_now));
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the credential is not as the caller read it' USING ERRCODE = 'SSA03';
    END IF;

    UPDATE activation_token_digests AS d SET used = true
     WHERE d.token_hash = p_token_hash AND d.digest = ANY (p_digests) AND d.used IS false
       AND EXISTS (SELECT 1 FROM activation_tokens AS t JOIN accounts AS a ON a.id = t.account_id
                    WHERE t.token_hash = p_token_hash AND t.revoked IS false AND t.expires_at > p_now
                      AND t.credential_id = p_credential_id AND t.application_id = p_application_id
                      AND t.hash_algorithm = p_hash_algorithm AND a.status = 'active');
    GET DIAGNOSTICS taken = ROW_COUNT;
    -- None taken is a refusal too: an empty (or null) list of digests spends nothing.
    IF taken = 0 OR taken <> cardinality(p_digests) THEN
        RAISE EXCEPTION 'the activation token does not authorise these digests' USING ERRCODE = 'SSA01';
    END IF;

    IF p_open_key THEN
        SELECT t.sealed_key, t.expires_at, t.unspent, p.algorithm, p.wrapped_package_key, p.master_label,
               p.mechanism
          INTO sealed_key, expires_at, unspent, algorithm, wrapped_package_key, master_label, mechanism
          FROM activation_tokens AS t JOIN signing_packages AS p ON p.key_id = p_key_id
         WHERE t.token_hash = p_token_hash AND t.credential_id = p_credential_id;
        IF sealed_key IS NULL OR wrapped_package_key IS NULL THEN
            RAISE EXCEPTION 'the activation token carries no signing data package' USING ERRCODE = 'SSA02';
        END IF;
    END IF;

    IF p_count_down THEN
        UPDATE activation_tokens AS t
           SET unspent = t.unspent - taken,
               sealed_key = CASE WHEN t.unspent <= taken THEN NULL ELSE t.sealed_key END
         WHERE t.token_hash = p_token_hash;
    END IF;

    SELECT h.seq, h.hash INTO head_seq, head_hash FROM audit_head AS h WHERE h.id = 1 FOR UPDATE;
    FOR i IN 1 .. cardinality(p_details) LOOP
        head_seq := head_seq + 1;
        new_hash := encode(sha256(convert_to('["' || head_hash || '",' || head_seq || ',' || p_tails[i], 'UTF8')),
                           'hex');
        INSERT INTO audit_log (seq, at, event, actor, subject, detail, prev_hash, hash)
        VALUES (head_seq, p_at, p_event, p_actor, p_subject, p_details[i], head_hash, new_hash);
        head_hash := new_hash;
    END LOOP;
    UPDATE audit_head AS h SET seq = head_seq, hash = head_hash WHERE h.id = 1;
    last_seq := head_seq;
    RETURN NEXT;
END
$$
"""


def _function_of_0019() -> str:
    """0019's definition, read from its file (Alembic loads each version file under a name of its own)."""
    spec = importlib.util.spec_from_file_location("signserver_migration_0019",
                                                  Path(__file__).with_name("0019_spend_function.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SPEND_ACTIVATION_TOKEN


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(SPEND_ACTIVATION_TOKEN)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_function_of_0019())
