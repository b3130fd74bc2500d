"""Entry point of the ``signserver`` command; maps errors to messages and exit codes in one place."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from signserver import __version__
from signserver.cli import ra

# The core's modules are imported in the functions below, after `signserver ra ...` (the RA, a
# separate program) has been handed over: the RA's process never loads them.

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h


def build_parser() -> argparse.ArgumentParser:
    from signserver.cli import accounts, audit, ca, documents, hsm, master, store

    parser = argparse.ArgumentParser(prog="signserver", description="HSM-backed remote signing server",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"signserver {__version__}")
    parser.add_argument("--config", type=Path,
                        help="configuration file (default: $SIGNSERVER_CONFIG or ./signserver.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gRPC server", allow_abbrev=False)
    serve.add_argument("--demo", action="store_true", help="on the first start, create a demonstration holder")
    serve.add_argument("--workers", type=int, default=None, metavar="N",
                       help="worker processes sharing the port (default: one per CPU)")
    serve.set_defaults(handler=cmd_serve)

    hsm.add_parser(commands)
    master.add_parser(commands.choices["hsm"])
    accounts.add_parsers(commands)
    audit.add_parser(commands)
    ca.add_parser(commands)
    documents.add_parsers(commands)
    store.add_parser(commands)
    commands.add_parser("ra", help="the registration authority (see signserver ra --help)", add_help=False)
    return parser


def cmd_serve(args, config) -> int:
    from signserver.errors import InvalidArgument
    from signserver.grpc_api.supervisor import serve  # imported here: only this command needs gRPC

    if args.workers is not None and not 1 <= args.workers <= 64:
        raise InvalidArgument("--workers takes 1 to 64")
    serve(config, demo=args.demo, workers=args.workers)
    return 0


def main(argv: list[str] | None = None) -> int:
    ra_arguments = ra.ra_arguments(sys.argv[1:] if argv is None else argv)
    if ra_arguments is not None:
        return ra.run(ra_arguments)
    from signserver.config import load_config
    from signserver.errors import ConfigurationError, SignServerError
    from signserver.monitoring.logs import configure_logging

    args = build_parser().parse_args(argv)
    configure_logging(verbose=args.verbose)  # text until the configuration says otherwise
    config = None
    try:
        config = load_config(args.config)
        configure_logging(json_lines=config.logging.format == "json", verbose=args.verbose, calls=config.logging.calls)
        return args.handler(args, config)
    except ConfigurationError as exc:
        print(f"signserver: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SignServerError as exc:
        print(f"signserver: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return EXIT_ERROR
    except OSError as exc:
        # The last line of defence: commands check their files before they change anything, and
        # say so as SignServerErrors. A configuration file that cannot be read is a configuration
        # error, as a missing one is.
        print(f"signserver: {_os_error(exc)}", file=sys.stderr)
        return EXIT_CONFIG if config is None else EXIT_ERROR
    except KeyboardInterrupt:
        print("signserver: interrupted", file=sys.stderr)
        return 130


def _os_error(exc: OSError) -> str:
    """``what: why`` in one line, e.g. ``/srv/out.pem: No such file or directory``."""
    why = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return why
    what = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{what}: {why}"


def command() -> None:
    """The ``signserver`` console command: :func:`main`, then exit with its status. A Ctrl-C once
    the command has ended has nothing left to stop; left to Python, one that lands while the
    interpreter tears down (its exit handlers run) is printed as a traceback. Not in main() itself:
    a test process that calls main() keeps its own Ctrl-C."""
    try:
        status = main()
    finally:  # argparse's --help and --version end main() with SystemExit
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":
    command()
