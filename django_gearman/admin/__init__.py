"""The admin: the live queue pages (:mod:`.pages`, fed by :mod:`.monitor`) and the task
results table (:mod:`.results`, with :mod:`.retry`). Django's admin autodiscovery imports this
package, which registers them all."""

from __future__ import annotations

from . import pages, results

__all__ = ["pages", "results"]
