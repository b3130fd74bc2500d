"""Certificates that outside linters accept: every profile's certificate checked with DigiCert's
pkilint, its RFC 5280 linter for all, and its ETSI EN 319 412-2 / -5 linters for the signing
profiles (cloud-signature, qualified, standard); the holder's given name and surname in the
subject, QcType on qualified certificates, and policy OIDs whose arcs every decoder reads."""

from __future__ import annotations

import functools
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from alembic import command
from alembic.config import Config as AlembicConfig
from asn1crypto import core
from sqlalchemy import text
from cryptography.x509.oid import NameOID
from pkilint import etsi, finding_filter, loader
from pkilint.etsi.etsi_constants import CertificateType
from pkilint.pkix import certificate as pkix_certificate
from pkilint.pkix import extension as pkix_extension
from pkilint.pkix import name as pkix_name
from pkilint.validation import ValidationFindingSeverity

from signserver.accounts.model import AccountKind
from signserver.accounts.repository import get_account
from signserver.ca.authority import CertificateRequest
from signserver.ca.builder import QC_STATEMENTS
from signserver.ca.profiles import HOLDER_PROFILES, KeySource, all_profiles, profile
from signserver.config import MAX_OID_ARC, load_config
from signserver.errors import ConfigurationError, InvalidArgument
from signserver.store.database import MIGRATIONS, Database
from signserver.v1 import certificate_pb2
from tests.ca.test_authority import csr_for, holder
from tests.ca.test_certificate_service import ra, served  # noqa: F401 (fixtures)
from tests.conftest import empty_database_url

PEM = serialization.Encoding.PEM
SIGNING_PROFILES = [p.name for p in HOLDER_PROFILES if p.name.startswith(("cloud-signature", "qualified", "standard"))]
SERIOUS = (ValidationFindingSeverity.FATAL, ValidationFindingSeverity.ERROR)

# Findings accepted, each for its reason (the README lists them):
JUSTIFIED = {
    # The tests' CA is reached at http://127.0.0.1:8080 (ca.base_url), so its OCSP, CA issuers,
    # CRL and CPS addresses name a loopback address; a deployment's ca.base_url is public.
    "etsi.internal_domain_name": "127.0.0.1",
}


def _document(certificate: x509.Certificate):
    return loader.RFC5280CertificateDocumentLoader().load_der_document(
        certificate.public_bytes(serialization.Encoding.DER), "certificate")


def _findings(results) -> list[tuple[str, str, str]]:
    """(severity, code, message) of every finding at or above ERROR."""
    return [(str(d.finding.severity), d.finding.code, d.message or "")
            for result in results for d in result.finding_descriptions if d.finding.severity in SERIOUS]


def rfc5280_findings(certificate: x509.Certificate) -> list[tuple[str, str, str]]:
    """What pkilint's RFC 5280 certificate linter (lint_pkix_cert) reports as ERROR or FATAL."""
    validator = pkix_certificate.create_pkix_certificate_validator_container(
        pkix_certificate.create_decoding_validators(pkix_name.ATTRIBUTE_TYPE_MAPPINGS,
                                                    pkix_extension.EXTENSION_MAPPINGS),
        [pkix_certificate.create_issuer_validator_container([]),
         pkix_certificate.create_validity_validator_container(),
         pkix_certificate.create_subject_validator_container([]),
         pkix_certificate.create_extensions_validator_container([]),
         pkix_certificate.create_spki_validator_container([])])
    return _findings(validator.validate(_document(certificate).root))


@functools.cache
def _etsi_linter(certificate_type: CertificateType):
    """pkilint's ETSI validator and finding filters for ``certificate_type``, made once and used for
    every certificate of that type, as pkilint's own REST service does: making the validator costs
    0.17 s of CPU (the public suffix list parsed for each of its domain name checks)."""
    validator = pkix_certificate.create_pkix_certificate_validator_container(
        etsi.create_decoding_validators(certificate_type), etsi.create_validators(certificate_type))
    return validator, etsi.create_etsi_finding_filters(certificate_type)


def etsi_findings(certificate: x509.Certificate, certificate_type: CertificateType) -> list[tuple[str, str, str]]:
    """What pkilint's ETSI linter (lint_etsi_cert, EN 319 412-1/-2/-5) reports as ERROR or FATAL
    for ``certificate_type``, with the linter's own finding filters applied as its CLI does."""
    validator, filters = _etsi_linter(certificate_type)
    results = validator.validate(_document(certificate).root)
    results, _ = finding_filter.filter_results(filters, results)
    return _findings(results)


def chain_findings(issuer: x509.Certificate, subject: x509.Certificate) -> list[tuple[str, str, str]]:
    """What pkilint's issuer/subject linter (lint_pkix_signer_signee_cert_chain) reports as ERROR or
    FATAL: the subject's issuer name and authority key identifier are the issuer's subject and
    subject key identifier, their policies chain and the issuer's key verifies the signature."""
    from pkilint.bin import lint_pkix_signer_signee_cert_chain as chain

    documents = {}
    for role, certificate in (("issuer", issuer), ("subject", subject)):
        documents[role] = loader.RFC5280CertificateDocumentLoader().load_der_document(
            certificate.public_bytes(serialization.Encoding.DER), role, role, documents)
    decoding = chain.create_decoder_validation_container()
    results = decoding.validate(documents["issuer"].root) + decoding.validate(documents["subject"].root)
    results += chain.create_issuer_validation_container().validate(documents["issuer"].root)
    results += chain.create_subject_validation_container().validate(documents["subject"].root)
    return _findings(results)


def unjustified(findings):
    return [f for f in findings if not (f[1] in JUSTIFIED and JUSTIFIED[f[1]] in f[2])]


def issue(ca_service, profile_name: str, given_name: str = "Weng Sam LUZIA", surname: str = "KUAN",
          holder_name: str = "Weng Sam LUZIA KUAN") -> x509.Certificate:
    chosen = next(p for p in HOLDER_PROFILES if p.name == profile_name)
    created, _ = holder(ca_service, kind=AccountKind(chosen.variant), given_name=given_name, surname=surname,
                        holder_name=holder_name)
    csr = None
    if chosen.key_source is KeySource.CSR:
        csr, _ = csr_for(created.account.holder_name, created.account.emails[0])
    extra = {"transaction_limit": 500000, "agent_qualification": "Procurador"} if chosen.qualified else {}
    return ca_service.ca.issue(CertificateRequest(profile_name, created.account.username, csr, **extra),
                               "ra:test").certificate


def service_certificate(ca_service, profile_name: str) -> x509.Certificate:
    if profile_name == "ocsp-responder":
        return ca_service.ca.status().ocsp_responder
    if profile_name == "timestamping":
        return ca_service.ca.service_key("tsa")[1]
    key = ec.generate_private_key(ec.SECP256R1())
    names = {"dns_names": ("sign.example.mo",)} if profile_name == "tls-server" else {}
    return ca_service.ca.issue_service_certificate(profile_name, f"{profile_name} test", key.public_key(),
                                                   "operator:test", **names).certificate


@pytest.mark.parametrize("profile_name", [p.name for p in all_profiles()])
def test_every_profile_passes_the_rfc5280_linter(ca_service, profile_name):
    if any(p.name == profile_name for p in HOLDER_PROFILES):
        certificate = issue(ca_service, profile_name)
    else:
        certificate = service_certificate(ca_service, profile_name)
    assert unjustified(rfc5280_findings(certificate)) == []


def test_the_ca_certificates_pass_the_rfc5280_linter(ca_service):
    issuing, root = ca_service.ca.chain()
    assert unjustified(rfc5280_findings(root)) == []
    assert unjustified(rfc5280_findings(issuing)) == []


@pytest.fixture(scope="module", params=["test-keys", "default-keys"])
def any_ca(request, config, tmp_path_factory, ca_clock):
    """The CA on the tests' P-256 keys and on the defaults' RSA-3072 keys."""
    from tests.conftest import production_costs, service_with_ca

    if request.param == "default-keys":
        config = production_costs(config)
    return service_with_ca(config, tmp_path_factory.mktemp("any-ca") / "signserver.db", ca_clock)


@pytest.mark.parametrize("profile_name", [p.name for p in all_profiles()] + ["issuing", "root"])
def test_every_certificate_passes_the_linters_with_its_issuer(any_ca, profile_name):
    issuing, root = any_ca.ca.chain()
    if profile_name in ("issuing", "root"):
        certificate, issuer = (issuing, root) if profile_name == "issuing" else (root, root)
    elif any(p.name == profile_name for p in HOLDER_PROFILES):
        certificate, issuer = issue(any_ca, profile_name), issuing
    else:
        certificate, issuer = service_certificate(any_ca, profile_name), issuing
    assert unjustified(rfc5280_findings(certificate)) == []
    assert chain_findings(issuer, certificate) == []
    assert certificate.not_valid_after_utc <= issuer.not_valid_after_utc


@pytest.mark.parametrize("profile_name", ["cloud-signature-corporate", "qualified-government", "standard-corporate",
                                          "encryption-government"])
def test_renewed_certificates_pass_the_linters(ca_service, profile_name):
    first = issue(ca_service, profile_name)
    serial = format(first.serial_number, "x")
    csr = None
    if profile(profile_name).key_source is KeySource.CSR:
        csr, _ = csr_for("Weng Sam LUZIA KUAN", first.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)[0].value)
    renewed = ca_service.ca.renew(serial, "ra:test", csr=csr).certificate
    def content(certificate):  # everything but the new key's identifier
        return [e for e in certificate.extensions if e.oid != x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER]

    assert renewed.subject == first.subject and content(renewed) == content(first)
    certificate_type = etsi.determine_certificate_type(_document(renewed))
    assert certificate_type is etsi.determine_certificate_type(_document(first))
    assert unjustified(rfc5280_findings(renewed)) == []
    assert unjustified(etsi_findings(renewed, certificate_type)) == []
    assert chain_findings(ca_service.ca.chain()[0], renewed) == []


@pytest.mark.parametrize("profile_name", [p.name for p in HOLDER_PROFILES if p.name.startswith("encryption")])
def test_encryption_profiles_pass_the_etsi_natural_person_linter(ca_service, profile_name):
    certificate = issue(ca_service, profile_name)
    certificate_type = etsi.determine_certificate_type(_document(certificate))
    assert certificate_type is CertificateType.NCP_NATURAL_PERSON_CERTIFICATE
    assert unjustified(etsi_findings(certificate, certificate_type)) == []


@pytest.mark.parametrize("profile_name", SIGNING_PROFILES)
def test_signing_profiles_pass_the_etsi_linters(ca_service, profile_name):
    certificate = issue(ca_service, profile_name)
    certificate_type = etsi.determine_certificate_type(_document(certificate))
    # Read by the linter as a natural person's certificate; a qualified one as qualified with its
    # key in a secure device, under a legislation other than the EU's (Macau's).
    expected = (CertificateType.QCP_N_QSCD_NON_EIDAS_FINAL_CERTIFICATE if profile_name.startswith("qualified")
                else CertificateType.NCP_NATURAL_PERSON_CERTIFICATE)
    assert certificate_type is expected
    findings = etsi_findings(certificate, certificate_type)
    assert unjustified(findings) == []
    # The linter, made once per certificate type, still reports what it finds in each certificate:
    # the tests' CA's loopback addresses.
    assert any(code == "etsi.internal_domain_name" for _, code, _ in findings), findings


@pytest.mark.parametrize("given_name, surname, holder_name", [
    ("Weng Sam LUZIA", "KUAN", "Weng Sam LUZIA KUAN"),
    ("詠心", "關", "關詠心"),
])
def test_natural_person_subject_names_given_name_and_surname(ca_service, given_name, surname, holder_name):
    certificate = issue(ca_service, "cloud-signature-corporate", given_name, surname, holder_name)
    subject = certificate.subject
    assert subject.get_attributes_for_oid(NameOID.GIVEN_NAME)[0].value == given_name
    assert subject.get_attributes_for_oid(NameOID.SURNAME)[0].value == surname
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == holder_name
    assert unjustified(etsi_findings(certificate, CertificateType.NCP_NATURAL_PERSON_CERTIFICATE)) == []


class _QcStatement(core.Sequence):
    _fields = [("statement_id", core.ObjectIdentifier), ("statement_info", core.Any, {"optional": True})]


class _QcStatements(core.SequenceOf):
    _child_spec = _QcStatement


class _Identifiers(core.SequenceOf):
    _child_spec = core.ObjectIdentifier


class _Countries(core.SequenceOf):
    _child_spec = core.PrintableString


def test_qualified_certificates_say_they_are_for_electronic_signatures(ca_service):
    certificate = issue(ca_service, "qualified-government")
    raw = certificate.extensions.get_extension_for_oid(QC_STATEMENTS).value.value
    statements = {s["statement_id"].dotted: s["statement_info"] for s in _QcStatements.load(raw)}
    assert _Identifiers.load(statements["0.4.0.1862.1.6"].dump()).native == ["0.4.0.1862.1.6.1"]  # QcType esign
    assert _Countries.load(statements["0.4.0.1862.1.7"].dump()).native == ["MO"]  # QcCClegislation
    assert {"0.4.0.1862.1.1", "0.4.0.1862.1.4", "0.4.0.1862.1.2"} <= set(statements)


def test_policy_identifiers_have_arcs_every_decoder_reads(ca_service):
    for chosen in ca_service.ca.profiles():
        assert all(int(arc) <= MAX_OID_ARC for arc in chosen.policy_oid.split(".")), chosen
    certificate = issue(ca_service, "standard-government")
    policy = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value[0]
    assert policy.policy_identifier.dotted_string == "1.3.6.1.4.1.32473.1.3.1"
    assert len({p.policy_oid for p in all_profiles()}) == len(all_profiles())  # one per profile


def test_the_policy_arc_is_configurable_and_profiles_may_override(tmp_path):
    path = tmp_path / "signserver.toml"
    path.write_text('[ca]\npolicy_oid_arc = "1.3.6.1.4.1.64000.7"\n'
                    '[ca.profiles.qualified-corporate]\npolicy_oid = "1.3.6.1.4.1.64000.99"\n')
    ca = load_config(path, environ={}).ca
    assert ca.policy_oid_arc == "1.3.6.1.4.1.64000.7"
    assert profile("cloud-signature-government", ca.profile_settings, ca.policy_oid_arc).policy_oid == \
        "1.3.6.1.4.1.64000.7.1.1"
    assert profile("qualified-corporate", ca.profile_settings, ca.policy_oid_arc).policy_oid == "1.3.6.1.4.1.64000.99"
    for setting in ('[ca]\npolicy_oid_arc = "2.25.89771664763172759333592535454161566165"\n',
                    '[ca.profiles.standard-corporate]\npolicy_oid = "2.25.52475397435183057795410474808138914073"\n'):
        path.write_text(setting)
        with pytest.raises(ConfigurationError, match="at most 2147483647"):
            load_config(path, environ={})
    # What an encoder would refuse later, on every certificate issued: refused at load instead.
    for arc in ("1.40.1", "1.3.6.\u0663", "1.3.06.1"):
        path.write_text(f'[ca]\npolicy_oid_arc = "{arc}"\n')
        with pytest.raises(ConfigurationError, match="dotted object identifier"):
            load_config(path, environ={})


def test_given_name_and_surname_go_together(ca_service):
    with pytest.raises(InvalidArgument, match="together"):
        holder(ca_service, given_name="Weng Sam LUZIA")
    created, _ = holder(ca_service)  # neither: an account as before
    assert (created.account.given_name, created.account.surname) == ("", "")
    updated = ca_service.accounts.update_holder(created.account.username, "operator:test",
                                                given_name="詠心", surname="關")
    assert (updated.given_name, updated.surname) == ("詠心", "關")
    with pytest.raises(InvalidArgument, match="together"):
        ca_service.accounts.update_holder(created.account.username, "operator:test", surname="KUAN")


def test_the_ra_enrols_the_holders_names(ra, ca_service):  # noqa: F811 (fixture)
    ra.CreateAccount(certificate_pb2.CreateAccountRequest(
        account="ra-holder-names", holder_name="Weng Sam LUZIA KUAN", emails=["ra-holder-names@example.mo"],
        kind="government", organisation="DSAJ", password="Ra-created-3", given_name="Weng Sam LUZIA",
        surname="KUAN"), timeout=60)
    account = ca_service.accounts.get("ra-holder-names")
    assert (account.given_name, account.surname) == ("Weng Sam LUZIA", "KUAN")


def test_migration_0009_keeps_accounts_without_names(tmp_path, clock):
    database = Database(empty_database_url(tmp_path / "old.db"))
    migrations = AlembicConfig()
    migrations.set_main_option("script_location", str(MIGRATIONS))
    with database.transaction() as conn:
        migrations.attributes["connection"] = conn
        command.upgrade(migrations, "0008")
        conn.execute(text(
            "INSERT INTO accounts (username, holder_name, kind, organisation, department, title, status, "
            "password_hash, password_changed_at, otp_seed_sealed, recovery_code_hash, created_at) VALUES "
            "('before', 'Lei Ka Io', 'personal', '', '', '', 'active', 'x', 0, :seed, '', 0)"), {"seed": b"\x00"})
        command.upgrade(migrations, "head")
        account = get_account(conn, "before", clock.now())
    database.dispose()
    assert (account.holder_name, account.given_name, account.surname) == ("Lei Ka Io", "", "")


def test_the_cli_enrols_and_updates_the_holders_names(state_dir, service):
    from tests.test_cli_accounts import run

    name = f"cli{uuid.uuid4().hex[:8]}"
    result = run(state_dir, "account", "create", name, "--name", "Weng Sam LUZIA KUAN", "--email",
                 f"{name}@example.mo", "--given-name", "Weng Sam LUZIA", "--surname", "KUAN",
                 "--key-algorithm", "ec-p256", SIGNSERVER_ACCOUNT_PASSWORD="Cli-pass-2026")
    assert result.returncode == 0, result.stderr
    assert (service.accounts.get(name).given_name, service.accounts.get(name).surname) == ("Weng Sam LUZIA", "KUAN")
    result = run(state_dir, "account", "update", name, "--given-name", "詠心", "--surname", "關", "--json")
    assert result.returncode == 0, result.stderr
    assert (service.accounts.get(name).given_name, service.accounts.get(name).surname) == ("詠心", "關")
    shown = run(state_dir, "account", "show", name)
    assert "詠心" in shown.stdout and "關" in shown.stdout
