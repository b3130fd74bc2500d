"""spend_activation_token(): on PostgreSQL, the write of a SignHash in one call of one function.

Spending an activation token's digests for a signature, and recording the signatures in the audit
chain, took six round trips to PostgreSQL (BEGIN, four statements, COMMIT), each costing the
worker its driver's work and the database a message of its own. This function runs the same
statements inside the database in one call, its own transaction (the caller is in autocommit):

1. the credential must still be as the caller checked it (from a read, or from what the worker
   read before: signserver/signing/recent_credentials.py): active, with the same key, and the same
   newest certificate, still valid and unexpired; otherwise nothing is changed and the call fails
   with SQLSTATE SSA03 (the caller reads the credential again);
2. the digests are taken, only while the token holds (unrevoked, unexpired, for this credential,
   application and digest algorithm); if not every one of them is, nothing is changed and the
   call fails with SQLSTATE SSA01 (the caller then works out why, as on SQLite);
3. on request, what unwrapping the holder's package takes is read (the token's sealed key and the
   package), before the count below may erase it; none there fails the call with SSA02;
4. on request, the token's count of unspent digests goes down, and its sealed key goes with the
   last one;
5. one audit record per digest is appended to the chain, hashed here as
   ``signserver.audit.log.record_hash`` hashes (``tails`` carry what follows the previous hash and
   the sequence number in that JSON array), and the head moved: locked for the rest of the call.

Its plans are made once (``plan_cache_mode = force_generic_plan`` for the function alone):
PostgreSQL otherwise planned them anew at every call (a fifth of the backends' CPU, by perf).

SQLite has no such functions; there the statements run in the caller's transaction as before.

Revision ID: 0019
Revises: 0018
"""

from alembic import op

revision = "0019"
down_revision = "0018"
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
       AND EXISTS (SELECT 1 FROM activation_tokens AS t
                    WHERE t.token_hash = p_token_hash AND t.revoked IS false AND t.expires_at > p_now
                      AND t.credential_id = p_credential_id AND t.application_id = p_application_id
                      AND t.hash_algorithm = p_hash_algorithm);
    GET DIAGNOSTICS taken = ROW_COUNT;
    IF taken <> cardinality(p_digests) THEN
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


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(SPEND_ACTIVATION_TOKEN)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS spend_activation_token")
