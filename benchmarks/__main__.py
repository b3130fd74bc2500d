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

from benchmarks import grpc_signing, hsm_rate, pdf_signing
from benchmarks.harness import fresh_state_dir, markdown_table
from signserver.config import load_config
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.pades.sample import sample_pdf
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
        over_grpc, documents, large = grpc_signing.run(service, state, args.seconds)
        baseline = pdf_signing.software_baseline(sample_pdf(1), args.seconds)
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

    pdf_rows = []
    for latencies in [baseline, *documents]:
        pdf_rows.append([latencies.name, f"{latencies.per_second:,.1f}",
                         f"{latencies.per_second / baseline.per_second:.2f}",
                         " / ".join(f"{latencies.percentile(p):,.0f}" for p in (50, 95, 99))])
        figures.append({"name": latencies.name, "per_second": latencies.per_second, "unit": "documents/s",
                        "ratio_to_software_pyhanko": latencies.per_second / baseline.per_second,
                        "p50_ms": latencies.percentile(50), "p95_ms": latencies.percentile(95),
                        "p99_ms": latencies.percentile(99)})
    print()
    print(markdown_table(["document figure", "documents/s", "ratio to pyHanko + software key",
                          "p50 / p95 / p99 ms"], pdf_rows))
    invisible = {d.name.replace("invisible", "X"): d for d in documents if "invisible" in d.name}
    for visible in (d for d in documents if "visible CJK" in d.name):
        match = invisible.get(visible.name.replace("visible CJK stamp", "X"))
        if match:
            print(f"visible CJK stamp vs invisible, {visible.name.split(', ', 2)[2]}: "
                  f"{(match.per_second / visible.per_second - 1) * 100:+.0f} % time per document")

    seconds, before, after = large
    print(f"\nA 100 MB PDF over SignPdf (B-LT): {seconds:.1f} s; server peak RSS {before:.0f} MB before, "
          f"{after:.0f} MB after")
    figures.append({"name": "SignPdf 100 MB", "seconds": seconds, "server_peak_rss_mb_before": before,
                    "server_peak_rss_mb_after": after})

    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(),
                                "seconds_per_figure": args.seconds, "figures": figures}, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
