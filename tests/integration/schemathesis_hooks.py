"""Loaded by the schemathesis run (``SCHEMATHESIS_HOOKS``) of test_openapi_schemathesis.

Teaches it the document's ``base58-key`` format: half the keys it sends are the live
network's (``BWPOOL_KNOWN_KEYS``, comma-separated: providers and payouts), so the 200
answers of ``/providers/{key}``, proofs and claims are generated and checked too; the rest
are random 32-byte keys, which the API must answer 404 (or, for ``after``, just skip).
"""

from __future__ import annotations

import os

import base58
import schemathesis
from hypothesis import strategies as st

from validator.openapi import KEY_FORMAT

_known = [k for k in os.environ.get("BWPOOL_KNOWN_KEYS", "").split(",") if k]
_random = st.binary(min_size=32, max_size=32).map(lambda raw: base58.b58encode(raw).decode())
schemathesis.openapi.format(KEY_FORMAT, st.one_of(st.sampled_from(_known), _random)
                            if _known else _random)
