"""An independent plaintext implementation of the training algorithm, for equivalence tests.

Written apart from ``vfl`` on purpose (own optimizer, own batching from the documented rule) so
that a shared bug cannot make encrypted and plaintext training agree by accident.
"""

from __future__ import annotations

import numpy as np


def batches(seed: int, n: int, batch_size: int, epoch: int) -> list[np.ndarray]:
    # Documented rule: permutation from default_rng([seed, epoch]), split into n // batch_size
    # nearly equal chunks, each sorted.
    k = max(1, n // batch_size)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [np.sort(c) for c in np.array_split(perm, k)]


def taylor_train(
    blocks: dict[str, np.ndarray],
    y: np.ndarray,
    label_party: str,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    l2: float,
    optimizer: str,
    seed: int,
) -> tuple[dict[str, np.ndarray], float, list[float]]:
    """Return per-party coefficients, the intercept and per-epoch mean Taylor losses."""
    names = list(blocks)
    w = {p: np.zeros(blocks[p].shape[1]) for p in names}
    b = 0.0
    state: dict[str, list[np.ndarray]] = {}
    t = 0
    history = []
    for epoch in range(epochs):
        total, count = 0.0, 0
        for rows in batches(seed, len(y), batch_size, epoch):
            z = sum(blocks[p][rows] @ w[p] for p in names) + b
            s = 2 * y[rows] - 1
            total += float(np.sum(np.log(2) - s * z / 2 + z * z / 8))
            count += rows.size
            d = 0.25 * z + 0.5 - y[rows]
            t += 1
            grads = {p: blocks[p][rows].T @ d / rows.size + l2 * w[p] for p in names}
            grads["__b"] = np.array([d.mean()])
            params = dict(w)
            params["__b"] = np.array([b])
            for key, g in grads.items():
                if optimizer == "sgd":
                    params[key] = params[key] - lr * g
                else:
                    m, v = state.get(key, [np.zeros_like(g), np.zeros_like(g)])
                    m = 0.9 * m + 0.1 * g
                    v = 0.999 * v + 0.001 * g * g
                    state[key] = [m, v]
                    mh, vh = m / (1 - 0.9**t), v / (1 - 0.999**t)
                    params[key] = params[key] - lr * mh / (np.sqrt(vh) + 1e-8)
            b = float(params.pop("__b")[0])
            w = params
        history.append(total / count)
    return w, b, history


def make_blocks(
    n: int, dims: dict[str, int], seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Random standardised blocks per party and labels from a logistic model over all of them."""
    rng = np.random.default_rng(seed)
    blocks = {name: rng.normal(size=(n, d)) for name, d in dims.items()}
    logit = sum(block @ rng.normal(size=block.shape[1]) for block in blocks.values())
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return blocks, y


def build_session(
    blocks, y, passives, *, active_cls=None, key_bits=512, backend="paillier", **plan_fields
):
    """Roles of one training session over ``blocks`` (label party "bank", coordinator "c").

    Must run inside ``insecure_keys_allowed()`` for the default 512-bit test key.
    """
    import dataclasses
    import secrets

    from protocols import get_backend
    from vfl.plan import TrainingPlan
    from vfl.roles import ActiveParty, Coordinator, PassiveParty

    fields = dict(
        coordinator="c",
        active="bank",
        passives=tuple(passives),
        n_samples=len(y),
        batch_size=100,
        max_iter=2,
        tol=0.0,
        learning_rate=0.1,
        l2=0.0,
        optimizer="adam",
        seed=0,
        backend=backend,
        key_bits=key_bits,
        n_features=tuple(blocks[p].shape[1] for p in ("bank", *passives)),
    )
    fields.update(plan_fields)
    plan = TrainingPlan(**fields)
    width = max(plan.gradient_size(p) for p in plan.parties)
    secret_key = get_backend(backend).generate_secret_key(key_bits, vector_width=width)
    plan = dataclasses.replace(plan, key_bits=secret_key.public_key.key_bits)
    roles = {
        "c": Coordinator("c", plan, secret_key, secrets.token_bytes(16)),
        "bank": (active_cls or ActiveParty)("bank", blocks["bank"], y, plan),
    }
    for name in passives:
        roles[name] = PassiveParty(name, blocks[name], plan)
    return roles, plan, secret_key
