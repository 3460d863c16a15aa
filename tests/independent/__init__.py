"""Minimal peers written from the repository's docs alone (docs/roles/*.md, docs/manifest.md and
the wire in research/nacos-protocol.md §1), never from the harness's code: they import nothing
from ``harness``. tests/integration/test_independent_peers.py plugs each in through
``--peers-file`` as a new user would and checks it is judged OK on the cases it implements — the
proof that the contract is complete enough for a program written against it."""
