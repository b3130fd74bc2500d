"""Only the "SignHash, 1 digest/call, concurrency 8" figure, repeated, with CPU per call.

    python -m benchmarks.signhash_only [--seconds 3] [--runs 5] [--client python|native|both]
                                       [--profile SECONDS]

Each run: the SignHash load between two measurements of the raw RSA-2048 rate (in this process,
1 s each, their mean the run's reference) and of the raw rate on every core at once
(hsm_rate.raw_on_every_core: how much the cores gave together then); reports the ratio to each,
the server workers' CPU per call and the clients' CPU per call, read from /proc over the window.
``--client native`` sends the load from benchmarks/native_load.py's client instead of Python
processes, ``both`` from each in turn in every run (the order alternating from run to run).
``--profile SECONDS`` instead records each worker under that load with py-spy (not a dependency:
on PATH or in the virtual environment) into $PROFILE_OUT (default /tmp/signhash-profile).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks import hsm_rate, load, native_load
from benchmarks.grpc_signing import served_holder
from benchmarks.harness import TICK, benchmark_service, children, cpu_seconds, stat_cpu_seconds


def thread_cpu(pids):
    found = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                text = (task / "stat").read_text()
            except FileNotFoundError:
                continue
            name = text[text.index("(") + 1:text.rindex(")")]
            found[(task.name, name)] = stat_cpu_seconds(text)
    return found


def system_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def health_checker(channel, target, name):
    """A Health.Check per call: what a unary call over TLS costs the server with no work behind it."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    stub = health_pb2_grpc.HealthStub(channel)

    def call():
        stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=60)
        return 1
    return call


CALLER = {"health": lambda: health_checker}.get(os.environ.get("CALLER", ""), lambda: load.hash_signer(1))


class NoCallCompleted(RuntimeError):
    """No call completed within a load's window: the clients' connections were not ready in time
    (a server still starting, a machine busy with something else)."""


def client_cpu_process(target, caller, threads, start_at, seconds, queue, share, taken):
    """load._client_process, plus this process's CPU over the window."""
    results, lock = [], threading.Lock()
    marks = {}

    def run(index):
        with load.balanced_channel(target, share, taken) as channel:
            call = caller(channel, target, f"{os.getpid()}-{index}")
            time.sleep(max(0.0, start_at - time.time()))
            if index == 0:
                marks["start"] = time.process_time()
            done = 0
            while time.time() < start_at + seconds:
                done += call()
        with lock:
            if "end" not in marks:
                marks["end"] = time.process_time()
            results.append(done)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    queue.put((sum(results), marks["end"] - marks["start"]))


def run_load(target, server_pid, concurrency, seconds, max_processes=int(os.environ.get('CLIENT_PROCESSES', 4))):
    processes = min(concurrency, max_processes)
    per = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    queue = load._fork.Queue()
    taken = load._fork.Array("i", target.workers)
    share = -(-concurrency // target.workers)
    start_at = time.time() + 3.0 + concurrency * 0.15
    clients = [load._fork.Process(target=client_cpu_process,
                                  args=(target, CALLER(), n, start_at, seconds, queue, share, taken))
               for n in per]
    for c in clients:
        c.start()
    workers = children(server_pid)
    time.sleep(max(0.0, start_at - time.time()))
    busy_before = system_busy()
    before = {w: cpu_seconds(w) for w in workers}
    threads_before = thread_cpu(workers)
    time.sleep(seconds)
    after = {w: cpu_seconds(w) for w in workers}
    busy_after = system_busy()
    threads_after = thread_cpu(workers)
    gathered = [queue.get(timeout=600) for _ in clients]
    for c in clients:
        c.join()
    calls = sum(g[0] for g in gathered)
    if calls == 0:
        raise NoCallCompleted(f"no SignHash completed within the {seconds:g} s window")
    server_cpu = sum(after[w] - before[w] for w in workers)
    client_cpu = sum(g[1] for g in gathered)
    if os.environ.get("THREADS"):
        by_name = {}
        for key, value in threads_after.items():
            name = key[1]
            by_name[name] = by_name.get(name, 0) + value - threads_before.get(key, 0)
        print("  per thread name, us/call: " + ", ".join(f"{k}={v / calls * 1e6:.0f}" for k, v in
                                                     sorted(by_name.items(), key=lambda kv: -kv[1])))
    foreign = (busy_after - busy_before - server_cpu - client_cpu) / seconds
    run_load.foreign = foreign
    return calls / seconds, server_cpu / calls * 1e6, client_cpu / calls * 1e6


def warm_up(target, server_pid, tries: int = 3) -> None:
    """A short load before the measured runs; tried again when its window ended before the
    clients' connections were ready (the workers' first TLS handshakes)."""
    for attempt in range(1, tries + 1):
        try:
            run_load(target, server_pid, 8, 1.0)
            return
        except NoCallCompleted as exc:
            print(f"warm-up {attempt} of {tries}: {exc}; trying again", file=sys.stderr)
    raise NoCallCompleted(f"no SignHash completed in {tries} warm-ups: is the server serving?")


def run_native(target, server_pid, concurrency, seconds, raw):
    """As run_load, from the native client (its callers get requests for three times the raw
    rate, more than the server's workers can sign)."""
    workers = children(server_pid)
    result = native_load.sign_hash_load("native", target, 1, concurrency, seconds, most_per_second=3 * raw,
                                        window_probe=lambda: sum(cpu_seconds(w) for w in workers))
    calls = result.operations
    run_load.foreign = float("nan")
    return calls / seconds, result.in_window / calls * 1e6, result.client_cpu / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--client", choices=("python", "native", "both"), default="python",
                        help="the load generator: Python processes, the native client, or each in turn")
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy record the workers for this long")
    args = parser.parse_args()
    spy = py_spy()
    if args.profile and spy is None:
        parser.error("--profile needs py-spy, on PATH or in this virtual environment (pip install py-spy)")
    kinds = ["python", "native"] if args.client == "both" else [args.client]
    if "native" in kinds:
        native_load.binary()  # built before the server starts, or the reason it cannot be
    with benchmark_service() as (state, service):
        server = None
        try:
            server, target = served_holder(service, state)
            if os.environ.get("PERF_PROFILE_LOOP"):
                print(run_load(target, server.process.pid, 8, 22))
                return
            if args.profile:
                profile(target, server, args.profile, spy)
                return
            warm_up(target, server.process.pid)
            found = {kind: {"ratios": [], "servers": [], "clients": [], "cores": []} for kind in kinds}
            raw_probe = hsm_rate.raw_probe(service, 1.0)

            def every_core() -> float:
                return hsm_rate.raw_on_every_core(state, 1.0).per_second

            for i in range(args.runs):
                for kind in (kinds if i % 2 == 0 else kinds[::-1]):
                    before, before_all = raw_probe().per_second, every_core()
                    if kind == "native":
                        rate, server_us, client_us = run_native(target, server.process.pid, 8, args.seconds, before)
                    else:
                        rate, server_us, client_us = run_load(target, server.process.pid, 8, args.seconds)
                    # Around the load, for the machine's speed drifts; and on every core, for the
                    # load uses them all, and what a virtual machine's cores give together moves too.
                    raw, raw_all = (before + raw_probe().per_second) / 2, (before_all + every_core()) / 2
                    figures = found[kind]
                    figures["ratios"].append(rate / raw)
                    figures["servers"].append(server_us)
                    figures["clients"].append(client_us)
                    figures["cores"].append(raw_all / raw)
                    print(f"run {i}, {kind} client: raw {raw:,.0f}/s, on every core {raw_all:,.0f}/s "
                          f"({raw_all / raw:.2f}x), SignHash c=8 {rate:,.0f}/s, ratio {rate / raw:.3f} "
                          f"(to every core {rate / raw_all:.3f}), server {server_us:,.0f} us/call "
                          f"({server_us * raw / 1e6:.2f} raw signatures), clients {client_us:,.0f} us/call "
                          f"({client_us * raw / 1e6:.2f}), foreign {run_load.foreign:.2f}", flush=True)
            for kind, figures in found.items():
                print(f"MEDIAN, {kind} client: ratio {statistics.median(figures['ratios']):.3f}  cores gave "
                      f"{statistics.median(figures['cores']):.2f}x one  server "
                      f"{statistics.median(figures['servers']):,.0f} us/call  clients "
                      f"{statistics.median(figures['clients']):,.0f} us/call")
        finally:
            if server is not None:
                server.stop()


def py_spy() -> str | None:
    """py-spy's path, from PATH or beside this interpreter (it is not a dependency), or None."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def profile(target, server, seconds, spy: str) -> None:
    workers = children(server.process.pid)
    out = Path(os.environ.get("PROFILE_OUT", "/tmp/signhash-profile"))
    out.mkdir(exist_ok=True)
    done = threading.Event()

    def loader():
        run_load(target, server.process.pid, 8, seconds + 12)
    thread = threading.Thread(target=loader, daemon=True)
    thread.start()
    time.sleep(3.0 + 8 * 0.15 + 2)
    extra = os.environ.get("SPY_ARGS", "").split()
    spies = [subprocess.Popen([spy, "record", "-p", str(w), "-d", str(int(seconds)), "-r", "200", "-f", "raw",
                               *extra, "-o", str(out / f"worker-{w}.txt")]) for w in workers]
    for s in spies:
        s.wait()
    done.set()
    thread.join()


if __name__ == "__main__":
    main()
