"""``python -m django_gearman.server [addr:]port``: the job server without a Django project."""

from __future__ import annotations

import sys

from ..gearman.server.cli import main

sys.exit(main())
