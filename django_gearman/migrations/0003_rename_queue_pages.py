"""The workers and jobs pages' models get names no other class of the package has (``Worker``
and ``Job`` were also the core worker's classes). They have no tables; their content types
follow the new names, and their view permissions take the names Django's admin looks for
(``view_workerlist``, ``view_joblist``; grant them again where ``view_worker``/``view_job``
were granted)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("django_gearman", "0002_queue_pages"),
    ]

    operations = [
        migrations.RenameModel("Job", "JobList"),
        migrations.RenameModel("Worker", "WorkerList"),
        migrations.AlterModelOptions(
            name="joblist",
            options={
                "default_permissions": (),
                "managed": False,
                "permissions": [("view_joblist", "Can see the Gearman jobs page")],
                "verbose_name": "job",
            },
        ),
        migrations.AlterModelOptions(
            name="workerlist",
            options={
                "default_permissions": (),
                "managed": False,
                "permissions": [("view_workerlist", "Can see the Gearman workers page")],
                "verbose_name": "worker",
            },
        ),
    ]
