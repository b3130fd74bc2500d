"""``signserver hsm master ...``: master key rotation, and the key ceremony that copies the keys
the tokens of a service share (master keys, the OTP sealing key) to another token (a cluster's
other HSM, a second site) without them ever leaving in clear."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TextIO

from signserver.cli.common import check_output, open_service, positive_int, seconds_up_to
from signserver.cli.output import print_json, print_table
from signserver.cli.pins import read_pin
from signserver.cli.progress import ProgressLine
from signserver.cli.text import ask, text_argument
from signserver.cli.token_records import (KEYS_EXPORTED, KEYS_IMPORTED, TRANSPORT_KEY_GENERATED, UNRECORDED,
                                          open_recording_service, record)
from signserver.config import USER_PIN_ENV, Config
from signserver.errors import InvalidArgument, NotFound
from signserver.hsm import ceremony
from signserver.hsm.master_keys import MasterKeyInfo
from signserver.hsm.module import use_softhsm_config
from signserver.hsm.pin_guard import PinGuard
from signserver.hsm.sealing import SealingKey

# Master rotation loads SQLAlchemy: the commands import it, so that building the parser (every
# command's --help) does not.
if TYPE_CHECKING:
    from signserver.accounts.master_rotation import MasterRotation, MasterStatus, RewrapCounts
    from signserver.service import SignService

SO_PIN_ENV = "SIGNSERVER_HSM_SO_PIN"
OPERATOR = "operator:cli"
RETIRE_GRACE_SECONDS = 60.0  # MasterRotation's RETIRE_GRACE (tests/test_cli_imports.py keeps them equal)
# The command waits the grace out in the foreground (time.sleep refuses much longer waits): a day is
# far more than any operation begun under the old key takes.
_grace_seconds = seconds_up_to(86_400.0)

_CEREMONY = """key ceremony (copy the shared keys to another token, never in clear):
  1. on the DESTINATION token, before its server first starts:
        signserver hsm master receive-begin --out transport.pem
  2. carry transport.pem to the source; on the SOURCE token (needs the SO PIN):
        signserver hsm master export --transport transport.pem --out keys.wrapped
     (every master key not retired, and the OTP sealing keys; or name one key to copy it alone)
     and note the check values it prints
  3. carry keys.wrapped back; on the DESTINATION token:
        signserver hsm master import --in keys.wrapped --check-value LABEL=HEX,LABEL=HEX
A wrapped keys file opens only with the transport key of step 1, which never leaves the
destination token and is destroyed by the import: a copied or intercepted file is useless."""


def add_parser(hsm_parser: argparse.ArgumentParser) -> None:
    """Add ``master`` to the ``hsm`` command group."""
    hsm_commands = next(a for a in hsm_parser._actions if isinstance(a, argparse._SubParsersAction))
    master = hsm_commands.add_parser(
        "master", help="master keys: status, rotation, and the key ceremony between tokens",
        description="Master keys wrap the holders' signing data packages.", epilog=_CEREMONY,
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    commands = master.add_subparsers(dest="master_command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--module", type=Path, help="PKCS#11 module (default: hsm.module, SoftHSM's)")
    common.add_argument("--token", type=text_argument, help="token label (default: hsm.token_label)")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    common.add_argument("--pin-file", type=Path,
                        help=f"file holding the user PIN (else ${USER_PIN_ENV}, hsm.user_pin_file, or a prompt)")
    passes = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    passes.add_argument("--batch", type=positive_int, default=200, help="packages re-wrapped per batch (default 200)")

    def command(name, handler, help, *parents, **extra):
        parser = commands.add_parser(name, help=help, parents=[common, *parents], allow_abbrev=False, **extra)
        parser.set_defaults(handler=handler)
        return parser

    command("status", cmd_status, "master keys, their states and check values, packages per key, and "
                                  "whether this token holds each")

    p = command("rotate", cmd_rotate, "generate a new master key, make it active, re-wrap every package "
                                      "under it and destroy the old one", passes)
    p.add_argument("--no-wait", action="store_true",
                   help="only rotate: packages move on their next use and by the server's background pass")
    p.add_argument("--prepare", action="store_true",
                   help="several tokens: only generate the key (pending); copy it to the other tokens with the "
                        "key ceremony, then run `activate`")
    p.add_argument("--grace-seconds", type=_grace_seconds, default=RETIRE_GRACE_SECONDS,
                   help="how long operations begun under the old key may still store packages before it is "
                        "destroyed (default %(default)s); recorded with the key, so that a server's background "
                        "work honours it too")

    p = command("activate", cmd_activate, "make a pending master key the active one (every token must hold "
                                          "it)", passes)
    p.add_argument("label", type=text_argument, help="the pending master key, e.g. signserver-master-2")
    p.add_argument("--no-wait", action="store_true", help="only activate; do not run the re-wrap pass")
    p.add_argument("--grace-seconds", type=_grace_seconds, default=RETIRE_GRACE_SECONDS, help=argparse.SUPPRESS)

    command("rewrap", cmd_rewrap, "re-wrap the packages of retiring master keys under the active one", passes)
    p = command("retire", cmd_retire, "destroy the retiring master keys no package needs any more (and retired "
                                      "ones this token still holds)")
    p.add_argument("--orphans", action="store_true",
                   help="also destroy the master keys on this token that the database never recorded (made by a "
                        "rotation that stopped before recording them; `status` lists them as unrecorded), and "
                        "the keys under a label it records whose check value is not the recorded one (`status`: "
                        "different key); asks for confirmation")
    p.add_argument("--yes", action="store_true", help="with --orphans: destroy them without asking")

    p = command("receive-begin", cmd_receive_begin, "ceremony, DESTINATION token: make a transport key pair and "
                                                    "write its public key")
    p.add_argument("--out", type=Path, required=True, help="where to write the transport public key (PEM)")

    p = command("export", cmd_export, "ceremony, SOURCE token (SO PIN): wrap the shared keys under a "
                                      "destination's transport key", epilog="The file is useless without the "
                                      "destination token's transport key, which never leaves that token.")
    p.add_argument("label", nargs="?", type=text_argument,
                   help="one key to copy, e.g. signserver-master-2 (default: every master key not retired, and "
                        "the OTP sealing key, with its MAC key where it has one)")
    p.add_argument("--transport", type=Path, required=True, help="the destination's transport public key (PEM)")
    p.add_argument("--out", type=Path, required=True, help="where to write the wrapped keys")
    p.add_argument("--so-pin-file", type=Path,
                   help=f"file holding the SO PIN (else ${SO_PIN_ENV}, the state directory's hsm/so-pin, or a prompt)")

    p = command("import", cmd_import, "ceremony, DESTINATION token: unwrap the shared keys with the transport "
                                      "key, check them, destroy the transport key")
    p.add_argument("label", nargs="?", type=text_argument,
                   help="a key the file must hold (every key of the file is imported); names the key of a bare "
                        "--check-value HEX")
    p.add_argument("--in", dest="infile", type=Path, required=True, help="the wrapped keys file")
    p.add_argument("--check-value", required=True, type=text_argument,
                   help="the check values as the source printed them, LABEL=HEX,LABEL=HEX (for a file of one key, "
                        "a bare HEX with the key's label before --in); take them over another channel than the "
                        "file")


# --- rotation -----------------------------------------------------------------------------

def _rotation(args, config: Config, grace: float | None = None,
              check_token: bool = True) -> tuple[SignService, MasterRotation]:
    """The rotation on the configured token and database; with ``check_token``, the token is
    checked to hold the database's active master key.

    No master key is made here: the server makes the first on its first start, and one made on
    a destination token before the key ceremony would make its import refuse the source's.

    Raises: ConfigurationError: the token lacks the active master key, or holds another of its
        label. StoreUnavailable, HsmError.
    """
    from signserver.accounts.master_rotation import MasterRotation

    service = open_service(args, config, with_database=True)
    if check_token and _has_active_master(service):
        service.packages.ensure_master()  # only checks: there is one
    # --grace-seconds is finite and not negative: its argparse type saw to it.
    extra = {} if grace is None else {"retire_grace": datetime.timedelta(seconds=grace)}
    return service, MasterRotation(service.database, service.packages, service.master_keys, service.audit,
                                   service.clock, **extra)


def _has_active_master(service: SignService) -> bool:
    with service.database.read() as conn:
        try:
            service.packages.active_master(conn)
        except NotFound:
            return False
    return True


UNRECORDED = "unrecorded"


@dataclass(frozen=True)
class UnrecordedMaster:
    """A master key on this token that the database never recorded, shaped as a MasterStatus."""

    label: str
    state: str  # UNRECORDED
    check_value: str
    created_at: None  # not known: a token keeps no date of a key's making, and the database no row
    retired_at: None
    packages: int  # 0: no package can name a key the database does not know
    on_token: str  # "yes"
    retire_after: None


def cmd_status(args, config: Config) -> int:
    # Also on a token that lacks a key: saying so is what the ON THIS TOKEN column is for.
    service, rotation = _rotation(args, config, check_token=False)
    masters = rotation.status()
    unrecorded = [UnrecordedMaster(info.label, UNRECORDED, info.check_value, None, None, 0, "yes", None)
                  for info in _unrecorded(service, {m.label for m in masters})]
    if args.json:
        print_json([*masters, *unrecorded])
        return 0
    # RETIRED: when a retired key went; for a retiring one, the earliest it may go (its rotation's
    # grace), the retirement waiting besides for every package to leave it.
    print_table(["LABEL", "STATE", "CHECK VALUE", "PACKAGES", "ON THIS TOKEN", "CREATED", "RETIRED"],
                [*([m.label, m.state, m.check_value or "-", m.packages, m.on_token,
                    m.created_at.isoformat(timespec="seconds"), _retirement(m)] for m in masters),
                 *([m.label, m.state, m.check_value or "-", "-", m.on_token,
                    "unknown", ""] for m in unrecorded)],
                empty="no master key yet (the server makes the first on its first start)")
    if any(m.on_token == "different key" for m in masters):
        print("\ndifferent key: this token holds another key than the database records under that label (a rotation "
              "on this token stopped before recording its key, and one on another token took the label); no "
              "package uses it. `signserver hsm master retire --orphans` destroys it; then copy the recorded key "
              "here with the key ceremony.")
    if unrecorded and masters:
        print(f"\n{UNRECORDED}: on this token, but never recorded in the database (a rotation stopped between "
              "making the key and recording it); no package uses it. "
              "`signserver hsm master retire --orphans` destroys it.")
    elif unrecorded:
        print(f"\n{UNRECORDED}: on this token, but the database knows no master key: is this the token's "
              "database? (A token readied by the key ceremony holds keys before its server's first start.)")
    return 0


def _retirement(master: MasterStatus) -> str:
    if master.retired_at is not None:
        return master.retired_at.isoformat(timespec="seconds")
    if master.retire_after is not None:
        return f"not before {master.retire_after.isoformat(timespec='seconds')}"
    return ""


def _unrecorded(service: SignService, known: set[str]) -> list[MasterKeyInfo]:
    """The master keys on this token whose labels the database does not record (``known``).

    Raises: HsmError.
    """
    return [info for info in service.master_keys.on_token() if info.label not in known]


def _recorded(conn) -> dict[str, str]:
    """Every master key the database records, whatever its state: its check value by label.
    Raises: StoreUnavailable."""
    from sqlalchemy import select

    from signserver.store.schema import master_keys

    return dict(conn.execute(select(master_keys.c.label, master_keys.c.check_value)).all())


def _destroy_unrecorded(args, service: SignService) -> tuple[list[str], list[str]] | None:
    """Destroy, after confirmation, the master keys on this token the database never recorded,
    and the keys under a label it records whose check value is not the recorded one (a rotation
    on this token left one under a label a rotation on another token took later: `status` shows
    it as a different key). Returns the labels of either, or None when the operator declined.

    Each is checked against the database again, under the lock a rotation records its key with
    (MasterRotation.rotate checks under it that its key is still there): a key the database records
    is never destroyed.

    Raises: NotFound: the database records no master key at all (it cannot tell a key a rotation
        left from one copied here by the key ceremony). InvalidArgument: no --yes and no terminal.
        StoreUnavailable, HsmError.
    """
    from signserver.accounts.master_rotation import lock_master_keys
    from signserver.hsm.master_keys import master_number
    from signserver.hsm.master_strays import destroy_unlike

    with service.database.read() as conn:
        known = _recorded(conn)
    if not known:
        raise NotFound("the database knows no master key, so it cannot tell a key a rotation left unrecorded from "
                       "one copied here by the key ceremony: nothing destroyed (is this the token's database?)")
    found = [info for info in service.master_keys.on_token()
             if info.label not in known or known[info.label] != info.check_value]
    if not found:
        return [], []
    names = ", ".join(f"{info.label} (check value {info.check_value}"
                      + (f", recorded {known[info.label]})" if info.label in known else ", unrecorded)")
                      for info in found)
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidArgument(f"destroying a master key cannot be undone: pass --yes to confirm ({names})")
        answer = ask(f"Destroy the master keys {_strays_are(found, known)}, {names}, for ever? [y/N] ")
        if answer is None or answer.strip().lower() not in ("y", "yes"):
            return None
    unrecorded, different = [], []
    with service.database.transaction() as conn:
        # Under the lock a rotation records its key with, and which it records a key under only
        # if the key is still there: a key recorded is never destroyed, nor one destroyed recorded.
        lock_master_keys(conn)
        recorded = _recorded(conn)
        for label in sorted({info.label for info in found}, key=master_number):
            if label not in recorded:
                while service.master_keys.present(label):  # every object of that label: none is recorded
                    service.master_keys.destroy(label)
                unrecorded.append(label)
            # Recorded (maybe since the list above: then a rotation's key, which has the recorded
            # check value and stays): only the keys of another check value go.
            elif destroy_unlike(service.keys.session, label, recorded[label]):
                different.append(label)
    return unrecorded, different


def _strays_are(found: list[MasterKeyInfo], known: dict[str, str]) -> str:
    kinds = {info.label in known for info in found}
    return " or ".join(words for recorded, words in ((False, "the database never recorded"),
                                                      (True, "the database records with another check value"))
                       if recorded in kinds)


def cmd_rotate(args, config: Config) -> int:
    _, rotation = _rotation(args, config, args.grace_seconds)
    try:
        label = rotation.rotate(OPERATOR, activate=not args.prepare)
    except KeyboardInterrupt:
        print("\nthe rotation stopped: if it had made its key on the token but not recorded it, "
              f"`signserver hsm master status` lists that key as {UNRECORDED} and "
              "`signserver hsm master retire --orphans` destroys it", file=sys.stderr)
        raise
    if args.prepare:
        _say(args, {"prepared": label}, f"generated {label} (pending): copy it to every other token with the key "
                                        f"ceremony, then run `signserver hsm master activate {label}`")
        return 0
    print(f"{label} is the active master key", file=sys.stderr)
    return _finish(args, rotation, label)


def cmd_activate(args, config: Config) -> int:
    _, rotation = _rotation(args, config, args.grace_seconds)
    rotation.activate(args.label, OPERATOR)
    print(f"{args.label} is the active master key", file=sys.stderr)
    return _finish(args, rotation, args.label)


def _finish(args, rotation: MasterRotation, label: str) -> int:
    """Unless --no-wait: the pass to the end, the grace waited out, a last pass, retirement.

    The grace is waited out as the database records it (MasterRotation.grace_left), which every
    process's retirement reads, not as a span of this process's own: the retirement that follows
    then finds it over."""
    if args.no_wait:
        _say(args, {"active": label}, f"{label} is active; packages move on their next use and by the server's "
                                      "background pass, and the old key goes when none needs it")
        return 0
    try:
        counts = rotation.rewrap_pass(args.batch, _progress_line())
        left = rotation.grace_left().total_seconds()
        if left > 0:
            print(f"waiting {left:.0f} s for operations begun under the old key", file=sys.stderr)
            time.sleep(left)
            counts = _add(counts, rotation.rewrap_pass(args.batch, _progress_line()))
    except KeyboardInterrupt:
        # The rotation stands: running `rotate` again would make yet another key.
        print(f"\n{label} stays the active master key; finish with `signserver hsm master rewrap`, then "
              "`signserver hsm master retire` (the server's background pass finishes it too)", file=sys.stderr)
        raise
    retired = rotation.retire_unused(OPERATOR)
    return _report(args, counts, retired, active=label)


def cmd_rewrap(args, config: Config) -> int:
    _, rotation = _rotation(args, config)
    counts = rotation.rewrap_pass(args.batch, _progress_line())
    return _report(args, counts, [])


def cmd_retire(args, config: Config) -> int:
    service, rotation = _rotation(args, config)
    unrecorded: list[str] = []
    different: list[str] = []
    if args.orphans:  # first: a declined confirmation changes nothing
        declined = _destroy_unrecorded(args, service)
        if declined is None:
            print("nothing destroyed", file=sys.stderr)  # beside the question: stdout may be JSON
            return 1
        unrecorded, different = declined
    retired = rotation.retire_unused(OPERATOR)
    destroyed = rotation.destroy_retired()
    value = {"retired": retired, "destroyed_on_this_token": destroyed}
    text = f"retired: {', '.join(retired) or 'none'}; destroyed on this token: {', '.join(destroyed) or 'none'}"
    if args.orphans:
        value["destroyed_unrecorded"] = unrecorded
        value["destroyed_different"] = different
        text += (f"; destroyed unrecorded: {', '.join(unrecorded) or 'none'}; destroyed other keys under recorded "
                 f"labels: {', '.join(different) or 'none'}")
    _say(args, value, text)
    return 0


def _report(args, counts: RewrapCounts, retired: list[str], active: str | None = None) -> int:
    text = (f"re-wrapped {counts.rewrapped} packages ({counts.already_moved} had moved on their own); "
            f"{counts.remaining} remain under retiring master keys")
    if counts.failed:
        text += (f"; {counts.failed} did not re-wrap (altered, or their master key is not on this token): "
                 + ", ".join(counts.failed_key_ids))
    if retired:
        text += f"; retired and destroyed {', '.join(retired)}"
    _say(args, {"active": active, "counts": counts, "retired": retired}, text)
    return 1 if counts.failed else 0


def _add(first: RewrapCounts, second: RewrapCounts) -> RewrapCounts:
    from signserver.accounts.master_rotation import RewrapCounts

    return RewrapCounts(rewrapped=first.rewrapped + second.rewrapped,
                        already_moved=first.already_moved + second.already_moved,
                        failed=second.failed, failed_key_ids=second.failed_key_ids, remaining=second.remaining)


def _progress_line(clock: Callable[[], float] = time.monotonic, stream: TextIO | None = None):
    """The pass's progress on standard error, every few seconds with its rate (as the other long
    commands report theirs, signserver/cli/progress.py), on a terminal or not, and once every
    package is re-wrapped: the pass reports each batch."""
    line = ProgressLine(clock, stream)
    line.due()  # the pass starts now

    def show(done: int, total: int, per_second: float) -> None:
        if line.due() is not None or done >= total:
            line.show(f"re-wrapped {done}/{total} packages ({per_second:.0f}/s)")
    return show


# --- the key ceremony ---------------------------------------------------------------------

def cmd_receive_begin(args, config: Config) -> int:
    check_output(args.out, new=True)  # before the transport key is made
    service = open_recording_service(args, config)
    transport = ceremony.begin_receiving(service.keys.session, config.hsm.transport_key_bits)
    try:
        _write_new(args.out, transport.public_pem)
    except BaseException:  # Ctrl-C included: a pair whose public half nobody has only clutters the token
        ceremony.discard_transport_pair(service.keys.session, transport.fingerprint)
        raise
    # Recorded once its public half is out: a pair discarded above was never offered to anyone.
    recorded = record(service, TRANSPORT_KEY_GENERATED, transport.label,
                      f"the transport key pair {transport.label} was generated", sha256=transport.fingerprint)
    _say(args, {"transport_key": transport.label, "sha256": transport.fingerprint, "out": str(args.out)},
         f"wrote the transport public key {transport.label} to {args.out} (SHA-256 {transport.fingerprint});\n"
         "give it to the source token's administrators, and compare this fingerprint with theirs by phone")
    return 0 if recorded else UNRECORDED


def cmd_export(args, config: Config) -> int:
    try:
        transport_pem = args.transport.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {args.transport}: {exc.strerror}") from None
    ceremony.read_transport_key(transport_pem, config.hsm.transport_key_bits)  # refused before any PIN is asked
    check_output(args.out, new=True)
    so_pin = read_pin("SO PIN", SO_PIN_ENV, args.so_pin_file, fallback_file=config.state_dir / "hsm" / "so-pin",
                      fallback_setting="state_dir")  # the state directory's hsm/so-pin
    service = open_recording_service(args, config)
    sealing = SealingKey(service.keys.session)
    labels = [args.label] if args.label else _shared_labels(service, sealing)
    # The user PIN and the keys (present, and copyable), checked before the SO acts.
    ceremony.describe_shared(service.keys.session, service.master_keys, sealing, labels)
    service.keys.session.close()  # one login at a time: the security officer's comes next
    use_softhsm_config(config.hsm.softhsm2_conf)
    module = args.module or config.hsm.module
    try:
        # In the try: a Ctrl-C just after the security officer stored the trusted key must remove it too.
        trusted = ceremony.trust_transport_key(module, args.token or config.hsm.token_label, so_pin, transport_pem,
                                               config.hsm.transport_key_bits,
                                               PinGuard.for_config(config.hsm, config.state_dir))
        wrapped = ceremony.export_keys(service.keys.session, service.master_keys, sealing, labels, trusted)
    except BaseException:  # Ctrl-C included
        ceremony.discard_trusted_key(service.keys.session)  # never leave a trusted key behind
        raise
    _write_new(args.out, wrapped.to_bytes())
    check_values = ceremony.check_values_text(wrapped.keys)
    # Recorded once the file is written (token_records.py: a failed append is told, and exits 1).
    recorded = record(service, KEYS_EXPORTED, ",".join(wrapped.labels), f"{', '.join(wrapped.labels)} were "
                      f"exported to {args.out}", transport_sha256=trusted,
                      keys=[{"label": key.label, "kind": key.kind, "check_value": key.check_value}
                            for key in wrapped.keys])
    _say(args, {"keys": [{"label": key.label, "kind": key.kind, "check_value": key.check_value}
                         for key in wrapped.keys],
                "check_values": check_values, "transport_sha256": trusted, "out": str(args.out)},
         f"wrote {', '.join(wrapped.labels)} wrapped for the transport key {trusted} to {args.out};\n"
         f"check values {check_values}: give them to the destination over another channel "
         "(`import --check-value`)")
    return 0 if recorded else UNRECORDED


def _shared_labels(service: SignService, sealing: SealingKey) -> list[str]:
    """Every key the other tokens need: the master keys some package may still use, and the
    sealing key of the OTP seeds (with its MAC key, on a token that holds one).

    Raises: NotFound: the database knows no master key yet. UnsupportedAlgorithm, HsmError.
    """
    from signserver.accounts.master_rotation import RETIRED

    masters = [m.label for m in service.master_rotation.status() if m.state != RETIRED]
    if not masters:
        raise NotFound("no master key yet: start this token's server once (it makes the first), then export")
    info = sealing.describe()
    return [*masters, sealing.label, *([info.mac.label] if info.mac else [])]


def cmd_import(args, config: Config) -> int:
    try:
        wrapped = ceremony.WrappedKeys.from_bytes(args.infile.read_bytes())
    except OSError as exc:
        raise InvalidArgument(f"cannot read {args.infile}: {exc.strerror}") from None
    if args.label and args.label not in wrapped.labels:
        raise InvalidArgument(f"{args.infile} holds {', '.join(wrapped.labels)}, not {args.label!r}")
    service = open_recording_service(args, config)
    imported = ceremony.import_keys(service.keys.session, wrapped, args.check_value, args.label)
    # Recorded once the keys are stored (token_records.py: a failed append is told, and exits 1).
    recorded = record(service, KEYS_IMPORTED, ",".join(key.label for key in imported),
                      f"{', '.join(key.label for key in imported)} were imported",
                      keys=[{"label": key.label, "kind": key.kind, "check_value": key.check_value,
                             "stored": key.stored} for key in imported])
    _say(args, {"keys": [{"label": key.label, "kind": key.kind, "check_value": key.check_value,
                          "stored": key.stored} for key in imported]},
         "\n".join(f"{'imported' if key.stored else 'already held'} {key.label} (check value {key.check_value})"
                   for key in imported) + "\nthe transport key pair is destroyed")
    return 0 if recorded else UNRECORDED


def _write_new(path: Path, data: bytes) -> None:
    try:
        with open(path, "xb") as out:  # never over another ceremony's file
            out.write(data)
    except FileExistsError:
        raise InvalidArgument(f"{path} exists: choose another file") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot write {path}: {exc.strerror}") from None


def _say(args, value, text: str) -> None:
    if args.json:
        print_json(value)
    else:
        print(text)
