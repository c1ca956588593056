"""Test doubles: run tasks in-process (``immediate``) or record them (``outbox``), no server.

Switch an alias with its ``MODE``, e.g. in test settings or with ``override_settings``::

    GEARMAN = {"default": {"MODE": "outbox"}}

    def test_signup_queues_the_mail(client):
        client.post("/signup/", {...})
        [sent] = testing.outbox
        assert sent.task == "accounts.tasks.send_signup_mail" and sent.args == [user.pk]

In ``outbox`` mode nothing runs: each ``.background()`` / ``.submit()`` appends a
:class:`Submission` to :data:`outbox` (``.submit()`` then returns None). In ``immediate`` mode the
task runs at once in the calling thread, with its arguments and result passed through JSON exactly
as a worker would see them; ``.submit()`` returns the result or raises
:class:`~django_gearman.tasks.TaskError`, and a failing ``.background()`` is logged and kept in
:data:`errors`, like a worker's failure, instead of failing the caller. Both modes check the
arguments as the real one does (a value JSON cannot carry raises in the caller).
:func:`clear` empties both lists; the ``gearman_outbox`` pytest fixture does it for you.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import conf
from .envelope import decode_call, decode_result, encode_call, encode_result
from .jobs import JobHandle

if TYPE_CHECKING:
    from .tasks import GearmanTask

__all__ = ["Submission", "clear", "dispatch", "errors", "outbox"]

logger = logging.getLogger("django_gearman.testing")

NOT_HANDLED: Any = object()


@dataclass(frozen=True)
class Submission:
    """One task call recorded in :data:`outbox`."""

    task: str
    function: str
    args: list[Any]
    kwargs: dict[str, Any]
    background: bool
    priority: str
    unique: str | None
    run_at: float | None
    alias: str


#: Every submission made in ``outbox`` mode, in order.
outbox: list[Submission] = []
#: ``(task name, exception)`` of background tasks that failed in ``immediate`` mode.
errors: list[tuple[str, BaseException]] = []
_handles = itertools.count(1)


def clear() -> None:
    """Empty :data:`outbox` and :data:`errors`."""
    outbox.clear()
    errors.clear()


def dispatch(task: GearmanTask[..., Any], args: Any, kwargs: Any, *, background: bool) -> Any:
    """Called by every ``.background()``/``.submit()``: :data:`NOT_HANDLED` in ``gearman``
    mode (the real submission goes ahead), else the call's return value."""
    alias = conf.get_settings(task.options.alias)
    if alias.mode == "gearman":
        return NOT_HANDLED
    call = decode_call(encode_call(args, kwargs))  # what a worker would receive
    handle = JobHandle(f"{alias.mode}:{next(_handles)}")
    if alias.mode == "outbox":
        options = task.options
        unique = options.unique(*args, **kwargs) if callable(options.unique) else options.unique
        run_at = options.run_at.timestamp() if hasattr(options.run_at, "timestamp") else options.run_at  # type: ignore[union-attr]
        outbox.append(Submission(
            task=task.name, function=alias.function_name(task.name), args=call.args, kwargs=call.kwargs,
            background=background, priority=options.priority.name.lower(), unique=unique, run_at=run_at,
            alias=alias.alias,
        ))  # fmt: skip
        return handle if background else None
    if background:
        try:
            decode_result(encode_result(task.func(*call.args, **call.kwargs)))
        except Exception as error:  # a worker would log it and go on
            logger.exception("%s failed (immediate mode)", task.name)
            errors.append((task.name, error))
        return handle
    from .tasks import TaskError  # noqa: PLC0415

    try:
        return decode_result(encode_result(task.func(*call.args, **call.kwargs)))
    except Exception as error:
        raise TaskError(task.name, type(error).__name__, str(error)) from error
