"""Benchmark two-party ECDH-PSI (``psi.run_two_party``) against openmined-psi on one machine.

Run from the repository root (openmined-psi and psutil come with ``pip install ".[bench]"``)::

    python benchmarks/psi_bench.py                              # 10^4, 10^5, 10^6 per side
    python benchmarks/psi_bench.py --sizes 1e4 1e5 --repeats 3 --modes both receiver
    python benchmarks/psi_bench.py --sizes 1e6 --skip-openmined --n-jobs 2

Both parties hold ``n`` random 16-character IDs each, half of them common (the same sets for
every implementation at a given size), and both run on this machine. Every measurement runs in
a fresh Python process, so peak memory and CPU time belong to that run alone:

- wall: seconds from the start of the PSI (including starting our worker processes) to the
  result, for both parties together; generating the IDs is excluded.
- CPU: user + system seconds of the process and its worker processes (``getrusage``).
- bytes: everything the parties exchange. Ours: the frames in the transcript. openmined-psi:
  the serialized setup, request and response protobufs (GCS, false-positive rate 1e-9).
- peak memory: the largest sum of the RSS of the process and its workers, sampled every
  50 ms with psutil (without psutil: ``ru_maxrss`` of the process plus ``n_jobs`` times the
  largest worker's, an upper bound). Includes the two input lists of Python strings.

openmined-psi (P-256, one thread) reveals the intersection to its client only, which is our
``reveal="receiver"``; our default ``"both"`` does the same four scalar multiplications per item
pair and sends one more round. Ratios compare openmined-psi with each of our modes.

On a shared machine timings are noisy: the script prints the load average before every run, the
median, minimum and maximum over ``--repeats``, and, for every run, the time of one X25519
multiplication (3,000 of them in one process, before and after the run). From that it prints our
floor, ``2 * (n_a + n_b)`` multiplications spread over all cores, and each of our runs' wall time
relative to it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024


def make_sets(n: int, seed: int = 20240601) -> tuple[list[str], list[str]]:
    """Two lists of ``n`` distinct IDs each, ``n // 2`` of them common, in random order."""
    rng = np.random.default_rng(seed + n)
    universe = n + (n - n // 2)
    while True:
        raw = rng.integers(0, 2**63, size=universe, dtype=np.int64)
        if np.unique(raw).size == universe:
            break
    ids = [f"{int(v):016x}" for v in raw]
    a = ids[:n]
    b = ids[n - n // 2 :]
    order_b = rng.permutation(len(b))
    return a, [b[i] for i in order_b]


class _MemorySampler:
    """Peak of (RSS of this process + its children), sampled in a thread."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.peak = 0
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import psutil
        except ImportError:
            self._proc = None
        else:
            self._proc = psutil.Process()

    @property
    def available(self) -> bool:
        return self._proc is not None

    def _sample(self) -> None:
        assert self._proc is not None
        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            with contextlib.suppress(Exception):  # a worker that just exited
                total += child.memory_info().rss
        self.peak = max(self.peak, total)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def __enter__(self) -> _MemorySampler:
        if self._proc is not None:
            self._sample()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def calibrate_us() -> float:
    """Microseconds per X25519 multiplication right now (3,000 in this process, via libsodium)."""
    import secrets

    import nacl.bindings

    blob = b"".join(
        nacl.bindings.crypto_scalarmult_base(secrets.token_bytes(32)) for _ in range(64)
    )
    blob = (blob * 47)[: 32 * 3000]
    scalar = secrets.token_bytes(32)
    mult = nacl.bindings.crypto_scalarmult
    start = time.perf_counter()
    for i in range(0, len(blob), 32):
        mult(scalar, blob[i : i + 32])
    return (time.perf_counter() - start) / 3000 * 1e6


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run_ours(a: list[str], b: list[str], mode: str, n_jobs: int | None) -> dict[str, Any]:
    import psi
    from psi._engine import PsiEngine

    with PsiEngine(n_jobs=n_jobs) as engine:
        result = psi.run_two_party(a, b, reveal=mode, engine=engine)
        workers = engine.n_jobs
    return {
        "cardinality": result.a.cardinality,
        "bytes": result.bytes_exchanged,
        "workers": workers if workers > 1 else 0,
    }


def _run_openmined(a: list[str], b: list[str]) -> dict[str, Any]:
    import private_set_intersection.python as om

    # Party b is the openmined server, party a the client (the one that learns the result).
    server = om.server.CreateWithNewKey(True)
    client = om.client.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(1e-9, len(a), b, om.DataStructure.GCS).SerializeToString()
    request = client.CreateRequest(a).SerializeToString()
    parsed_request = om.Request()
    parsed_request.ParseFromString(request)
    response = server.ProcessRequest(parsed_request).SerializeToString()
    parsed_setup, parsed_response = om.ServerSetup(), om.Response()
    parsed_setup.ParseFromString(setup)
    parsed_response.ParseFromString(response)
    rows = client.GetIntersection(parsed_setup, parsed_response)
    return {
        "cardinality": len(rows),
        "bytes": len(setup) + len(request) + len(response),
        "workers": 0,
    }


def child_main(impl: str, n: int, mode: str, n_jobs: int | None) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    a, b = make_sets(n)
    if impl == "ours":  # import outside the timed region (a one-time cost of any program)
        import psi  # noqa: F401
    else:
        import private_set_intersection.python  # noqa: F401
    load = os.getloadavg()[0]
    calibration = [calibrate_us()]
    with _MemorySampler() as sampler:
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        out = _run_ours(a, b, mode, n_jobs) if impl == "ours" else _run_openmined(a, b)
        wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    calibration.append(calibrate_us())
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    bound = own + out["workers"] * worker
    expected = n // 2
    return {
        "impl": impl,
        "mode": mode if impl == "ours" else "receiver",
        "n": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "bytes": out["bytes"],
        "peak_bytes": sampler.peak if sampler.available else bound,
        "rss_bound_bytes": bound,
        "load_before": load,
        "us_per_mult": statistics.mean(calibration),
        "correct": out["cardinality"] == expected,
    }


def _measure(impl: str, n: int, mode: str, n_jobs: int | None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", impl, "--size", str(n)]
    cmd += ["--modes", mode]
    if n_jobs is not None:
        cmd += ["--n-jobs", str(n_jobs)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fmt_row(label: str, runs: list[dict[str, Any]]) -> str:
    walls = [r["wall_s"] for r in runs]
    wall = statistics.median(walls)
    spread = f"{min(walls):.1f}-{max(walls):.1f}" if len(walls) > 1 else "-"
    cpu = statistics.median(r["cpu_s"] for r in runs)
    peak = statistics.median(r["peak_bytes"] for r in runs) / MiB
    ok = "yes" if all(r["correct"] for r in runs) else "NO"
    return (
        f"{label:<22} {wall:>9.2f} {spread:>13} {cpu:>9.2f} {runs[0]['bytes'] / MiB:>10.1f} "
        f"{peak:>9.0f} {ok:>4}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6])
    parser.add_argument("--n-jobs", type=int, default=None, help="our workers (default: all)")
    parser.add_argument("--modes", nargs="+", default=["both"], help="our reveal modes")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row (median shown)")
    parser.add_argument("--skip-openmined", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every run to this file")
    parser.add_argument("--child", choices=["ours", "openmined"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child_main(args.child, args.size, args.modes[0], args.n_jobs)))
        return

    if not args.skip_openmined:
        try:
            import private_set_intersection.python  # noqa: F401
        except ImportError:
            parser.error('openmined-psi is not installed (pip install ".[bench]")')
    cores = os.cpu_count() or 1
    print(f"cores: {cores}, our n_jobs: {args.n_jobs or cores}")
    header = (
        f"{'n per side / impl':<22} {'wall s':>9} {'wall range':>13} {'CPU s':>9} "
        f"{'MiB sent':>10} {'peak MiB':>9} {'ok':>4}"
    )
    every: list[dict[str, Any]] = []
    for size in sorted(int(s) for s in args.sizes):
        print(f"\n== n = {size:,} per side, {size // 2:,} common")
        print(header)
        rows: dict[str, list[dict[str, Any]]] = {}
        jobs = [("ours", mode) for mode in args.modes]
        if not args.skip_openmined:
            jobs.append(("openmined", "receiver"))
        for _ in range(args.repeats):
            for impl, mode in jobs:
                label = f"ours {mode}" if impl == "ours" else "openmined-psi"
                run = _measure(impl, size, mode, args.n_jobs)
                rows.setdefault(label, []).append(run)
                every.append(run)
                note = ""
                if impl == "ours":
                    floor = 4 * size * run["us_per_mult"] * 1e-6 / (args.n_jobs or cores)
                    note = f", floor {floor:.1f} s, wall/floor {run['wall_s'] / floor:.2f}"
                print(
                    f"   ({label}: {run['wall_s']:.2f} s wall, load before "
                    f"{run['load_before']:.2f}, X25519 {run['us_per_mult']:.1f} us{note})",
                    flush=True,
                )
        for label, runs in rows.items():
            print(_fmt_row(label, runs))
        theirs = rows.get("openmined-psi")
        if theirs:
            om_wall = statistics.median(r["wall_s"] for r in theirs)
            om_cpu = statistics.median(r["cpu_s"] for r in theirs)
            for label, runs in rows.items():
                if label == "openmined-psi":
                    continue
                wall = statistics.median(r["wall_s"] for r in runs)
                cpu = statistics.median(r["cpu_s"] for r in runs)
                print(
                    f"   openmined-psi / {label}: wall {om_wall / wall:.2f}x, "
                    f"CPU {om_cpu / cpu:.2f}x"
                )
    if args.json:
        args.json.write_text(json.dumps(every, indent=1))


if __name__ == "__main__":
    main()
