#!/usr/bin/env python
"""The example project's manage.py: run it from anywhere (``python example_project/manage.py``)."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    from django.core.management import execute_from_command_line  # noqa: PLC0415 - after the env

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
