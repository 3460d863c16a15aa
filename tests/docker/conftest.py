"""The docker self-tests need an engine and the peer images (``connformance setup --docker``).
Without them they skip with the reason, unless ``CONNFORMANCE_REQUIRE_DOCKER=1`` (the ``docker``
tox env and ``.ci/run`` set it): then a missing engine or image fails instead, so the container
path cannot rot unnoticed."""

from __future__ import annotations

import os

import pytest

REQUIRE_ENV = "CONNFORMANCE_REQUIRE_DOCKER"


@pytest.fixture(scope="session")
def docker_engine():
    from harness.docker.engine import engine_client, find_engine
    from harness.docker.images import missing_images

    found = find_engine(required=False)
    problem = None
    if found is None:
        problem = "no Docker engine answers"
    else:
        client = engine_client(found)
        try:
            missing = missing_images(client)
        finally:
            client.close()
        if missing:
            problem = f"images not built: {', '.join(missing)}"
    if problem:
        message = f"{problem}; run `connformance setup --docker`"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {message}")
        pytest.skip(message)
    return found
