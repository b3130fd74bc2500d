"""``make bench``: run the benchmarks and print a Markdown table; JSON goes to benchmarks/results/.

    python -m benchmarks [--seconds N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from benchmarks import grpc_signing, hsm_rate
from benchmarks.harness import fresh_state_dir, markdown_table
from signserver.config import load_config
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.service import SignService


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    args = parser.parse_args()

    state = fresh_state_dir()
    config = load_config(environ={"SIGNSERVER_STATE_DIR": str(state)})
    service = SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}))
    print(f"signserver benchmarks: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {args.seconds:g} s per figure\n")

    rows, figures = [], []
    try:
        service.prepare_database()
        measured = hsm_rate.run(service, args.seconds)
        rsa_raw = next(raw for algorithm, raw, _ in measured if algorithm is KeyAlgorithm.RSA_2048)
        over_grpc = grpc_signing.run(service, state, args.seconds)
    finally:
        service.close()
        shutil.rmtree(state, ignore_errors=True)

    def add(rate, raw, unit):
        rows.append([rate.name, f"{rate.per_second:,.0f} {unit}", f"{rate.per_second / raw.per_second:.2f}"])
        figures.append({"name": rate.name, "per_second": rate.per_second, "unit": unit,
                        "ratio_to_raw": rate.per_second / raw.per_second})

    for _algorithm, raw, store in measured:
        add(raw, raw, "signatures/s")
        add(store, raw, "signatures/s")
    for rate in over_grpc:
        add(rate, rsa_raw, "calls/s" if rate.name.startswith("Authorize") else "signatures/s")
    print(markdown_table(["figure", "rate", "ratio to raw (same algorithm; RSA-2048 for gRPC)"], rows))

    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(),
                                "seconds_per_figure": args.seconds, "figures": figures}, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
