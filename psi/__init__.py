"""Private set intersection: find the IDs several parties share without exchanging the rest.

Two levels of API:

- Recipes: :func:`align` (each party's ``DataFrame`` in, each party's rows of the common IDs in
  one common order out) and the ``vfl psi`` command.
- Roles, all sans-I/O state machines that take decoded envelopes and return what to send, with
  in-process drivers that encode every message and record a transcript:

  ============================  ==========================================================
  two parties                   :class:`PsiInitiator`, :class:`PsiResponder`,
                                :func:`run_two_party` (ECDH over X25519; modes ``both``,
                                ``receiver``, ``cardinality``; a process pool, ``n_jobs``)
  three or more parties         :class:`NPartyPsiParty`, :func:`run_n_party` (no pairwise
                                intersections revealed)
  small client, large server    :class:`UnbalancedClient`, :class:`UnbalancedServer`,
                                :func:`run_unbalanced` (OPRF; the server precomputes its
                                set once, :class:`ServerTagTable`, cacheable on disk)
  ============================  ==========================================================

- :mod:`psi.normalise`: ID normalisation (strip, case-fold, NFKC, e-mail, phone, custom)
  applied identically by every party before hashing.

Protocols
---------
Two parties (``psi._roles``): each hashes its IDs to X25519 u-coordinates (SHA-256 of a domain
tag, the session salt and the ID by default; ``hash_to_curve="elligator2"`` uses libsodium's
Elligator 2 map, the RFC 9380 map family but not its full suite) and blinds them with a fresh
secret scalar; the initiator sends ``H(x)^a``, the responder returns ``H(x)^ab`` and sends
``H(y)^b``, the initiator returns ``H(y)^ba`` (mode ``both``). Each party keeps its IDs whose
double-blinded value the other also holds. In ``receiver`` mode the last step is skipped; in
``cardinality`` mode the double-blinded points come back shuffled and only their count is used
(the initiator reports it back). The heavy arithmetic runs on :class:`PsiEngine`, a process pool
(``n_jobs``, all cores by default) that uses the ``spawn`` start method: scripts that call PSI
on large inputs need the usual ``if __name__ == "__main__":`` guard.

Three or more parties (``psi._multiparty``): a ring of blindings in the prime-order Ed25519
group with one-time masks, a leader and a combiner; see that module.

Unbalanced (``psi._unbalanced``): a 2HashDH OPRF (Jarecki, Kiayias and Krawczyk) over the
prime-order Ed25519 group; the server's PRF tags of its set are computed once and reused.

Security
--------
Semi-honest parties; DDH in the groups used; SHA-2 as random oracles. No raw ID and no plain hash
of an ID ever crosses; every point received is validated (length, canonical encoding, not of
small order / in the prime-order subgroup) and anything malformed, out of order, or from another
session raises :class:`~protocols.errors.RemoteProtocolError` and changes nothing.

- Every party learns the others' set sizes (distinct IDs).
- Two parties, ``both``: each learns the intersection (as its own rows). ``receiver``: only the
  initiator does; the responder learns only the sizes. ``cardinality``: both learn only
  ``|A ∩ B|``.
- Three or more parties: every party learns the final intersection only; the combiner also
  learns the size of every sub-intersection (no identities). If the leader and the combiner
  collude they learn more (see ``psi._multiparty``).
- Unbalanced: the client learns the intersection and the server set's size; the server learns
  the client set's size (and the intersection only with ``reveal_to_server``).
"""

from __future__ import annotations

from psi._align import align, align_rows
from psi._driver import (
    MultiPartyPsiResult,
    TwoPartyPsiResult,
    run_multi_party,
    run_two_party,
)
from psi._ecdh import HASH_TO_CURVE, SUITE
from psi._engine import PsiEngine
from psi._messages import (
    REGISTRY,
    DoubleBlindedInitiatorPoints,
    DoubleBlindedResponderPoints,
    InitiatorBlindedPoints,
    InitiatorHello,
    IntersectionCardinality,
    IntersectionPositions,
    ResponderBlindedPoints,
    ResponderHello,
)
from psi._multiparty import (
    NPartyPsiParty,
    NPartyPsiResult,
    NPartyPsiState,
    NPartyRole,
    run_n_party,
)
from psi._multiparty_messages import N_PARTY_REGISTRY
from psi._roles import (
    DEFAULT_CHUNK_POINTS,
    REVEAL_MODES,
    PsiInitiator,
    PsiOutput,
    PsiResponder,
    PsiState,
)
from psi._unbalanced import (
    UnbalancedClient,
    UnbalancedPsiResult,
    UnbalancedServer,
    UnbalancedState,
    run_unbalanced,
)
from psi._unbalanced_messages import UNBALANCED_REGISTRY
from psi._unbalanced_oprf import SUITE as UNBALANCED_SUITE
from psi._unbalanced_oprf import OprfKey, ServerTagTable, TagSet
from psi.normalise import Normaliser, parse_normaliser

__all__ = [
    "DEFAULT_CHUNK_POINTS",
    "HASH_TO_CURVE",
    "N_PARTY_REGISTRY",
    "REGISTRY",
    "REVEAL_MODES",
    "SUITE",
    "UNBALANCED_REGISTRY",
    "UNBALANCED_SUITE",
    "DoubleBlindedInitiatorPoints",
    "DoubleBlindedResponderPoints",
    "InitiatorBlindedPoints",
    "InitiatorHello",
    "IntersectionCardinality",
    "IntersectionPositions",
    "MultiPartyPsiResult",
    "NPartyPsiParty",
    "NPartyPsiResult",
    "NPartyPsiState",
    "NPartyRole",
    "Normaliser",
    "OprfKey",
    "PsiEngine",
    "PsiInitiator",
    "PsiOutput",
    "PsiResponder",
    "PsiState",
    "ResponderBlindedPoints",
    "ResponderHello",
    "ServerTagTable",
    "TagSet",
    "TwoPartyPsiResult",
    "UnbalancedClient",
    "UnbalancedPsiResult",
    "UnbalancedServer",
    "UnbalancedState",
    "align",
    "align_rows",
    "parse_normaliser",
    "run_multi_party",
    "run_n_party",
    "run_two_party",
    "run_unbalanced",
]
