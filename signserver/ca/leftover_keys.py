"""LeftoverServiceKeys: the OCSP responder's and TSA's keys that renewals left on the token before
a renewal recorded the key it replaced (``superseded_ca_keys``), found once per process and
recorded as superseded, so that the background work removes them like any key a renewal replaced.

A key is taken for one of this CA's only when its public key is that of an OCSP responder's or a
TSA's certificate this CA issued (its ``certificates`` table): other CAs whose keys share the
token, labelled alike, are never touched. Finding them lists the token's keys and reads their
public keys, two searches of the whole token, so it is done by the background work only, and once
per process: a renewal made since records its old key itself.
"""

from __future__ import annotations

import logging
import re

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from signserver.ca import repository as repo
from signserver.ca.setup import OCSP, TSA
from signserver.clock import Clock
from signserver.hsm.keystore import HsmKeyStore, KeyInfo
from signserver.store.database import Database

log = logging.getLogger(__name__)

# How the CA labels a service key (CaSetup.new_key: the purpose, the time, twelve random digits,
# six before); the first versions labelled the responder's key ``ca-ocsp-...``.
_LABEL = re.compile(r"ca-(ocsp-responder|ocsp|tsa)-\d{14}-(?:\d{6}|\d{12})")
_LABEL_ROLES = {"ocsp-responder": OCSP, "ocsp": OCSP, "tsa": TSA}
# The profile each service's certificates are issued under (CertificateAuthority.renew_service_key).
_PROFILE_ROLES = {OCSP: OCSP, "timestamping": TSA}


def _spki(public_key) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


class LeftoverServiceKeys:
    def __init__(self, database: Database, keys: HsmKeyStore, clock: Clock):
        self._database = database
        self._keys = keys
        self._clock = clock
        self._searched = False

    def record_once(self) -> list[str]:
        """On this process's first call, record as superseded now (``superseded_ca_keys``) every
        service key on the token that is labelled as this CA labels them, used by no authority,
        not being generated (``pending_ca_keys``), not recorded already, and whose public key is
        that of an OCSP responder's or TSA's certificate this CA issued for that role; returns
        their key ids (none on later calls). A search that failed is done again by the next call.

        Raises: HsmError, StoreUnavailable.
        """
        if self._searched:
            return []
        found = self._find()
        self._searched = True
        if not found:
            return []
        now = self._clock.now()
        recorded = []
        with self._database.transaction() as conn:
            in_use = repo.authority_key_ids(conn)  # again: a renewal may have committed meanwhile
            for key, role, certificate in found:
                if key.key_id not in in_use:
                    repo.put_superseded_key(conn, repo.Authority(role, key.key_id, certificate), now)
                    recorded.append((key, role, certificate))
        for key, role, certificate in recorded:
            log.info("found the %s's key %s (%r, certificate %x) left on the token by a renewal made before "
                     "replaced keys were recorded: it leaves the token once the grace has passed",
                     role, key.key_id, key.label, certificate.serial_number)
        return [key.key_id for key, _, _ in recorded]

    def _find(self) -> list[tuple[KeyInfo, str, x509.Certificate]]:
        """Raises: HsmError, StoreUnavailable."""
        # The token first, then the certificates, then the keys in use: a renewal committing in
        # between shows its new key in use, never as a certified key that nothing uses.
        labelled = [(key, _LABEL_ROLES[match.group(1)]) for key in self._keys.list()
                    if (match := _LABEL.fullmatch(key.label)) is not None and key.algorithm is not None]
        if not labelled:
            return []
        with self._database.read() as conn:
            issued = repo.certificates_of_profiles(conn, tuple(_PROFILE_ROLES))
        with self._database.read() as conn:
            known = repo.authority_key_ids(conn)  # in use, or recorded already
            pending = repo.pending_key_labels(conn)
        certified: dict[bytes, tuple[str, x509.Certificate]] = {}
        for profile, certificate in issued:  # newest first: a key certified twice is named by its last
            certified.setdefault(_spki(certificate.public_key()), (_PROFILE_ROLES[profile], certificate))
        candidates = [(key, role) for key, role in labelled if key.key_id not in known and key.label not in pending]
        # Read in one search: a search per key would walk the whole token for each. A key without a
        # public half to compare is left out: not provably this CA's.
        public_keys = self._keys.public_keys(key for key, _ in candidates)
        found = []
        for key, role in candidates:
            public = public_keys.get(key.key_id)
            match = certified.get(_spki(public)) if public is not None else None
            if match is not None and match[0] == role:
                found.append((key, role, match[1]))
        return found
