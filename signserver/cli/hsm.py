"""``signserver hsm ...``: the HSM administrator's commands, on any PKCS#11 module and token."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from signserver.cli.common import check_output, open_service, write_output
from signserver.cli.output import print_fields, print_json, print_table
from signserver.cli.pins import read_optional_pin, read_pin, write_pin_file
from signserver.cli.text import ask, text_argument
from signserver.cli.token_records import (CERTIFICATE_STORED, KEY_DELETED, KEY_GENERATED, SO_PIN_CHANGED,
                                          TOKEN_INITIALISED, UNNAMED_KEYS_DELETED, UNRECORDED, USER_PIN_CHANGED,
                                          USER_PIN_UNBLOCKED, open_recording_service, record, record_without_login)
from signserver.config import USER_PIN_ENV, Config, read_secret_file
from signserver.errors import ConfigurationError, InvalidArgument, KeyNotFound, SignServerError
from signserver.hsm.admin import SlotStatus, TokenAdministrator, check_signature, count_objects
from signserver.hsm.algorithms import KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.keystore import KeyInfo
from signserver.hsm.module import use_softhsm_config
from signserver.hsm.pin_guard import PinGuard, RefusedPins, refused_pins_file
from signserver.secret import Secret

SO_PIN_ENV = "SIGNSERVER_HSM_SO_PIN"
NEW_PIN_ENV = "SIGNSERVER_HSM_NEW_PIN"
CURRENT_SO_PIN_ENV = "SIGNSERVER_HSM_CURRENT_SO_PIN"


def _argument(parse):
    """An argparse ``type`` from a parser that raises signserver errors."""
    def convert(text: str):
        try:
            return parse(text)
        except SignServerError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def add_parser(subparsers) -> None:
    hsm = subparsers.add_parser("hsm", help="administer the HSM: tokens, PINs, keys", allow_abbrev=False)
    commands = hsm.add_subparsers(dest="hsm_command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--module", type=Path, help="PKCS#11 module (default: hsm.module, SoftHSM's)")
    common.add_argument("--token", type=text_argument, help="token label (default: hsm.token_label)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    user = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    user.add_argument("--pin-file", type=Path,
                      help=f"file holding the user PIN (else ${USER_PIN_ENV}, hsm.user_pin_file, or a prompt)")

    def command(name, handler, help, parents=(common, user)):
        parser = commands.add_parser(name, help=help, parents=list(parents), allow_abbrev=False)
        parser.set_defaults(handler=handler)
        return parser

    p = command("init", cmd_init, "initialise a token: label, SO PIN, user PIN", parents=(common,))
    p.add_argument("--label", type=text_argument, help="token label (default: hsm.token_label)")
    p.add_argument("--slot", type=int, help="slot id (default: the first uninitialised token)")
    p.add_argument("--so-pin-file", type=Path,
                   help=f"file holding the SO PIN the token gets (else ${SO_PIN_ENV} or a prompt)")
    p.add_argument("--current-so-pin-file", type=Path,
                   help="file holding the SO PIN the token has now, which most tokens verify when initialised "
                        f"(openCryptoki's factory one is 87654321; else ${CURRENT_SO_PIN_ENV} or a prompt; "
                        "not needed for SoftHSM's free slot)")
    p.add_argument("--user-pin-file", type=Path, help=f"file holding the user PIN (else ${USER_PIN_ENV} or a prompt)")
    p.add_argument("--generate-pins", action="store_true",
                   help="generate the SO and user PINs within the token's PIN lengths and write them to "
                        "--so-pin-file and --user-pin-file (new files, mode 0600)")
    p.add_argument("--yes", action="store_true",
                   help="initialise an already initialised token again (destroys every key on it) without asking")

    command("slots", cmd_slots, "list slots and tokens with their flags", parents=(common,))

    p = command("keygen", cmd_keygen, "generate a key pair inside the HSM")
    p.add_argument("--algorithm", required=True, type=_argument(KeyAlgorithm.parse),
                   help="one of " + ", ".join(a.value for a in KeyAlgorithm))
    p.add_argument("--label", required=True, type=text_argument, help="a label unique on the token")

    command("list", cmd_list, "list the private keys on the token")

    p = command("delete", cmd_delete, "delete a key pair and its certificate")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("key", nargs="?", type=text_argument, help="key label or id")
    which.add_argument("--unnamed", action="store_true",
                   help="instead, delete the key objects with no label and no id whose kind cannot be read (their "
                        "modulus, curve or point is missing or unreadable): what a key generation another process "
                        "interrupted left half-made; other applications' keys of other kinds stay")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = command("health", cmd_health, "check that the module, token and login answer, and sign with the "
                                      "server's audit seal key")
    p.add_argument("--count-objects", action="store_true",
                   help="also count the objects on the token (walks every object: slow on a full token)")

    p = command("public-key", cmd_public_key, "export a public key (SubjectPublicKeyInfo)")
    p.add_argument("key", type=text_argument, help="key label or id")
    p.add_argument("--der", action="store_true", help="DER instead of PEM")
    p.add_argument("--out", type=Path, help="write to this file instead of standard output")

    p = command("change-pin", cmd_change_pin, "change the user PIN (asks for the current one)")
    p.add_argument("--new-pin-file", type=Path, help=f"file holding the new PIN (else ${NEW_PIN_ENV} or a prompt)")

    p = command("change-so-pin", cmd_change_so_pin, "change the security officer's PIN (asks for the current one)",
                parents=(common,))
    p.add_argument("--so-pin-file", type=Path, help=f"file holding the current SO PIN (else ${SO_PIN_ENV} or a prompt)")
    p.add_argument("--new-pin-file", type=Path, help=f"file holding the new SO PIN (else ${NEW_PIN_ENV} or a prompt)")

    p = command("unblock-pin", cmd_unblock_pin, "security officer: set a new user PIN, unblocking a locked one",
                parents=(common,))
    p.add_argument("--so-pin-file", type=Path, help=f"file holding the SO PIN (else ${SO_PIN_ENV} or a prompt)")
    p.add_argument("--new-pin-file", type=Path, help=f"file holding the new user PIN (else ${NEW_PIN_ENV} or a prompt)")

    p = command("csr", cmd_csr, "make a PKCS#10 request signed by a key on the token")
    p.add_argument("key", type=text_argument, help="key label or id")
    p.add_argument("--subject", required=True, type=text_argument,
                   help='RFC 4514 subject, e.g. "CN=Chan Tai Man,O=Example,C=MO"')
    p.add_argument("--signature-algorithm", type=_argument(SignatureAlgorithm.parse),
                   help="e.g. rsa-pkcs1v15-sha256 (default: SHA-256, SHA-384 for P-384 keys)")
    p.add_argument("--out", type=Path, help="write the PEM request here instead of standard output")

    p = command("import-cert", cmd_import_cert, "store a certificate on the token beside its key")
    p.add_argument("key", type=text_argument, help="key label or id")
    p.add_argument("certificate", type=Path, help="the certificate, PEM or DER")


# --- helpers -------------------------------------------------------------------------------

def _module(args, config: Config) -> Path | None:
    use_softhsm_config(config.hsm.softhsm2_conf)
    return args.module or config.hsm.module


def _key_row(key: KeyInfo) -> list:
    a = key.attributes
    return [key.label, key.key_id, key.algorithm.value if key.algorithm else "other", key.size or "",
            "yes" if a.sensitive else "NO", "yes" if a.extractable else "no",
            "yes" if a.never_extractable else "NO"]


_KEY_HEADERS = ["LABEL", "ID", "ALGORITHM", "BITS", "SENSITIVE", "EXTRACTABLE", "NEVER EXTRACTABLE"]


def _write(data: bytes, out: Path | None) -> None:
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        write_output(out, data)
        print(f"wrote {out}", file=sys.stderr)


# --- commands ------------------------------------------------------------------------------

def cmd_init(args, config: Config) -> int:
    label = args.label or args.token or config.hsm.token_label
    admin = TokenAdministrator(_module(args, config))
    target = admin.init_target(label, args.slot)
    if target.initialised:
        _confirm_reinitialise(target, args.yes)
    so_pin_prompted = not args.generate_pins and args.so_pin_file is None and not os.environ.get(SO_PIN_ENV)
    current = _current_so_pin(args, target, so_pin_prompted)
    if args.generate_pins:
        so_pin, user_pin = _generate_pins(args, target)
    else:
        so_pin = read_pin("new SO PIN", SO_PIN_ENV, args.so_pin_file, confirm=True)
        user_pin = read_pin("user PIN", USER_PIN_ENV, args.user_pin_file, confirm=True)
    generated = ((args.so_pin_file, so_pin, "SO PIN"), (args.user_pin_file, user_pin, "user PIN"))
    status = admin.init_token(label, so_pin, user_pin, args.slot, current_so_pin=current,
                              reinitialise=target.initialised,
                              before_init=(lambda: _keep_pins(generated)) if args.generate_pins else None,
                              guard=PinGuard.for_config(config.hsm, config.state_dir))
    _forget_refusals(config, status.token_serial, status.token_label)
    if args.generate_pins:
        for path, _, what in generated:
            print(f"stored the {what} in {path} (mode 0600)", file=sys.stderr)
    recorded = record_without_login(config, TOKEN_INITIALISED, status.token_label,
                                    f"token {status.token_label!r} was initialised", serial=status.token_serial,
                                    slot=status.slot_id, reinitialised=target.initialised)
    if args.json:
        print_json(status)
    else:
        print(f"initialised token {status.token_label!r} in slot {status.slot_id}")
    return 0 if recorded else UNRECORDED


def _confirm_reinitialise(target: SlotStatus, yes: bool) -> None:
    """Raises: InvalidArgument (not confirmed, or nobody to ask)."""
    if yes:
        return
    what = f"slot {target.slot_id} holds the initialised token {target.token_label!r}"
    if not sys.stdin.isatty():
        raise InvalidArgument(f"{what}; initialising it again destroys every key on it: pass --yes to confirm")
    answer = ask(f"{what}. Initialising it again destroys every key on it.\n"
                 f"Type the token's label to go on: ")
    if answer is None or answer.strip() != target.token_label:
        raise InvalidArgument("not confirmed: the token is unchanged")


def _current_so_pin(args, target: SlotStatus, so_pin_prompted: bool) -> Secret | None:
    """The SO PIN the token verifies at initialisation: needed when it is initialised; else
    used when given, and asked for (empty for none) when the new one is asked for too, since only
    the administrator knows whether an uninitialised token keeps a factory SO PIN."""
    if target.verifies_so_pin_at_init or args.current_so_pin_file is not None or os.environ.get(CURRENT_SO_PIN_ENV):
        return read_pin("current SO PIN", CURRENT_SO_PIN_ENV, args.current_so_pin_file)
    if so_pin_prompted:
        return read_optional_pin("current SO PIN", CURRENT_SO_PIN_ENV, None,
                                 "leave empty if the token has none, like SoftHSM's free slot")
    return None


def _generate_pins(args, target: SlotStatus) -> tuple[Secret, Secret]:
    """PINs within the token's lengths, for files that do not hold one yet (written once the token
    is initialised).

    Raises: InvalidArgument (a file missing from the command line or already holding a PIN)."""
    if args.so_pin_file is None or args.user_pin_file is None:
        raise InvalidArgument("--generate-pins writes the PINs to --so-pin-file and --user-pin-file: give both")
    pins = (target.pin_lengths.generate(), target.pin_lengths.generate())
    for path, what in ((args.so_pin_file, "SO PIN"), (args.user_pin_file, "user PIN")):
        if path.exists() and path.stat().st_size > 0:
            raise InvalidArgument(f"{path} already holds something; a generated {what} never overwrites a file")
    return pins


def _keep_pins(generated) -> Callable[[], None]:
    """Write the generated PINs before the token takes them (a token initialised with PINs that
    could not be written would be lost with them); returns what removes them again, for a token
    that refuses them (PINs it never took would only mislead).

    Raises: InvalidArgument: a file cannot be written (none is left).
    """
    written: list[Path] = []

    def remove() -> None:
        for path in written:
            path.unlink(missing_ok=True)
    try:
        for path, pin, what in generated:
            write_pin_file(path, pin, what)
            written.append(path)
    except BaseException:
        remove()
        raise
    return remove


def cmd_slots(args, config: Config) -> int:
    slots = TokenAdministrator(_module(args, config)).slots()
    if args.json:
        print_json(slots)
        return 0
    print_table(["SLOT", "LABEL", "MODEL", "SERIAL", "PIN LENGTH", "FLAGS"],
                [[s.slot_id, s.token_label if s.token_present else "(no token)", s.token_model,
                  s.token_serial, s.pin_lengths.describe() if s.token_present else "",
                  ", ".join(s.flags)] for s in slots])
    return 0


def _key_detail(key: KeyInfo) -> dict:
    """What an audit record says of a key on the token."""
    return {"key_id": key.key_id, "algorithm": key.algorithm.value if key.algorithm else None, "bits": key.size}


def cmd_keygen(args, config: Config) -> int:
    service = open_recording_service(args, config)
    key = service.generate_key(args.algorithm, args.label)
    # Recorded once the key exists (token_records.py: a failed append is told, and exits 1).
    recorded = record(service, KEY_GENERATED, key.label, f"key {key.label!r} ({key.key_id}) was generated",
                      **_key_detail(key))
    if args.json:
        print_json(key)
    else:
        print_table(_KEY_HEADERS, [_key_row(key)])
    return 0 if recorded else UNRECORDED


def cmd_list(args, config: Config) -> int:
    keys = open_service(args, config).list_keys()
    if args.json:
        print_json(keys)
    else:
        print_table(_KEY_HEADERS, [_key_row(k) for k in keys], empty="no keys on the token")
    return 0


def cmd_delete(args, config: Config) -> int:
    if args.unnamed:
        return _delete_unnamed(args, config)
    service = open_recording_service(args, config)
    try:
        key = service.find_key(args.key)
    except KeyNotFound:
        _refuse_shared_key(args.key)
        raise
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidArgument("deleting a key cannot be undone: pass --yes to confirm")
        answer = ask(f"Delete key {key.label!r} ({key.key_id}) for ever? [y/N] ")
        if answer is None or answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)  # beside the question: stdout may be JSON
            return 1
    service.delete_key(key.key_id)
    # Recorded once the key is gone (token_records.py: a failed append is told, and exits 1).
    recorded = record(service, KEY_DELETED, key.label, f"key {key.label!r} ({key.key_id}) was deleted",
                      **_key_detail(key))
    if args.json:
        print_json({"deleted": key})
    else:
        print(f"deleted key {key.label!r} ({key.key_id})")
    return 0 if recorded else UNRECORDED


def _refuse_shared_key(label: str) -> None:
    """`delete` deletes key pairs: a key the tokens share (a master key, an OTP sealing key) is a
    secret key it does not see, and says where such a key goes.

    Raises: KeyNotFound: ``label`` is a shared key's.
    """
    from signserver.hsm.ceremony import MASTER, kind_of

    kind = kind_of(label)
    if kind == MASTER:
        raise KeyNotFound(f"no key pair labelled {label!r} on the token: {label!r} is a master key, which `signserver "
                          "hsm master retire` destroys once no package needs it; one the database never recorded, "
                          "or records with another check value, `signserver hsm master retire --orphans`") from None
    if kind is not None:
        raise KeyNotFound(f"no key pair labelled {label!r} on the token: {label!r} is an OTP sealing key, which no "
                          "command deletes (the OTP seeds sealed under it would not open again)") from None


def _delete_unnamed(args, config: Config) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidArgument("deleting key objects cannot be undone: pass --yes to confirm")
        answer = ask("Delete every key object with no label and no id whose kind cannot be read? No key "
                     "generation may be under way on this token meanwhile. [y/N] ")
        if answer is None or answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)  # beside the question: stdout may be JSON
            return 1
    service = open_recording_service(args, config)
    deleted = service.delete_unnamed_keys()
    token = service.keys.session.token_label
    recorded = not deleted or record(service, UNNAMED_KEYS_DELETED, token, f"{deleted} unnamed key objects were "
                                     "deleted", objects=deleted)
    if args.json:
        print_json({"deleted_unnamed_objects": deleted})
    else:
        print(f"deleted {deleted} unnamed key object{'' if deleted == 1 else 's'}" if deleted
              else "no unnamed key objects on the token")
    return 0 if recorded else UNRECORDED


def cmd_health(args, config: Config) -> int:
    service = open_service(args, config)
    health = service.health()
    info = service.server_info() if health.serving else None
    probe = _test_signature(service) if health.serving else None
    objects = count_objects(service.keys.session) if health.serving and args.count_objects else None
    healthy = health.serving and (probe is None or probe.get("verified") is not False)
    result = {
        "serving": healthy,
        "detail": health.detail,
        "token": info.token_label if info else None,
        "model": info.token_model if info else None,
        "logged_in": health.serving,
        "key_algorithms": [a.value for a in info.key_algorithms] if info else [],
        "test_signature": probe,
        "objects": objects,
    }
    if args.json:
        print_json(result)
    else:
        print_fields([
            ("status", "SERVING" if healthy else "NOT SERVING"),
            ("detail", health.detail),
            ("token", f"{info.token_label} ({info.token_manufacturer} {info.token_model})" if info else "-"),
            ("login", "logged in as the user" if health.serving else "-"),
            ("key algorithms", ", ".join(result["key_algorithms"]) or "-"),
            ("test signature", _describe_probe(probe)),
            ("objects", objects if objects is not None else "- (count them with --count-objects)"),
        ])
    return 0 if healthy else 1


def _test_signature(service) -> dict:
    """A signature with the server's audit seal key, made and verified now; the key is found by
    its label (once per process), not by listing the token's keys."""
    from signserver.audit.seal import find_token_seal_key  # the audit log's module loads the database's

    try:
        seal_key = find_token_seal_key(service.keys, setting=service.config.audit.seal_key_algorithm)
        if seal_key is None:
            return {"verified": None, "detail": "no audit seal key on the token yet (a server makes it)"}
        algorithm = check_signature(service.keys, seal_key.key_id)
    except SignServerError as exc:
        return {"verified": False, "detail": str(exc)}
    return {"verified": True, "key_id": seal_key.key_id, "algorithm": algorithm.value,
            "detail": "the audit seal key signs and its signature verifies"}


def _describe_probe(probe: dict | None) -> str:
    if probe is None:
        return "-"
    if probe["verified"]:
        return f"{probe['algorithm']} with the audit seal key {probe['key_id']}: verified"
    return ("FAILED: " if probe["verified"] is False else "skipped: ") + probe["detail"]


def cmd_public_key(args, config: Config) -> int:
    check_output(args.out)
    service = open_service(args, config)
    key = service.find_key(args.key)
    public = service.keys.public_key(key.key_id)
    encoding = Encoding.DER if args.der else Encoding.PEM
    _write(public.public_bytes(encoding, PublicFormat.SubjectPublicKeyInfo), args.out)
    return 0


def cmd_change_pin(args, config: Config) -> int:
    old = read_pin("current user PIN", USER_PIN_ENV, args.pin_file, fallback_file=config.hsm.user_pin_file,
                   fallback_setting="hsm.user_pin_file")
    new = read_pin("new user PIN", NEW_PIN_ENV, args.new_pin_file, confirm=True)
    label = args.token or config.hsm.token_label
    admin = TokenAdministrator(_module(args, config))
    admin.change_user_pin(label, old, new, PinGuard.for_config(config.hsm, config.state_dir))
    _changed(args, label, "user PIN", f"changed the user PIN of token {label!r}")
    serial = _forget_refusals_of(config, admin, label)
    _warn_if_pin_file_stale(config, label, new)
    recorded = record_without_login(config, USER_PIN_CHANGED, label, f"the user PIN of token {label!r} was changed",
                                    serial=serial)
    return 0 if recorded else UNRECORDED


def cmd_change_so_pin(args, config: Config) -> int:
    old = read_pin("current SO PIN", SO_PIN_ENV, args.so_pin_file)
    new = read_pin("new SO PIN", NEW_PIN_ENV, args.new_pin_file, confirm=True)
    label = args.token or config.hsm.token_label
    admin = TokenAdministrator(_module(args, config))
    admin.change_so_pin(label, old, new, PinGuard.for_config(config.hsm, config.state_dir))
    _changed(args, label, "SO PIN", f"changed the SO PIN of token {label!r}")
    recorded = record_without_login(config, SO_PIN_CHANGED, label, f"the SO PIN of token {label!r} was changed",
                                    serial=_serial_of(admin, label))
    return 0 if recorded else UNRECORDED


def cmd_unblock_pin(args, config: Config) -> int:
    so_pin = read_pin("SO PIN", SO_PIN_ENV, args.so_pin_file)
    new = read_pin("new user PIN", NEW_PIN_ENV, args.new_pin_file, confirm=True)
    label = args.token or config.hsm.token_label
    admin = TokenAdministrator(_module(args, config))
    admin.unblock_user_pin(label, so_pin, new, PinGuard.for_config(config.hsm, config.state_dir))
    _changed(args, label, "user PIN", f"set a new user PIN on token {label!r}")
    serial = _forget_refusals_of(config, admin, label)
    _warn_if_pin_file_stale(config, label, new)
    recorded = record_without_login(config, USER_PIN_UNBLOCKED, label,
                                    f"the security officer set a new user PIN on token {label!r}", serial=serial)
    return 0 if recorded else UNRECORDED


def _warn_if_pin_file_stale(config: Config, label: str, new: Secret) -> None:
    """Say on standard error when the server's PIN file (``hsm.user_pin_file``, for the
    configured token) does not hold the PIN just set: the server would log in with the old one,
    which the token refuses and counts toward its lockout. The file is not written: a PIN file is
    the administrator's, as `hsm init --generate-pins` never overwrites one either."""
    path = config.hsm.user_pin_file
    if label != config.hsm.token_label or path is None or not path.is_file():
        return
    try:
        current = read_secret_file(path, "hsm.user_pin_file").reveal()
    except ConfigurationError:
        current = None
    if current != new.reveal():
        print(f"signserver: note: {path} (hsm.user_pin_file) does not hold the new PIN: write it there before "
              "the server next starts, which would otherwise log in with a PIN the token refuses and counts",
              file=sys.stderr)


def _changed(args, label: str, pin: str, text: str) -> None:
    if args.json:
        print_json({"token": label, "pin": pin, "changed": True})
    else:
        print(text)


def _forget_refusals_of(config: Config, admin: TokenAdministrator, label: str) -> str | None:
    """:func:`_forget_refusals` for the token labelled ``label``; returns its serial number."""
    serial = _serial_of(admin, label)
    if serial is not None:
        _forget_refusals(config, serial, label)
    return serial


def _serial_of(admin: TokenAdministrator, label: str) -> str | None:
    """The serial number of the token labelled ``label``, or None when no slot holds it."""
    return next((s.token_serial for s in admin.slots() if s.token_label == label), None)


def _forget_refusals(config: Config, serial: str, label: str) -> None:
    """The token's user PIN was just set: a PIN it refused before may be the new one, so the
    refusals remembered for it (signserver/hsm/pin_guard.py) no longer hold."""
    if RefusedPins(refused_pins_file(config.state_dir)).forget(serial, label):
        print(f"forgot the PINs token {label!r} refused before ({refused_pins_file(config.state_dir)})",
              file=sys.stderr)


def cmd_csr(args, config: Config) -> int:
    try:
        subject = x509.Name.from_rfc4514_string(args.subject)
    except ValueError as exc:
        raise InvalidArgument(f"cannot read the subject {args.subject!r}: {exc}") from None
    check_output(args.out)
    request = open_service(args, config).certificate_request(args.key, subject, args.signature_algorithm)
    _write(request.public_bytes(Encoding.PEM), args.out)
    return 0


def cmd_import_cert(args, config: Config) -> int:
    try:
        data = args.certificate.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {args.certificate}: {exc.strerror}") from None
    try:
        certificate = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
                       else x509.load_der_x509_certificate(data))
    except ValueError:
        raise InvalidArgument(f"{args.certificate} is not an X.509 certificate (PEM or DER)") from None
    service = open_recording_service(args, config)
    key = service.import_certificate(args.key, certificate)
    serial = format(certificate.serial_number, "x")
    # Recorded once the certificate is stored (token_records.py: a failed append is told, and exits 1).
    recorded = record(service, CERTIFICATE_STORED, key.label, f"certificate {serial} was stored beside key "
                      f"{key.label!r}", key_id=key.key_id, serial=serial,
                      certificate_subject=certificate.subject.rfc4514_string(),
                      sha256=certificate.fingerprint(hashes.SHA256()).hex())
    if args.json:
        print_json({"key": key, "certificate_serial": serial})
    else:
        print(f"stored certificate {serial} beside key {key.label!r}")
    return 0 if recorded else UNRECORDED
