"""The JSON wire format of tasks: what a job's workload, result and error look like.

A task's workload is one JSON object (UTF-8)::

    {"args": [1, "two"], "kwargs": {"three": 3}, "meta": {"attempt": 2}}

Every key may be left out (``{}`` calls the task with no arguments); any other key is an error,
so a typo such as ``"arg"`` fails loudly instead of calling the task without arguments. ``meta``
is ours (task id, attempt number, enqueue time, retry state); other clients may omit it. The
result of a task is its return value as JSON; a failure is a WORK_EXCEPTION whose data is a JSON
object ``{"type": "ValueError", "message": "..."}``. Only JSON types travel: a value JSON cannot
carry raises :class:`EnvelopeError` in the caller, at enqueue time, not later in the worker.
Nothing is ever pickled. See docs/wire-format.md, with PHP examples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .errors import EnvelopeError

__all__ = [
    "Call",
    "EnvelopeError",
    "decode_call",
    "decode_error",
    "decode_result",
    "encode_call",
    "encode_error",
    "encode_result",
]

_KEYS = frozenset(("args", "kwargs", "meta"))
_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_encode = _encoder.encode


def _reject_constant(name: str) -> Any:
    raise EnvelopeError(f"{name} is not JSON")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


class Call(NamedTuple):
    """A decoded workload: what to call the task with, and the envelope's metadata."""

    args: list[Any]
    kwargs: dict[str, Any]
    meta: dict[str, Any]


def encode_call(
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> bytes:
    """The workload for a call, as compact UTF-8 JSON; empty parts are left out."""
    envelope: dict[str, Any] = {}
    if args:
        envelope["args"] = list(args)
    if kwargs:
        envelope["kwargs"] = dict(kwargs)
    if meta:
        envelope["meta"] = dict(meta)
    try:
        data = _encode(envelope).encode()
    except (TypeError, ValueError) as error:
        raise EnvelopeError(_explain(envelope, error)) from None
    if b'":' in data:  # a dict somewhere: json turns a key 1 into "1" silently; refuse instead
        for part in ("args", "kwargs", "meta"):
            if part in envelope:
                _refuse_non_str_keys(envelope[part], None, f"[{part!r}]")
    return data


def decode_call(data: bytes) -> Call:
    """Parse a workload; :class:`EnvelopeError` says what is wrong with it, for the client."""
    try:
        envelope = _decode(data.decode())
    except UnicodeDecodeError as error:
        raise EnvelopeError(f"the workload is not UTF-8 text: {error}") from None
    except ValueError as error:
        preview = data[:60].decode(errors="replace")
        raise EnvelopeError(f'the workload is not JSON ({error}): "{preview}"') from None
    if type(envelope) is not dict:
        raise EnvelopeError(
            f'the workload must be a JSON object like {{"args": [...], "kwargs": {{...}}}}, '
            f"not a JSON {_json_type(envelope)}"
        )
    if not envelope.keys() <= _KEYS:
        unknown = ", ".join(sorted(repr(k) for k in envelope.keys() - _KEYS))
        raise EnvelopeError(
            f'unknown key(s) {unknown} in the workload; it may have "args", "kwargs" and "meta"'
        )
    args = envelope.get("args", [])
    kwargs = envelope.get("kwargs", {})
    meta = envelope.get("meta", {})
    if type(args) is not list:
        raise EnvelopeError(f'"args" must be a JSON array, not a JSON {_json_type(args)}')
    if type(kwargs) is not dict:
        raise EnvelopeError(f'"kwargs" must be a JSON object, not a JSON {_json_type(kwargs)}')
    if type(meta) is not dict:
        raise EnvelopeError(f'"meta" must be a JSON object, not a JSON {_json_type(meta)}')
    return Call(args, kwargs, meta)


def encode_result(value: Any) -> bytes:
    """A task's return value as JSON (:class:`EnvelopeError` if JSON cannot carry it)."""
    try:
        data = _encode(value).encode()
    except (TypeError, ValueError) as error:
        raise EnvelopeError(_explain(value, error, what="the result")) from None
    if b'":' in data:
        _refuse_non_str_keys(value, "the result", "")
    return data


def decode_result(data: bytes) -> Any:
    """A result back to Python. An empty result (a worker that sent nothing) is ``None``."""
    if not data:
        return None
    try:
        return _decode(data.decode())
    except (UnicodeDecodeError, ValueError) as error:
        preview = data[:60].decode(errors="replace")
        raise EnvelopeError(f'the result is not JSON ({error}): "{preview}"') from None


def encode_error(error: BaseException) -> bytes:
    """WORK_EXCEPTION data for ``error``: ``{"type": ..., "message": ...}``. The type is the
    exception class's dotted path, without ``builtins.`` (``ValueError``, ``myapp.errors.Full``)."""
    kind = type(error)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return _encode({"type": name, "message": str(error)}).encode()


def decode_error(data: bytes) -> tuple[str, str]:
    """``(type, message)`` from WORK_EXCEPTION data; text that is not our JSON is the message
    (PHP workers' exceptions arrive as plain text)."""
    try:
        value = _decode(data.decode())
    except (UnicodeDecodeError, ValueError):
        return "", data.decode(errors="replace")
    if type(value) is dict and isinstance(value.get("message"), str):
        return str(value.get("type") or ""), value["message"]
    return "", data.decode(errors="replace")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _explain(value: Any, error: Exception, *, what: str | None = None) -> str:
    """Name the first value JSON cannot carry, and where it is."""
    path = _find_bad(value, "")
    if path is not None:
        where, bad = path
        place = where.lstrip(".") or "the value"
        if what is None:  # an envelope: say "argument 0" / "keyword argument 'x'"
            place = _argument_name(where)
        else:
            place = f"{what}{where}" if where else what
        kind = "NaN/Infinity" if isinstance(bad, float) else type(bad).__name__
        return (
            f"{place} is {kind} ({bad!r:.60}), which JSON cannot carry; "
            "pass JSON types (str, int, float, bool, None, list, dict with str keys), e.g. an id "
            "instead of a model instance"
        )
    return f"cannot encode {what or 'the arguments'} as JSON: {error}"


def _argument_name(where: str) -> str:
    if where.startswith("['args']["):
        index, _, rest = where[len("['args'][") :].partition("]")
        return f"argument {index}{rest}"
    if where.startswith("['kwargs']["):
        name, _, rest = where[len("['kwargs'][") :].partition("]")
        return f"keyword argument {name}{rest}"
    if where.startswith("['meta']"):
        return "meta" + where[len("['meta']") :]
    return where or "the arguments"


def _refuse_non_str_keys(value: Any, what: str | None, where: str) -> None:
    found = _find_bad(value, where, keys_only=True)
    if found is not None:
        where, key = found
        place = _argument_name(where) if what is None else f"{what}{where}"
        raise EnvelopeError(
            f"{place} is {type(key).__name__} ({key!r:.60}), which JSON cannot carry as a key "
            "(it would arrive as a string); use str keys"
        )


def _find_bad(
    value: Any, where: str, *, keys_only: bool = False, seen: set[int] | None = None
) -> tuple[str, Any] | None:
    """The path and value of the first thing JSON cannot carry (or, with ``keys_only``, the
    first non-str dict key). Containers already on the path are skipped: json reports cycles."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if keys_only or math.isfinite(value) else (where, value)
    if isinstance(value, (list, tuple, dict)):
        seen = set() if seen is None else seen
        if id(value) in seen:
            return None
        seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return (f"{where} key {key!r}", key)
                found = _find_bad(item, f"{where}[{key!r}]", keys_only=keys_only, seen=seen)
                if found is not None:
                    return found
        else:
            for index, item in enumerate(value):
                found = _find_bad(item, f"{where}[{index}]", keys_only=keys_only, seen=seen)
                if found is not None:
                    return found
        seen.discard(id(value))
        return None
    return None if keys_only else (where, value)
