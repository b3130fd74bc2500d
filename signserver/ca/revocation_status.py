"""Revocation status: the CRLs (signed, stored, re-signed when due) and the OCSP responses of the
issuing CA and the root."""

from __future__ import annotations

import datetime
from typing import Callable

from sqlalchemy import Connection

from signserver.ca import repository as repo
from signserver.ca.ocsp_answers import OcspAnswers
from signserver.ca.revocation import build_crl, ocsp_response, stored_crl
from signserver.ca.setup import ISSUING, OCSP, ROOT
from signserver.clock import Clock
from signserver.config import CaConfig
from signserver.errors import NotFound
from signserver.hsm.crypto_keys import hsm_private_key
from signserver.hsm.keystore import HsmKeyStore
from signserver.monitoring.meter import meter
from signserver.store.database import Database


class RevocationStatus:
    def __init__(self, database: Database, keys: HsmKeyStore, clock: Clock, config: CaConfig):
        self._database = database
        self._keys = keys
        self._clock = clock
        self._config = config
        self._ocsp_answers = OcspAnswers()

    def publish_crls(self, root: bool = True) -> None:
        """Sign new CRLs: the issuing CA's, and the root's when its key is ours.

        Raises: NotFound (not initialised), HsmError.
        """
        now = self._clock.now()
        validity = datetime.timedelta(hours=self._config.crl_hours)
        with self._database.transaction() as conn:
            self.publish_issuing_crl(conn)
            root_authority = repo.get_authority(conn, ROOT)
        if root and root_authority and root_authority.key_id:
            root_key = hsm_private_key(self._keys, root_authority.key_id)
            with self._database.transaction() as conn:
                build_crl(conn, ROOT, root_authority.certificate, root_key, now, validity, include_revoked=False)

    def publish_issuing_crl(self, conn: Connection) -> None:
        """Sign the issuing CA's next CRL in the caller's transaction: a revocation and the CRL that
        lists it commit together, or neither does (a crash or an HSM failure in between would
        otherwise leave a revocation that the CRLs omit until the next scheduled one).

        Raises: NotFound (not initialised), HsmError.
        """
        authority = repo.get_authority(conn, ISSUING)
        if authority is None or authority.certificate is None:
            raise NotFound("the CA is not initialised; run `signserver ca init`")
        build_crl(conn, ISSUING, authority.certificate, hsm_private_key(self._keys, authority.key_id),
                  self._clock.now(), datetime.timedelta(hours=self._config.crl_hours), include_revoked=True)

    def refresh_crls_if_due(self) -> bool:
        """Re-sign CRLs whose next update is less than a quarter of their validity away."""
        now = int(self._clock.now().timestamp())
        margin = self._config.crl_hours * 900
        with self._database.read() as conn:
            newest = {name: row for name in (ISSUING, ROOT) if (row := stored_crl(conn, name)) is not None}
        for name, row in newest.items():
            meter().crl_age(name, now - row.this_update)
        due = [name for name, row in newest.items() if row.next_update - now < margin]
        if due:
            self.publish_crls(root=ROOT in due)
        return bool(due)

    def crl(self, authority: str) -> bytes:
        """The latest CRL (DER). Raises: NotFound."""
        with self._database.read() as conn:
            row = stored_crl(conn, authority)
        if row is None:
            raise NotFound(f"no CRL for {authority!r}")
        return row.der

    def ocsp(self, request_der: bytes, take_signature: Callable[[], float] | None = None) -> bytes:
        """An OCSP response (DER) for a DER request; ``take_signature`` as ocsp_response takes it.
        Raises: NotFound (not initialised), RateLimited, HsmError."""
        with self._database.read() as conn:
            issuing, responder = repo.get_authority(conn, ISSUING), repo.get_authority(conn, OCSP)
        if not issuing or not issuing.certificate or not responder:
            raise NotFound("the CA is not initialised")
        responder_key = hsm_private_key(self._keys, responder.key_id)
        with self._database.read() as conn:
            return ocsp_response(conn, request_der, issuing.certificate, responder.certificate, responder_key,
                                 self._clock.now(), datetime.timedelta(hours=self._config.crl_hours),
                                 self._ocsp_answers, take_signature)
