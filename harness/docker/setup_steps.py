"""``connformance setup --docker``: the steps that make the docker runtime usable, in order.

| step               | does                                                                          |
|--------------------|-------------------------------------------------------------------------------|
| docker-engine      | finds a reachable engine, else installs docker.io and starts the project's own |
| docker-base        | debootstraps and imports the Debian base (skipped with CONNFORMANCE_DOCKER_BASE) |
| docker-wheelhouse  | ``pip wheel`` of the peers' pinned Python dependencies, on the host            |
| docker-images      | builds every peer image missing at its content tag                             |
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from harness.docker import base, engine, images
from harness.toolchain import Step, register_step

T = TypeVar("T")


def _with_client(fn: Callable[[Any], T], *, required: bool = True) -> T | None:
    """``fn(client)`` on the engine ``find_engine`` picks; None when none answers and not ``required``."""
    found = engine.find_engine(required=required)
    if found is None:
        return None
    client = engine.engine_client(found)
    try:
        return fn(client)
    finally:
        client.close()


def _base_done() -> bool:
    if os.environ.get(images.BASE_ENV):
        return True
    return bool(_with_client(lambda c: not images.missing_refs(c, [base.base_image_ref()]), required=False))


def _images_done() -> bool:
    return bool(_with_client(lambda c: not images.missing_images(c), required=False))


register_step(Step(
    name="docker-engine",
    description="find a Docker engine, or install docker.io and start the project's own dockerd",
    is_done=lambda: engine.find_engine(required=False) is not None,
    run=lambda progress: engine.start_own_engine(progress) and None,
    group="docker",
))
register_step(Step(
    name="docker-base",
    description=f"debootstrap the Debian base image ({', '.join(base.BASE_PACKAGES)}) and docker import it",
    is_done=_base_done,
    run=lambda progress: _with_client(lambda c: base.build_base(c, progress)) and None,
    group="docker",
))
register_step(Step(
    name="docker-wheelhouse",
    description="pip wheel the peers' pinned Python dependencies for the python image",
    is_done=lambda: (images.wheelhouse_dir() / ".complete").exists(),
    run=lambda progress: images.build_wheelhouse(progress) and None,
    group="docker",
))
register_step(Step(
    name="docker-images",
    description=f"build the peer images ({', '.join(images.IMAGES)}) missing at their content tag",
    is_done=_images_done,
    run=lambda progress: _with_client(lambda c: images.build_images(c, progress)) and None,
    group="docker",
))
