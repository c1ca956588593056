"""docs/wire-format.md, checked against PHP (pecl gearman) on both servers.

PHP clients call our tasks (tests/php/task_client.php: doNormal, addTask, doBackground) and
a PHP worker (tests/php/task_worker.php) serves a ``remote_task``: the JSON envelope, the
results, the errors and the malformed workloads behave as the document says.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from django_gearman import TaskError, remote_task
from django_gearman.gearman import GearmanClient
from django_gearman.gearman.errors import JobException
from tests.helpers import wait_for
from tests.peers import PeerError
from tests.taskapp import tasks

from . import test_tasks

pytestmark = pytest.mark.interop

gearman = test_tasks.gearman  # the fixture: GEARMAN set to the parametrized gearman_server
task_worker = test_tasks.task_worker  # our worker, offering every registered task, in a thread


def task_client(php: Any, address: str, mode: str, function: str, *args: str) -> dict[str, Any]:
    """Run ``task_client.php ADDRESS MODE FUNCTION ARGS`` and return its JSON line."""
    result = php.run("task_client.php", address, mode, function, *args, timeout=40)
    try:
        reply = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise PeerError(
            f"task_client.php printed no JSON (exit {result.returncode}):\n"
            f"{result.stdout!r}\n{result.stderr}"
        ) from None
    assert result.returncode == 0, (reply, result.stderr)
    return reply


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The jobs task_worker.php logged so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


# -- a PHP client calling our tasks --------------------------------------------------------


def test_php_do_normal_gets_the_result_as_json(gearman: str, php) -> None:
    with task_worker(gearman):
        reply = task_client(php, gearman, "normal", tasks.add.function_name, "[2, 3]")
        assert (
            reply["workload"] == '{"args":[2,3],"kwargs":{}}'
        )  # json_encode(["args" => [2, 3], ...])
        assert (reply["ok"], reply["result"], reply["return_name"]) == (
            True,
            5,
            "GEARMAN_SUCCESS",
        ), reply

        args = ["żółw ✓", [1, {"deep": [None, True, 1.5]}]]
        kwargs = {"when": {"tz": "Europe/Warsaw", "ts": 1764000000.25}}
        for mode in ("normal", "task"):
            reply = task_client(
                php, gearman, mode, "tests.echo", json.dumps(args), json.dumps(kwargs)
            )
            assert reply["ok"] is True, reply
            assert reply["result"] == {"args": args, "kwargs": kwargs}


def test_php_do_background_runs_on_our_worker(gearman: str, php) -> None:
    key = f"php-bg-{time.monotonic_ns()}"
    with task_worker(gearman):
        reply = task_client(
            php, gearman, "background", tasks.flaky.function_name, json.dumps([key, 0])
        )
        assert reply["return_name"] == "GEARMAN_SUCCESS" and reply["handle"].startswith("H:"), reply
        wait_for(
            lambda: tasks.calls.get(key) == 1, what="the PHP client's background job on our worker"
        )


def test_a_task_error_reaches_php_as_documented(gearman: str, php) -> None:
    with task_worker(gearman):
        # doNormal(): only the return code, GEARMAN_WORK_EXCEPTION, no details.
        reply = task_client(php, gearman, "normal", tasks.fail.function_name, '["boom"]')
        assert (reply["ok"], reply["return_name"]) == (False, "GEARMAN_WORK_EXCEPTION"), reply
        # addTask() + setExceptionCallback(): our {"type", "message"}.
        reply = task_client(php, gearman, "task", tasks.fail.function_name, '["boom"]')
        assert reply["ok"] is False and reply["error"] == {
            "type": "ValueError",
            "message": "boom",
        }, reply


def test_a_plain_text_workload_fails_and_the_worker_goes_on(gearman: str, php) -> None:
    with task_worker(gearman):
        reply = task_client(php, gearman, "normal", tasks.add.function_name, "--workload", "hello")
        assert (reply["ok"], reply["return_name"]) == (False, "GEARMAN_WORK_EXCEPTION"), reply
        reply = task_client(php, gearman, "task", tasks.add.function_name, "--workload", "hello")
        assert reply["error"] == {
            "type": "django_gearman.gearman.errors.EnvelopeError",
            "message": "the workload is not JSON "
            '(Expecting value: line 1 column 1 (char 0)): "hello"',
        }, reply
        # the PHP pitfall the document warns about: json_encode(["kwargs" => []]) is a JSON array
        reply = task_client(
            php,
            gearman,
            "task",
            tasks.add.function_name,
            "--workload",
            '{"args":[1,2],"kwargs":[]}',
        )
        assert reply["error"] == {
            "type": "django_gearman.gearman.errors.EnvelopeError",
            "message": '"kwargs" must be a JSON object, not a JSON array',
        }, reply
        reply = task_client(php, gearman, "normal", tasks.add.function_name, "[20, 22]")
        assert (reply["ok"], reply["result"]) == (True, 42), reply


def test_clients_without_the_exceptions_option_get_work_fail(gearman: str) -> None:
    with task_worker(gearman):
        with override_settings(
            GEARMAN={
                "default": {"SERVERS": [gearman], "OPTIONS": {"timeout": 15, "exceptions": False}}
            }
        ):
            with pytest.raises(TaskError) as info:
                tasks.fail.submit("boom")
        assert (info.value.type, info.value.message) == (
            "",
            "the worker reported failure (WORK_FAIL)",
        )
        with pytest.raises(TaskError) as info:  # with the option (the default): the details
            tasks.fail.submit("boom")
        assert (info.value.type, info.value.message) == ("ValueError", "boom")


# -- a PHP worker serving a remote_task ------------------------------------------------------


def test_remote_task_submit_and_background_on_a_php_worker(
    gearman: str, php, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    with override_settings(
        GEARMAN={"default": {"SERVERS": [gearman], "PREFIX": "site1.", "OPTIONS": {"timeout": 15}}}
    ):
        add_numbers = remote_task("php.add_numbers")
        assert add_numbers.function_name == "site1.php.add_numbers"
        php.start("task_worker.php", gearman, add_numbers.function_name, log, wait_for="ready")

        before = time.time()
        assert add_numbers.submit(2, 3) == 5
        result = add_numbers.submit(1.5, 1, scale=2)
        assert result == 5.0 and isinstance(result, float)  # JSON_PRESERVE_ZERO_FRACTION
        first = log_lines(log)[0]
        assert (first["args"], first["kwargs"]) == ([2, 3], {})
        # no "background", no "attempt" on a first try; a task id always
        assert set(first["meta"]) == {"id", "enqueued_at"}
        assert len(first["meta"]["id"]) == 32
        assert before - 1 <= first["meta"]["enqueued_at"] <= time.time() + 1

        handle = add_numbers.background(7, 8)
        assert str(handle).startswith("H:")
        job = wait_for(
            lambda: next((j for j in log_lines(log) if j["args"] == [7, 8]), None),
            what="the background job on PHP",
        )
        assert job["meta"]["background"] is True and isinstance(job["meta"]["enqueued_at"], float)
        assert job["handle"] == str(handle)


def test_a_php_worker_error_reaches_python_as_task_error(gearman: str, php) -> None:
    add_numbers = remote_task("php.add_numbers")
    php.start("task_worker.php", gearman, add_numbers.function_name, wait_for="ready")
    with pytest.raises(TaskError) as info:
        add_numbers.submit(1, "x")
    assert (info.value.type, info.value.message) == (
        "InvalidArgumentException",
        'argument 1 is not a number: "x"',
    )
    with GearmanClient([gearman], timeout=15) as client:  # a workload that is no envelope
        with pytest.raises(JobException) as raw:
            client.submit(add_numbers.function_name, b'{"args": {"a": 1}}')
    assert json.loads(raw.value.data) == {
        "type": "EnvelopeError",
        "message": '"args" must be a JSON array, "kwargs" and "meta" JSON objects',
    }
    assert add_numbers.submit(1, 1) == 2  # the PHP worker goes on


def test_php_worker_exceptions_left_uncaught_or_work_fail(gearman: str, php) -> None:
    php.worker(
        gearman
    )  # tests/php/worker.php: php_exception throws, php_fail sets GEARMAN_WORK_FAIL
    with pytest.raises(TaskError) as info:
        remote_task("php_exception").submit("x")
    assert (info.value.type, info.value.message) == (
        "",
        "Unable to add worker function",
    )  # pecl's fixed text
    with pytest.raises(TaskError) as info:
        remote_task("php_fail").submit("x")
    assert (info.value.type, info.value.message) == ("", "the worker reported failure (WORK_FAIL)")
