"""pytest fixtures for projects that use django_gearman, registered by the package's ``pytest11``
entry point: installing the package is enough, with pytest-django configured as usual.

- ``gearman_outbox``: every ``GEARMAN`` alias records its jobs instead of sending them
  (``BACKEND: "outbox"``) for the test; yields :data:`django_gearman.testing.outbox`, empty.
- ``gearman_immediate``: every alias runs its jobs at once in the test's thread
  (``BACKEND: "immediate"``); yields :data:`django_gearman.testing.errors`, empty.

Nothing is imported from Django until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

__all__ = ["gearman_immediate", "gearman_outbox"]


@contextmanager
def _every_alias(backend: str) -> Iterator[None]:
    from django.test import override_settings  # noqa: PLC0415 - only once a fixture is used

    from . import conf, testing  # noqa: PLC0415 - no Django until a fixture is used

    aliases = conf.raw_settings()
    switched = {alias: {**value, "BACKEND": backend} for alias, value in aliases.items()}
    testing.clear()
    try:
        with override_settings(GEARMAN=switched):
            yield
    finally:
        testing.clear()


@pytest.fixture
def gearman_outbox() -> Iterator[list[Any]]:
    """Jobs are recorded, not sent: the list of :class:`~django_gearman.testing.Submission`."""
    from . import testing  # noqa: PLC0415 - no Django until a fixture is used

    with _every_alias("outbox"):
        yield testing.outbox


@pytest.fixture
def gearman_immediate() -> Iterator[list[tuple[str, BaseException]]]:
    """Jobs run at once in this thread; yields the failures of background jobs."""
    from . import testing  # noqa: PLC0415 - no Django until a fixture is used

    with _every_alias("immediate"):
        yield testing.errors
