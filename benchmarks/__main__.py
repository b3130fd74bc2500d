"""``make bench``: measure, print Markdown tables, write JSON and a PNG chart to benchmarks/results/.

    python -m benchmarks [--seconds N]

Every figure is measured in the same run and compared with the raw HSM rate (python-pkcs11's
sign on a key handle under the lock, one thread, one process): SignHash and Authorize against
the RSA-2048 rate measured just before and just after each of them (the machine's speed drifts
within a run), those at concurrency 8 also against the raw rate on every core at once
(hsm_rate.raw_on_every_core: what the cores give together, and the load uses them all), the
targets' SignHash figures from the Python clients and from the native one
(benchmarks/native_load.py, built first), documents against pyHanko's plain sign_pdf with a software key;
SignHash on PostgreSQL against SQLite and through nginx against one node (benchmarks/store_signing.py);
database bytes per signature on both stores, before and after a prune (benchmarks/store_growth.py);
SignHash with the workers as batch work for the kernel's scheduler against its ordinary policy
(benchmarks/worker_scheduling.py); the holder-count figures (benchmarks/holder_count.py) with many
holders against a hundred.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from benchmarks import (grpc_signing, holder_count, hsm_rate, native_load, pdf_signing, store_growth, store_signing,
                        worker_scheduling)
from benchmarks.harness import RESULTS, fresh_state_dir, markdown_table
from signserver.config import load_config
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.pades.sample import sample_pdf
from signserver.service import SignService

RAW_PROBE_SECONDS = 1.0  # the raw rate measured before and after each SignHash and Authorize figure


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    args = parser.parse_args()
    began = time.monotonic()
    native_load.binary()  # built now, or the reason it cannot be, before minutes of measuring

    state = fresh_state_dir()
    config = load_config(environ={"SIGNSERVER_STATE_DIR": str(state)})
    service = SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}))
    print(f"signserver benchmarks: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{args.seconds:g} s per figure, server with {os.cpu_count()} workers\n")
    try:
        service.prepare_database()
        raw_rates = hsm_rate.run(service, args.seconds)
        loads, csc_pairs, documents, (large_seconds, rss_before, rss_after, worker_rss) = grpc_signing.run(
            service, state, args.seconds, hsm_rate.raw_probe(service, RAW_PROBE_SECONDS),
            lambda: hsm_rate.raw_on_every_core(state, RAW_PROBE_SECONDS))
        baseline = pdf_signing.software_baseline(sample_pdf(1), args.seconds)
        stores = store_signing.run(state, args.seconds)  # servers, a PostgreSQL cluster and nodes of its own
        growths = store_growth.run(state)  # servers and a PostgreSQL cluster of its own
        scheduling = worker_scheduling.run(state, args.seconds)  # a server of its own
        holders = holder_count.run(service, state)  # last: it adds 100,000 holders to the database
    finally:
        service.close()
        shutil.rmtree(state, ignore_errors=True)

    figures = signing_figures(raw_rates, loads)

    csc_rows = []
    for grpc_result, csc_result in csc_pairs:
        ratio = csc_result.per_second / grpc_result.per_second
        for result in (grpc_result, csc_result):
            csc_rows.append([result.name, f"{result.per_second:,.0f} sig/s",
                             f"{ratio:.2f}" if result is csc_result else "1.00",
                             " / ".join(f"{result.percentile(p):,.1f}" for p in (50, 95, 99))])
        figures.append({"name": csc_result.name, "per_second": csc_result.per_second, "ratio_to_grpc": ratio,
                        "grpc_per_second": grpc_result.per_second, "p50_ms": csc_result.percentile(50),
                        "p99_ms": csc_result.percentile(99)})
    print()
    print(markdown_table(["CSC figure", "rate", "ratio to gRPC SignHash", "p50 / p95 / p99 ms"], csc_rows))

    pdf_rows = []
    for latencies in [baseline, *documents]:
        ratio = latencies.per_second / baseline.per_second
        pdf_rows.append([latencies.name, f"{latencies.per_second:,.1f}", f"{ratio:.2f}",
                         " / ".join(f"{latencies.percentile(p):,.0f}" for p in (50, 95, 99))])
        figures.append({"name": latencies.name, "per_second": latencies.per_second, "unit": "documents/s",
                        "ratio_to_software_pyhanko": ratio, "p50_ms": latencies.percentile(50),
                        "p95_ms": latencies.percentile(95), "p99_ms": latencies.percentile(99)})
    print()
    print(markdown_table(["document figure", "documents/s", "ratio to pyHanko + software key",
                          "p50 / p95 / p99 ms"], pdf_rows))
    invisible = {d.name.replace("invisible", "X"): d for d in documents if "invisible" in d.name}
    for visible in (d for d in documents if "visible CJK" in d.name):
        match = invisible.get(visible.name.replace("visible CJK stamp", "X"))
        if match:
            print(f"visible CJK stamp vs invisible, {visible.name.split(', ', 2)[2]}: "
                  f"{(match.per_second / visible.per_second - 1) * 100:+.0f} % time per document")
    print(f"\nA 100 MB PDF over SignPdf (B-LT): {large_seconds:.1f} s; server peak RSS {rss_before:.0f} MB before, "
          f"{rss_after:.0f} MB after")
    print("Worker resident memory after the run, at rest: " + ", ".join(f"{m:.0f} MB" for m in worker_rss))
    figures.append({"name": "SignPdf 100 MB", "seconds": large_seconds, "server_peak_rss_mb_before": rss_before,
                    "server_peak_rss_mb_after": rss_after, "worker_rss_mb": worker_rss})

    print("\nSignHash on PostgreSQL beside SQLite, and through nginx in front of two nodes beside one node "
          "(benchmarks/store_signing.py):\n")
    print(store_signing.tables(stores))
    figures += store_signing.figures(stores)

    print("\nSignHash with the workers' threads as batch work (SCHED_BATCH, the default) beside the kernel's "
          "ordinary policy (`[server] batch_scheduling = false`), a server of each measured alternately "
          "(benchmarks/worker_scheduling.py):\n")
    print(worker_scheduling.table(scheduling))
    figures += worker_scheduling.figures(scheduling)

    print("\nDatabase bytes per signature (Authorize and SignHash of one digest), before and after "
          "`signserver store prune` (benchmarks/store_growth.py):\n")
    print(store_growth.tables(growths))
    figures += store_growth.figures(growths)

    authorize = next((r for r in loads if r.name.startswith("Authorize")), None)
    count_table, cost_table, count_figures = holder_count.tables(
        holders, authorize.percentile(50) if authorize else None)
    print("\n" + holder_count.CAPTION + "\n")
    print(count_table)
    print()
    print(cost_table)
    figures.append(count_figures)

    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"bench-{stamp}.json").write_text(json.dumps(
        {"machine": platform.machine(), "cpus": os.cpu_count(), "seconds_per_figure": args.seconds,
         "figures": figures}, indent=2, ensure_ascii=False))
    _chart(figures, RESULTS / f"bench-{stamp}.png")
    print(f"\nwrote {RESULTS / f'bench-{stamp}.json'} and .png in {time.monotonic() - began:.0f} s")


def signing_figures(raw_rates: list, loads: list) -> list[dict]:
    """Print the table of the raw rates and the Authorize and SignHash figures (each against the
    raw RSA-2048 rate measured around it, else the one measured first, and those at concurrency 8
    against the raw rate on every core at once too); returns their figures."""
    raw = next(r for algorithm, r, _ in raw_rates if algorithm is KeyAlgorithm.RSA_2048)
    figures, rows = [], []
    for _algorithm, measured_raw, store in raw_rates:
        for rate in (measured_raw, store):
            ratio = rate.per_second / measured_raw.per_second
            rows.append([rate.name, f"{rate.per_second:,.0f} sig/s", "-", f"{ratio:.2f}", "-", "-"])
            figures.append({"name": rate.name, "per_second": rate.per_second, "ratio_to_raw": ratio})
    for result in loads:
        unit = "calls/s" if result.name.startswith("Authorize") else "sig/s"
        reference = result.raw_around or raw.per_second
        ratio = result.per_second / reference
        latency = " / ".join(f"{result.percentile(p):,.1f}" for p in (50, 95, 99))
        figure = {"name": result.name, "per_second": result.per_second, "unit": unit,
                  "raw_per_second_around": reference, "ratio_to_raw": ratio,
                  "p50_ms": result.percentile(50), "p95_ms": result.percentile(95), "p99_ms": result.percentile(99)}
        every_core = "-"
        if result.every_core_around:
            figure.update(raw_every_core_around=result.every_core_around,
                          ratio_to_raw_every_core=result.per_second / result.every_core_around)
            every_core = (f"{figure['ratio_to_raw_every_core']:.2f} (the cores gave "
                          f"{result.every_core_around / reference:.2f}x one)")
        rows.append([result.name, f"{result.per_second:,.0f} {unit}", f"{reference:,.0f} sig/s", f"{ratio:.2f}",
                     every_core, latency])
        figures.append(figure)
    print(markdown_table(["figure", "rate", "raw RSA-2048 around it", "ratio to raw RSA-2048",
                          "ratio to raw on every core at once", "p50 / p95 / p99 ms"], rows))
    spread = [r.raw_around for r in loads if r.raw_around]
    if spread:
        print(f"\nThe raw RSA-2048 rate measured around the figures above ranged from {min(spread):,.0f} to "
              f"{max(spread):,.0f} sig/s (at the start: {raw.per_second:,.0f}); each ratio is to its own.")
    gave = [r.every_core_around / r.raw_around for r in loads if r.every_core_around and r.raw_around]
    if gave:
        print(f"The targets' ratios are to one core's raw rate while their load (the workers and the clients) "
              f"uses every core: one process signing on each core gave {min(gave):.2f} to {max(gave):.2f} times "
              f"one core's rate around them, and a machine whose cores give less together (shared physical "
              f"cores, busy neighbours) lowers those ratios by as much. The ratio to every core is the server's "
              f"own share.")
    return figures


def _chart(figures: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    shown = [f for f in figures if "ratio_to_raw" in f and not f["name"].startswith(("raw", "key store"))]
    figure, axis = pyplot.subplots(figsize=(9, 0.4 * len(shown) + 1.2))
    axis.barh([f["name"] for f in shown], [f["ratio_to_raw"] for f in shown], color="#3a6ea5")
    axis.axvline(1.0, color="grey", linewidth=0.8)
    axis.invert_yaxis()
    axis.set_xlabel("ratio to the raw in-process HSM rate (RSA-2048)")
    axis.set_title("signserver over gRPC")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


if __name__ == "__main__":
    main()
