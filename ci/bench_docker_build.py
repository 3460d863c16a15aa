"""How long the docker runtime's images take: from nothing, and warm.

    python ci/bench_docker_build.py            # cold (removes the project's images first), then warm
    python ci/bench_docker_build.py --warm     # only the warm rebuild

Cold: every ``connformance/*`` image and the wheelhouse removed, then the Debian base
(debootstrap + import), the wheelhouse and the four peer images built. Warm: the same steps again
with nothing changed (every image found at its content tag). Targets (issue 7): cold < 10 min,
warm < 30 s. The engine must answer (``connformance docker up``); the agents must be built
(``connformance setup``). Prints one line per phase and a final COLD/WARM line.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.docker import base, engine, images  # noqa: E402


def _remove_project_images(client) -> int:
    removed = 0
    for image in client.images.list(filters={"label": "connformance.image"}):
        for tag in image.tags:
            client.images.remove(tag, force=True)
            removed += 1
    for image in client.images.list(name="connformance/base"):
        for tag in image.tags:
            client.images.remove(tag, force=True)
            removed += 1
    return removed


def _build_all(client) -> dict[str, float]:
    quiet = lambda line: None  # noqa: E731 - the phases are printed here
    phases: dict[str, float] = {}
    start = time.monotonic()
    if not os.environ.get(images.BASE_ENV):
        base.build_base(client, quiet)
    phases["base"] = time.monotonic() - start
    start = time.monotonic()
    images.build_wheelhouse(quiet)
    phases["wheelhouse"] = time.monotonic() - start
    for name, seconds in images.build_images(client, quiet).items():
        phases[name] = seconds
    return phases


def main(argv: list[str]) -> int:
    found = engine.find_engine()
    client = engine.engine_client(found)
    try:
        if "--warm" not in argv:
            removed = _remove_project_images(client)
            shutil.rmtree(images.wheelhouse_dir(), ignore_errors=True)
            print(f"removed {removed} image tag(s) and the wheelhouse; engine {found.origin} {found.version}")
            start = time.monotonic()
            phases = _build_all(client)
            cold_s = time.monotonic() - start
            print("cold: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
            print(f"COLD BUILD (every image from nothing): {cold_s:.1f} s")
        start = time.monotonic()
        phases = _build_all(client)
        warm_s = time.monotonic() - start
        print("warm: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
        print(f"WARM REBUILD (nothing changed): {warm_s:.2f} s")
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
