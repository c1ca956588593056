"""TLS for Gearman connections: the server's and the client's/worker's ``ssl.SSLContext``.

(Stub: filled in by the TLS work of issue #14.)
"""

from __future__ import annotations

import argparse
import ssl

__all__ = ["add_server_arguments", "server_context"]


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--ssl-cert``, ``--ssl-key`` and ``--ssl-ca`` to the server's command line."""


def server_context(options: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's context from the parsed options, or None when TLS is off."""
    return None
