"""Seconds per training epoch on default_credit: plaintext, fast Paillier, CKKS, naive phe.

Run from the repository root (the data folder sits beside the project)::

    python benchmarks/epoch_bench.py                        # 2048-bit, all cores, a few minutes
    python benchmarks/epoch_bench.py --skip inline online phe --ckks-epochs 10   # CKKS only
    python benchmarks/epoch_bench.py --n-jobs 2 --epochs 3 --batches 2 --json /tmp/epoch.json
    python benchmarks/epoch_bench.py --quick                # CI speed: a few batches, scaled

The protocol is the one of ``vfl.roles`` (Taylor-1 logistic regression, one active party
"guest" with 13 features and the labels, one passive party "host" with 10 features, a
coordinator; batch 1024, so 29 batches per epoch of 30,000 rows), with all three roles in this
process. Measurements:

- plaintext: the same mini-batch algorithm in NumPy (no encryption).
- fast Paillier, inline: a fresh 2048-bit key, randomness made when an encryption needs it
  (over the process pool); epoch 1 includes the one-time set-up (worker start, fixed-base
  tables), later epochs are the steady state.
- fast Paillier, online: the same with the randomness of each epoch precomputed before it (the
  precomputation is timed and reported apart, and excluded from the online epoch).
- CKKS: the same roles with ``backend="ckks"``.
- naive phe: the same protocol with ``phe`` objects (encrypt each float, ``EncryptedNumber *
  float``, sums, ``decrypt``) on ``--phe-rows`` rows of ``--batches`` batches, scaled to an
  epoch (row work by rows, per-batch work by batches).

Times per epoch are the median over the epochs after the first (the first includes one-time
set-up: starting workers, building the fixed-base tables); on a machine shared with other work
the script prints the load average and the spread (min, median, max of batch times) and the
CPU seconds (this process and its workers), so noise shows. Peak memory: ``ru_maxrss`` of this
process, and the sampled peak of the largest worker and of all processes together (psutil;
workers are children of the ``forkserver`` process, which ``RUSAGE_CHILDREN`` does not cover).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import resource
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocols import get_backend, paillier  # noqa: E402
from protocols.transport import InMemoryTransport  # noqa: E402
from vfl.messages import REGISTRY  # noqa: E402
from vfl.plan import TrainingPlan, minibatches  # noqa: E402
from vfl.roles import ActiveParty, Coordinator, PassiveParty  # noqa: E402
from vfl.runner import run_session  # noqa: E402

BATCH_SIZE = 1024
LEARNING_RATE = 0.05
L2 = 1e-3
SEED = 20240601
MiB = 1024 * 1024


# -- data -------------------------------------------------------------------------------------
def load(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(guest features, labels, host features), rows aligned on ``id``."""
    guest = pd.read_csv(folder / "guest.csv", dtype={"id": str})
    host = pd.read_csv(folder / "host.csv", dtype={"id": str}).set_index("id")
    host = host.loc[guest["id"]]
    y = guest.pop("y").to_numpy(dtype=np.float64)
    x_guest = guest.drop(columns="id").to_numpy(dtype=np.float64)
    return x_guest, y, host.to_numpy(dtype=np.float64)


def make_plan(n: int, epochs: int, backend: str, key_bits: int) -> TrainingPlan:
    return TrainingPlan(
        coordinator="coordinator",
        active="guest",
        passives=("host",),
        n_samples=n,
        batch_size=BATCH_SIZE,
        max_iter=epochs,
        tol=0.0,
        learning_rate=LEARNING_RATE,
        l2=L2,
        optimizer="adam",
        seed=SEED,
        backend=backend,
        key_bits=key_bits,
        n_features=(13, 10),
    )


# -- measurement helpers --------------------------------------------------------------------
class MemorySampler:
    """Peak of (RSS of this process + its children), sampled in a thread (needs psutil)."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.peak = 0
        self.peak_child = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import psutil
        except ImportError:
            self._proc = None
        else:
            self._proc = psutil.Process()

    def sample(self) -> None:
        if self._proc is None:
            return
        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            with contextlib.suppress(Exception):
                rss = child.memory_info().rss
                total += rss
                self.peak_child = max(self.peak_child, rss)
        self.peak = max(self.peak, total)

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self.sample()

    def __enter__(self) -> MemorySampler:
        if self._proc is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def cpu_seconds() -> float:
    """CPU of this process and its live and finished children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    with contextlib.suppress(ImportError):
        import psutil

        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(Exception):
                times = child.cpu_times()
                total += times.user + times.system
    return total


def load_average() -> str:
    with contextlib.suppress(OSError):
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return "load average unknown"


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"min {min(values):.3f} / median {statistics.median(values):.3f} / max {max(values):.3f}"


class EpochClock:
    """``on_message`` hook: time of every finished round; optional work between epochs."""

    def __init__(
        self, coordinator: Coordinator, batches: int, between: Callable[[], None] | None
    ) -> None:
        self.coordinator = coordinator
        self.batches = batches
        self.between = between
        self.batch_seconds: list[float] = []
        self.between_seconds: list[float] = []
        self.seen = 0
        self.last = time.perf_counter()

    def __call__(self) -> None:
        done = self.coordinator.completed_rounds
        if done == self.seen:
            return
        now = time.perf_counter()
        self.batch_seconds.append(now - self.last)
        self.seen = done
        self.last = now
        if self.between is not None and done % self.batches == 0 and not self.coordinator.done:
            self.between()
            self.between_seconds.append(time.perf_counter() - now)
            self.last = time.perf_counter()

    def epochs(self) -> list[float]:
        b = self.batches
        return [sum(self.batch_seconds[i : i + b]) for i in range(0, len(self.batch_seconds), b)]


# -- runs -------------------------------------------------------------------------------------
def run_plaintext(x_guest: np.ndarray, y: np.ndarray, x_host: np.ndarray, epochs: int) -> dict:
    """The same mini-batch Taylor-1 training in NumPy."""
    n = y.size
    design = np.hstack([x_guest, np.ones((n, 1))])
    w_g, w_h = np.zeros(design.shape[1]), np.zeros(x_host.shape[1])
    opt = {k: [np.zeros_like(v), np.zeros_like(v)] for k, v in (("g", w_g), ("h", w_h))}
    t = 0
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        for rows in minibatches(SEED, n, BATCH_SIZE, epoch):
            xg, xh = design[rows], x_host[rows]
            residual = xh @ w_h + xg @ w_g + 2.0 - 4.0 * y[rows]
            t += 1
            for key, x, w in (("g", xg, w_g), ("h", xh, w_h)):
                g = x.T @ residual / (4.0 * rows.size) + L2 * w
                if key == "g":
                    g[-1] -= L2 * w[-1]
                m, v = opt[key]
                m[:] = 0.9 * m + 0.1 * g
                v[:] = 0.999 * v + 0.001 * g * g
                w -= LEARNING_RATE * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        seconds.append(time.perf_counter() - start)
    return {"epochs": seconds, "per_epoch": statistics.median(seconds)}


def run_encrypted(
    backend: str,
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    epochs: int,
    key_bits: int,
    precompute: bool,
    max_batches: int | None,
) -> dict[str, Any]:
    """Train ``epochs`` epochs (or only ``max_batches`` batches, scaled) with the real roles."""
    x_guest, y, x_host = data
    n = y.size
    if max_batches is not None:  # a prefix of rows, so that an epoch has max_batches batches
        n = min(n, max_batches * BATCH_SIZE)
        x_guest, y, x_host = x_guest[:n], y[:n], x_host[:n]
    plan = make_plan(n, epochs, backend, key_bits)
    width = max(plan.gradient_size(p) for p in plan.parties)
    started = time.perf_counter()
    secret_key = get_backend(backend).generate_secret_key(key_bits, vector_width=width)
    keygen = time.perf_counter() - started
    plan = dataclasses.replace(plan, key_bits=secret_key.public_key.key_bits)
    coordinator = Coordinator("coordinator", plan, secret_key, secrets.token_bytes(16))
    roles: dict[str, Any] = {
        "coordinator": coordinator,
        "guest": ActiveParty("guest", x_guest, y, plan),
        "host": PassiveParty("host", x_host, plan),
    }
    key = secret_key.public_key
    # per epoch: the host's scores and the guest's fresh term (2 per sample), the masks of the
    # packed gradients (a few per batch; 8 leaves headroom), the squared sum and own loss term
    per_epoch_randomness = 2 * n + 8 * plan.batches_per_epoch + 2

    refill_cpu: list[float] = []

    def refill() -> None:
        cpu_start = cpu_seconds()
        missing = per_epoch_randomness - key.randomness_available  # type: ignore[attr-defined]
        key.precompute_randomness(max(0, missing))  # type: ignore[attr-defined]
        refill_cpu.append(cpu_seconds() - cpu_start)

    precompute_first = 0.0
    if precompute:
        t0 = time.perf_counter()
        refill()
        precompute_first = time.perf_counter() - t0
    clock = EpochClock(coordinator, plan.batches_per_epoch, refill if precompute else None)
    cpu0, own0 = cpu_seconds(), time.process_time()
    refill_cpu.clear()  # the first precomputation is reported, not counted in the epochs
    clock.last = time.perf_counter()
    run_session(
        roles,
        (coordinator, coordinator.start()),
        InMemoryTransport(roles),
        REGISTRY,
        on_message=clock,
    )
    cpu = cpu_seconds() - cpu0 - sum(refill_cpu)
    own = time.process_time() - own0
    epoch_seconds = clock.epochs()
    wall = sum(clock.batch_seconds)
    return {
        "backend": backend,
        "rows": n,
        "batches_per_epoch": plan.batches_per_epoch,
        "keygen_seconds": keygen,
        "epochs": epoch_seconds,
        "batch_seconds": clock.batch_seconds,
        "precompute_seconds": [precompute_first, *clock.between_seconds] if precompute else [],
        "cpu_seconds": cpu,
        "cpu_main_process_seconds": own,
        "cpu_per_wall": cpu / wall if wall else 0.0,
        "history": list(coordinator.history),
    }


def run_naive_phe(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], *, batches: int, rows: int, key_bits: int
) -> dict[str, Any]:
    """The protocol with phe objects, on ``rows`` rows of ``batches`` batches, scaled."""
    from protocols.testing import insecure_keys_allowed

    x_guest, y, x_host = data
    n = y.size
    with insecure_keys_allowed():
        ours = get_backend("paillier").generate_secret_key(key_bits)
    pk, sk = ours.public_key.to_phe(), ours.to_phe()  # phe's own classes, our key material
    rng = np.random.default_rng(0)
    w_g, w_h = rng.normal(scale=0.1, size=14), rng.normal(scale=0.1, size=10)
    row_seconds = batch_seconds = epoch_seconds = 0.0
    plan_batches = minibatches(SEED, n, BATCH_SIZE, 0)
    for batch in plan_batches[:batches]:
        idx = batch[:rows]
        xg = np.hstack([x_guest[idx], np.ones((idx.size, 1))])
        xh, yb = x_host[idx], y[idx]
        t0 = time.perf_counter()
        # passive: encrypt scores
        u_h = xh @ w_h
        enc_u = [pk.encrypt(float(v)) for v in u_h]
        # active: [[4d]] = [[u_h]] + Enc(u_g + 2 - 4y), fresh encryption per sample
        u_g = xg @ w_g
        enc_d = [c + pk.encrypt(float(t)) for c, t in zip(enc_u, u_g + 2.0 - 4.0 * yb)]
        # both: X^T [[4d]] column by column (EncryptedNumber * float, then sums)
        grads = []
        for x in (xg, xh):
            for column in x.T:
                total = enc_d[0] * float(column[0])
                for c, v in zip(enc_d[1:], column[1:]):
                    total = total + c * float(v)
                grads.append(total)
        # loss: (2 u_g - 4 y') * [[u_h]] summed per batch (added up over the epoch)
        signed = 2.0 * yb - 1.0
        coeff = 2.0 * u_g - 4.0 * signed
        loss = enc_u[0] * float(coeff[0])
        for c, v in zip(enc_u[1:], coeff[1:]):
            loss = loss + c * float(v)
        t1 = time.perf_counter()
        # per batch: masks added, decryptions at the coordinator
        masks = rng.normal(scale=1e6, size=len(grads))
        decrypted = [sk.decrypt(g + float(r)) for g, r in zip(grads, masks)]
        t2 = time.perf_counter()
        # once per epoch: [[sum u_h^2]], Enc(own term) and the loss decryption
        own = float(np.sum(8.0 * np.log(2.0) - 4.0 * signed * u_g + u_g * u_g))
        decrypted.append(sk.decrypt(loss + pk.encrypt(float(u_h @ u_h)) + pk.encrypt(own)))
        t3 = time.perf_counter()
        row_seconds += t1 - t0
        batch_seconds += t2 - t1
        epoch_seconds += t3 - t2
    timed_batches = min(batches, len(plan_batches))
    per_row = row_seconds / (timed_batches * rows)
    per_batch = batch_seconds / timed_batches
    per_epoch = per_row * n + per_batch * len(plan_batches) + epoch_seconds / timed_batches
    return {
        "rows_timed": timed_batches * rows,
        "row_seconds": row_seconds,
        "per_batch_seconds": per_batch,
        "per_epoch": per_epoch,
    }


# -- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/default_credit")
    parser.add_argument("--batches", type=int, default=2, help="batches timed for naive phe")
    parser.add_argument("--phe-rows", type=int, default=256, help="rows per naive phe batch")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each Paillier run")
    parser.add_argument(
        "--ckks-epochs", type=int, default=6, help="epochs of the CKKS run (cheap: more samples)"
    )
    parser.add_argument("--n-jobs", type=int, default=None, help="worker processes (all cores)")
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--quick", action="store_true", help="CI speed: 3 batches, scaled")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["inline", "online", "ckks", "phe"]
    )
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)

    data = load(args.data)
    n = data[1].size
    batches_per_epoch = max(1, n // BATCH_SIZE)
    max_batches = 3 if args.quick else None
    phe_rows = 32 if args.quick else args.phe_rows
    phe_batches = 1 if args.quick else args.batches
    jobs = args.n_jobs if args.n_jobs is not None else (os.cpu_count() or 1)
    print(
        f"{n} rows, 13 + 10 features, batch {BATCH_SIZE} ({batches_per_epoch} batches/epoch), "
        f"{args.key_bits}-bit Paillier, n_jobs={jobs}, {os.cpu_count()} cores"
    )
    results: dict[str, Any] = {"rows": n, "n_jobs": jobs, "key_bits": args.key_bits}

    def scaled(run: dict[str, Any]) -> float:
        """Seconds per full epoch: median steady epoch, or median batch times batches."""
        steady = run["epochs"][1:] or run["epochs"]
        per_epoch = statistics.median(steady)
        return per_epoch * batches_per_epoch / run["batches_per_epoch"]

    sampler = MemorySampler()
    with sampler, paillier.parallelism(args.n_jobs):
        print(f"\n[plaintext] {load_average()}")
        plain = run_plaintext(*data, epochs=5)
        results["plaintext"] = plain
        print(f"  per epoch {plain['per_epoch']:.4f} s (epochs: {spread(plain['epochs'])})")

        for mode, precompute in (("inline", False), ("online", True)):
            if mode in args.skip:
                continue
            print(f"\n[paillier {mode}] {load_average()}")
            run = run_encrypted(
                "paillier",
                data,
                epochs=args.epochs,
                key_bits=args.key_bits,
                precompute=precompute,
                max_batches=max_batches,
            )
            gc.collect()  # the session's keys, and so its background refills, end here
            run["per_epoch"] = scaled(run)
            results[f"paillier_{mode}"] = run
            print(f"  key generation {run['keygen_seconds']:.2f} s")
            print("  epochs (s): " + ", ".join(f"{e:.2f}" for e in run["epochs"]))
            print(f"  batches (s): {spread(run['batch_seconds'])}")
            if precompute:
                print(
                    "  precompute before each epoch (s): "
                    + ", ".join(f"{s:.2f}" for s in run["precompute_seconds"])
                )
            print(
                f"  CPU {run['cpu_seconds']:.1f} s ({run['cpu_main_process_seconds']:.1f} s in "
                f"this process), {run['cpu_per_wall']:.2f} cores busy on average"
            )
            print(f"  -> per epoch {run['per_epoch']:.2f} s")

        if "ckks" not in args.skip:
            print(f"\n[ckks] {load_average()}")
            run = run_encrypted(
                "ckks",
                data,
                epochs=args.ckks_epochs,
                key_bits=0,
                precompute=False,
                max_batches=max_batches,
            )
            run["per_epoch"] = scaled(run)
            results["ckks"] = run
            print("  epochs (s): " + ", ".join(f"{e:.2f}" for e in run["epochs"]))
            print(f"  batches (s): {spread(run['batch_seconds'])}")
            print(f"  -> per epoch {run['per_epoch']:.2f} s")

        if "phe" not in args.skip:
            print(f"\n[naive phe] {load_average()}")
            naive = run_naive_phe(data, batches=phe_batches, rows=phe_rows, key_bits=args.key_bits)
            results["naive_phe"] = naive
            print(
                f"  {naive['rows_timed']} rows in {naive['row_seconds']:.1f} s, "
                f"{naive['per_batch_seconds']:.2f} s of decryptions per batch"
            )
            print(f"  -> per epoch {naive['per_epoch']:.0f} s (scaled)")
        sampler.sample()
    paillier.shutdown_workers()
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # workers are children of the forkserver, so RUSAGE_CHILDREN does not see them: sampled
    results["peak_rss_mib"] = {
        "self": self_peak,
        "largest_child": sampler.peak_child / MiB if sampler.peak_child else None,
        "sampled_total": sampler.peak / MiB if sampler.peak else None,
    }

    print("\nsummary (seconds per epoch, median)")
    rows = [("plaintext numpy", results["plaintext"]["per_epoch"])]
    for name, label in (
        ("paillier_inline", "fast Paillier (randomness inline)"),
        ("paillier_online", "fast Paillier (online, randomness precomputed)"),
        ("ckks", "CKKS"),
        ("naive_phe", "naive phe loop (scaled)"),
    ):
        if name in results:
            rows.append((label, results[name]["per_epoch"]))
    for label, seconds in rows:
        print(f"  {label:<48} {seconds:10.3f}")
    print("ratios")
    base = {label: s for label, s in rows}
    naive_s = results.get("naive_phe", {}).get("per_epoch")
    for label, seconds in rows[1:]:
        parts = [f"{seconds / base['plaintext numpy']:.0f}x plaintext"]
        if naive_s and "naive" not in label:
            parts.append(f"{naive_s / seconds:.1f}x faster than naive phe")
        print(f"  {label:<48} " + ", ".join(parts))
    if "paillier_online" in results:
        pre = results["paillier_online"]["precompute_seconds"]
        print(f"  randomness precomputation per epoch: {statistics.median(pre):.2f} s (median)")
    peak = results["peak_rss_mib"]
    if peak["sampled_total"]:
        print(
            f"peak memory: this process {peak['self']:.0f} MiB (ru_maxrss), largest worker "
            f"{peak['largest_child']:.0f} MiB, all processes together {peak['sampled_total']:.0f}"
            " MiB (sampled every 0.1 s with psutil)"
        )
    else:
        print(f"peak memory: this process {peak['self']:.0f} MiB (install psutil for workers)")
    if args.quick:
        print("(--quick: 3 batches per run and no warm-up; not the steady state)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
