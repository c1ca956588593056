"""The admin: the live queue pages (:mod:`.pages`, fed by :mod:`.monitor`) and the task
results table (:mod:`.results`, with :mod:`.retry`), and the outbox (:mod:`.outbox`). Django's
admin autodiscovery imports this package, which registers them all."""

from __future__ import annotations

from . import outbox, pages, results

__all__ = ["outbox", "pages", "results"]
