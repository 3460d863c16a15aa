"""The `--variant NAME <peer flags>` entry point every broken peer module shares."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any


def run_variant(argv: list[str], variants: Mapping[str, Any], start: Callable[[list[str], Any], int],
                flags: str = "peer flags") -> int:
    """Pick ``variants[NAME]`` from ``--variant NAME`` and start it with the remaining flags."""
    if len(argv) < 2 or argv[0] != "--variant" or argv[1] not in variants:
        print(f"usage: --variant {{{','.join(variants)}}} <{flags}>", file=sys.stderr)
        return 2
    return start(argv[2:], variants[argv[1]])
