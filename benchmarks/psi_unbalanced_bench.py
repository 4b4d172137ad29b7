"""Benchmark unbalanced PSI: server precomputation, table files, client online cost and bytes.

Run from the repository root::

    python benchmarks/psi_unbalanced_bench.py                     # 10^5 and 10^6 server IDs
    python benchmarks/psi_unbalanced_bench.py --server-sizes 20000 --client-sizes 100 1000

Times are wall-clock seconds of one run each (``--repeats`` takes the best of several). On a
shared machine they are noisy: the script prints the load average and times 2,000 scalar
multiplications before and after, so a reader can tell how busy the CPU was.

Online rows use a client that already holds the server's tag set (cached from an earlier
session), so they exclude the one-time download, which is reported separately.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.wire import Envelope
from psi import _ed25519 as ed
from psi._unbalanced import (
    UnbalancedClient,
    UnbalancedServer,
    UnbalancedState,
    run_unbalanced,
)
from psi._unbalanced_messages import UNBALANCED_REGISTRY
from psi._unbalanced_oprf import OprfKey, ServerTagTable


def _best(repeats: int, run: Callable[[], object]) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def _calibrate() -> float:
    """Microseconds per Ed25519 scalar multiplication right now (2,000 of them)."""
    scalar = ed.new_scalar()
    blob = ed.hash_to_group([str(i).encode() for i in range(2000)], bytes(32))
    start = time.perf_counter()
    ed.scalar_mult(scalar, blob)
    return (time.perf_counter() - start) / 2000 * 1e6


def _online(
    client_ids: list[str], table: ServerTagTable, key: OprfKey
) -> tuple[float, float, int, int]:
    """Client seconds, server seconds, online frames and bytes (client has the tag set).

    Each side's time includes decoding what it receives and encoding what it sends.
    """
    client = UnbalancedClient(client_ids, tag_set=table.tag_set)
    server = UnbalancedServer(table, key)
    seconds = {"client": 0.0, "server": 0.0}
    sent: list[bytes] = []

    def encode(envelopes: list[Envelope]) -> list[bytes]:
        return [
            UNBALANCED_REGISTRY.encode(
                e.message, session_id=e.session_id, round_index=e.round_index
            )
            for e in envelopes
        ]

    def deliver(
        who: str, role: UnbalancedClient | UnbalancedServer, frames: list[bytes]
    ) -> list[bytes]:
        out: list[bytes] = []
        for frame in frames:
            start = time.perf_counter()
            out += encode(role.receive(UNBALANCED_REGISTRY.decode(frame)))
            seconds[who] += time.perf_counter() - start
        sent.extend(out)
        return out

    start = time.perf_counter()
    to_server = encode(client.start())
    seconds["client"] += time.perf_counter() - start
    sent.extend(to_server)
    while to_server:
        to_client = deliver("server", server, to_server)
        to_server = deliver("client", client, to_client)
    assert client.state is server.state is UnbalancedState.DONE
    return seconds["client"], seconds["server"], len(sent), sum(map(len, sent))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--client-sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument(
        "--n-jobs",
        type=int,
        nargs="+",
        default=None,
        help="worker counts to time precomputation with (default: 1 and all "
        "cores for the smallest server size, all cores for the others)",
    )
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"cores: {cores}, load average: {os.getloadavg()}")
    print(f"calibration before: {_calibrate():.0f} µs per scalar multiplication")

    key = OprfKey.generate()
    tables: dict[int, ServerTagTable] = {}
    print("\nserver precomputation")
    print(
        f"{'server IDs':>11} {'n_jobs':>6} {'seconds':>9} {'µs/ID':>7} "
        f"{'save s':>7} {'load s':>7} {'table MB':>9}"
    )
    smallest = min(args.server_sizes)
    for n_server in args.server_sizes:
        ids = [f"user-{i:09d}" for i in range(n_server)]
        jobs = args.n_jobs or ([1, cores] if n_server == smallest and cores != 1 else [cores])
        for n_jobs in jobs:
            seconds, table = _best(
                args.repeats, partial(ServerTagTable.precompute, ids, key, n_jobs=n_jobs)
            )
            assert isinstance(table, ServerTagTable)
            tables[n_server] = table
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "table"
                save_s, _ = _best(1, partial(table.save, path))
                load_s, _ = _best(1, partial(ServerTagTable.load, path))
                size_mb = path.stat().st_size / 1e6
            print(
                f"{n_server:>11,} {n_jobs:>6} {seconds:>9.2f} {seconds / n_server * 1e6:>7.1f} "
                f"{save_s:>7.2f} {load_s:>7.2f} {size_mb:>9.1f}"
            )

    largest = max(tables)
    table = tables[largest]
    download = run_unbalanced(["x"], table, key).transport
    tag_bytes = sum(e.size_bytes for e in download.transcript if e.message_type == "ServerTags")
    print(f"\none-time tag download for {largest:,} server IDs: {tag_bytes / 1e6:.1f} MB")

    print(f"\nclient online cost against {largest:,} server IDs (tag set cached)")
    print(
        f"{'client IDs':>10} {'client s':>9} {'µs/ID':>7} {'server s':>9} {'µs/ID':>7} "
        f"{'frames':>6} {'bytes':>10} {'bytes/ID':>8}"
    )
    for n_client in args.client_sizes:
        # Half the client IDs are in the server's set.
        ids = [f"user-{i:09d}" for i in range(0, n_client, 2)]
        ids += [f"other-{i:09d}" for i in range(n_client - len(ids))]
        c_s, s_s, frames, n_bytes = _online(ids, table, key)
        print(
            f"{n_client:>10,} {c_s:>9.3f} {c_s / n_client * 1e6:>7.0f} {s_s:>9.3f} "
            f"{s_s / n_client * 1e6:>7.0f} {frames:>6} {n_bytes:>10,} {n_bytes / n_client:>8.1f}"
        )
    print(
        f"\ncalibration after: {_calibrate():.0f} µs per scalar multiplication, "
        f"load average: {os.getloadavg()}"
    )


if __name__ == "__main__":
    main()
