"""The app's tables: task results and the transactional outbox (and the admin pages' models).

The results table of the Django Tasks backend: one row per enqueued task.

The enqueuer writes the row (READY) before queueing the job; the worker updates it when the task
starts (RUNNING) and ends (SUCCESSFUL with the return value, or FAILED with the error and its
traceback). ``GearmanBackend.get_result()`` reads it, so results are visible from any process.
"""

from __future__ import annotations

from django.db import models

__all__ = ["JobList", "OutboxJob", "QueueStatus", "TaskResultRecord", "WorkerList"]


class TaskResultRecord(models.Model):
    """One Django Tasks task run through Gearman, and how it went."""

    class Status(models.TextChoices):
        # The same values as django.tasks.TaskResultStatus.
        READY = "READY", "Ready"
        RUNNING = "RUNNING", "Running"
        FAILED = "FAILED", "Failed"
        SUCCESSFUL = "SUCCESSFUL", "Successful"

    id = models.CharField(primary_key=True, max_length=64, editable=False)
    task_path = models.CharField("task", max_length=255, db_index=True)
    backend = models.CharField(max_length=64)
    queue_name = models.CharField("queue", max_length=64)
    priority = models.IntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.READY, db_index=True
    )
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    return_value = models.JSONField(null=True, blank=True)
    errors = models.JSONField(
        default=list, help_text="[{exception_class_path, traceback}], one per failed attempt"
    )
    worker_ids = models.JSONField(default=list)
    job_handle = models.CharField(max_length=255, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True, db_index=True)
    run_after = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "task result"
        ordering = ["-enqueued_at"]

    def __str__(self) -> str:
        return f"{self.task_path} {self.id} ({self.status})"

    @property
    def attempts(self) -> int:
        return len(self.worker_ids)


class OutboxJob(models.Model):
    """A background job written in the transaction that asked for it, waiting to be sent.

    :mod:`django_gearman.outbox` inserts the row in the caller's transaction (so a rolled-back
    job never leaves), sends it once the transaction committed, and deletes it once a job server
    said JOB_CREATED. A row whose send failed waits for the relay (``gearman_worker``, or
    ``manage.py gearman_relay``), which claims rows by a lease (``claimed_until``) so several
    relays never send one row at the same time.
    """

    id = models.BigAutoField(primary_key=True)
    alias = models.CharField(max_length=64)
    task_name = models.CharField("task", max_length=255, db_index=True)
    function = models.CharField(max_length=255)
    data = models.BinaryField()
    unique = models.CharField(max_length=64)
    priority = models.CharField(max_length=8, default="normal")
    run_at = models.FloatField(null=True, blank=True, help_text="Unix time of a scheduled job")
    created_at = models.DateTimeField(db_index=True)
    attempts = models.PositiveIntegerField(default=0, help_text="failed sends so far")
    last_error = models.TextField(blank=True)
    not_before = models.DateTimeField(null=True, blank=True, help_text="next send, after a failure")
    claimed_until = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=64, blank=True)

    class Meta:
        verbose_name = "outbox job"
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.task_name} #{self.id}"


# -- the admin's queue pages ------------------------------------------------------------------
# No tables: these unmanaged models exist so that the admin lists the pages (with no URL wiring by
# the user) and so that the auth app creates their permissions. The data comes live from the job
# servers (django_gearman.admin.monitor).


class _Page(models.Model):
    """A page of live server data: no rows, so its name is all there is to show."""

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return str(self._meta.verbose_name)


class QueueStatus(_Page):
    """The overview page: every configured server and its functions."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_queuestatus", "Can see the Gearman queue pages"),
            ("manage_queues", "Can cancel Gearman jobs, drop functions and retry failed tasks"),
        ]
        verbose_name = verbose_name_plural = "queue status"


class WorkerList(_Page):
    """The workers page: every worker connection of every server."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_workerlist", "Can see the Gearman workers page")]
        verbose_name = "worker"


class JobList(_Page):
    """The jobs page: every job a server holds."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_joblist", "Can see the Gearman jobs page")]
        verbose_name = "job"
