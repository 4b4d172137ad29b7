"""Private set intersection: find the IDs several parties share without exchanging the rest.

Two levels of API:

- :func:`align`, the recipe: give each party's ``DataFrame``, get back each party's rows of the
  common IDs in one common order.
- The roles :class:`PsiInitiator` and :class:`PsiResponder`: sans-I/O state machines that take
  decoded :class:`~protocols.wire.Envelope` objects and return the envelopes (message, session
  id, round) to send; :data:`REGISTRY` encodes and decodes their messages. :func:`run_two_party`
  and :func:`run_multi_party` drive them over an in-memory transport with a transcript.

Protocol (ECDH-PSI over X25519)
-------------------------------
Each party hashes its IDs to X25519 u-coordinates, ``H(x) = SHA-256(tag || salt || utf8(x))``
(see ``psi._ecdh``; RFC 9380 Elligator 2 is a later option), and draws a secret scalar.

0. Hellos: each party sends 16 random bytes and its number of distinct IDs; the session id and
   the hash salt are SHA-256 of both nonces in role order, so both parties contribute.
1. The initiator sends ``H(x)^a`` for its IDs, shuffled.
2. The responder returns ``(H(x)^a)^b`` in the same order, and sends ``H(y)^b``, shuffled.
3. The initiator returns ``(H(y)^b)^a`` in the order received.

Now each party knows the double-blinded value ``H(.)^ab`` of each of its own IDs and the set of
the other's. Each keeps its IDs whose value is in the other's set and sorts them by that value,
which gives both parties the same order. Inputs are sequences of ``str``; duplicates count once
(at their first row). Results are row indices into each party's input.

More than two parties: the first party (or ``leader``, e.g. the label holder) runs the
two-party protocol with every other party as initiator, intersects the pairwise results over
its own rows, and sends each other party an :class:`IntersectionPositions` message: the final
intersection as positions in that party's pairwise list, in the final order. No IDs cross.

Security
--------
Semi-honest model; DDH on Curve25519 and its twist, SHA-256 as a random oracle.

- Set sizes: every party learns the number of distinct IDs of each party it runs PSI with.
- The intersection: both parties of a PSI run learn it (as their own rows) and its size.
- More than two parties: the leader learns each pairwise intersection with itself, and each
  other party learns its pairwise intersection with the leader, not only the common one. A later
  version removes this leak.
- No ID, hash of an ID, or row order crosses: only blinded points under fresh per-session
  scalars, shuffled with :mod:`secrets`. Points from peers are checked (length, canonical
  encoding, no repeats, not of small order) and anything malformed raises
  :class:`~protocols.errors.RemoteProtocolError`. A malicious peer can still make the result
  wrong or choose its input set; there is no protection against that.
"""

from __future__ import annotations

from psi._align import align
from psi._driver import (
    MultiPartyPsiResult,
    TwoPartyPsiResult,
    run_multi_party,
    run_two_party,
)
from psi._ecdh import SUITE
from psi._messages import (
    REGISTRY,
    DoubleBlindedInitiatorPoints,
    DoubleBlindedResponderPoints,
    InitiatorBlindedPoints,
    InitiatorHello,
    IntersectionPositions,
    ResponderBlindedPoints,
    ResponderHello,
)
from psi._roles import DEFAULT_CHUNK_POINTS, PsiInitiator, PsiResponder, PsiState

__all__ = [
    "DEFAULT_CHUNK_POINTS",
    "REGISTRY",
    "SUITE",
    "DoubleBlindedInitiatorPoints",
    "DoubleBlindedResponderPoints",
    "InitiatorBlindedPoints",
    "InitiatorHello",
    "IntersectionPositions",
    "MultiPartyPsiResult",
    "PsiInitiator",
    "PsiResponder",
    "PsiState",
    "ResponderBlindedPoints",
    "ResponderHello",
    "TwoPartyPsiResult",
    "align",
    "run_multi_party",
    "run_two_party",
]
