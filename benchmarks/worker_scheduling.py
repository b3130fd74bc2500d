"""SignHash from a server whose workers are batch work (SCHED_BATCH, the default) beside one
started with ``[server] batch_scheduling = false`` (the kernel's ordinary policy), alternately.

    python -m benchmarks.worker_scheduling [--seconds 8]

Both servers sign with the same token, each with a database and holder of its own; each figure is
measured ordinary, batch, batch, ordinary (load.alternated), half the time each, while the other
server idles. Besides the rates, the workers' CPU per call and the p99.
"""

from __future__ import annotations

import argparse
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from benchmarks import load
from benchmarks.grpc_signing import served_holder
from benchmarks.harness import (children, cpu_seconds, fresh_state_dir, markdown_table, service_on_token,
                                token_environ)
from benchmarks.store_signing import CONCURRENCY, STORE_SECONDS_AT_LEAST, warm_up

POLICIES = {"ordinary scheduling": "false", "workers as batch work": "true"}  # batch_scheduling
DIGESTS = (1, 50)


@dataclass(frozen=True)
class Measured:
    result: load.LoadResult
    worker_cpu_us_per_call: float


def run(token_state: Path, seconds: float) -> dict[tuple[int, str], Measured]:
    """Both servers for each of DIGESTS digests per call, at concurrency 8, ``seconds`` each (at
    least STORE_SECONDS_AT_LEAST), signing with ``token_state``'s token."""
    seconds = max(seconds, STORE_SECONDS_AT_LEAST)
    found = {}
    with ExitStack() as stack:
        servers = {}
        for name, setting in POLICIES.items():
            state = token_state / f"scheduling-{setting}"
            service = service_on_token(state, token_state)
            try:
                service.prepare_database()
                server, target = served_holder(service, state, environ={
                    **token_environ(token_state), "SIGNSERVER_SERVER_BATCH_SCHEDULING": setting})
            finally:
                service.close()
            stack.callback(server.stop)
            servers[name] = server, target
            warm_up(target)

        def measured(name: str, digests: int):
            server, target = servers[name]
            return lambda half: load.run_load(
                f"SignHash, {digests} digest(s)/call, {name}", target, load.hash_signer(digests), CONCURRENCY, half,
                window_probe=lambda: sum(map(cpu_seconds, children(server.process.pid))))
        for digests in DIGESTS:
            names = list(POLICIES)
            results = load.alternated(measured(names[0], digests), measured(names[1], digests), seconds * 2)
            for name, result in zip(names, results):
                calls = result.operations / digests
                found[digests, name] = Measured(result, (result.in_window or 0.0) / calls * 1e6 if calls else 0.0)
    return found


def table(found: dict[tuple[int, str], Measured]) -> str:
    ordinary, batch = POLICIES
    rows = []
    for digests in DIGESTS:
        first, second = found[digests, ordinary], found[digests, batch]
        rows.append([f"SignHash, {digests} digest(s)/call, concurrency {CONCURRENCY}",
                     f"{first.result.per_second:,.0f} sig/s", f"{second.result.per_second:,.0f} sig/s",
                     f"{second.result.per_second / first.result.per_second:.3f}",
                     f"{first.worker_cpu_us_per_call:,.0f} / {second.worker_cpu_us_per_call:,.0f}",
                     f"{first.result.percentile(99):,.1f} / {second.result.percentile(99):,.1f}"])
    return markdown_table(["figure", ordinary, f"{batch} (SCHED_BATCH)", "ratio batch / ordinary",
                           "workers' CPU µs per call, ordinary / batch", "p99 ms, ordinary / batch"], rows)


def figures(found: dict[tuple[int, str], Measured]) -> list[dict]:
    return [{"name": m.result.name, "per_second": m.result.per_second,
             "worker_cpu_us_per_call": m.worker_cpu_us_per_call, "p99_ms": m.result.percentile(99)}
            for m in found.values()]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker_scheduling")
    parser.add_argument("--seconds", type=float, default=STORE_SECONDS_AT_LEAST)
    args = parser.parse_args()
    token_state = fresh_state_dir()
    try:
        print(table(run(token_state, args.seconds)))
    finally:
        shutil.rmtree(token_state, ignore_errors=True)


if __name__ == "__main__":
    main()
