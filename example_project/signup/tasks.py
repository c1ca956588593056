"""The example's Gearman tasks: ``manage.py gearman_worker`` finds them (django_gearman imports
every installed app's ``tasks.py``) and offers them as ``signup.tasks.send_signup_mail`` and
``signup.tasks.build_report``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.utils import timezone

from django_gearman import current_job, gearman_task


@gearman_task(retries=3)
def send_signup_mail(user_id: int) -> str:
    """Send the welcome mail to a new user; runs in the background on a worker. A failure (the
    mail server is down) is retried three times, 1, 2 and 4 seconds apart."""
    user = get_user_model().objects.get(pk=user_id)
    send_mail(
        subject=f"Welcome, {user.get_username()}!",
        message=(
            f"Hello {user.get_username()},\n\n"
            "thanks for signing up. This mail was sent by a Gearman worker, not by the web "
            "request.\n"
        ),
        from_email=None,  # DEFAULT_FROM_EMAIL
        recipient_list=[user.email],
    )
    return user.email


@gearman_task(queue="reports")  # gearman_worker --queue reports runs only these
def build_report(days: int) -> dict[str, Any]:
    """Signups per day over the last ``days`` days, one step per day; the caller of
    ``.submit()`` sees the progress (``send_status(step, days)``) as it is made."""
    users = get_user_model().objects.filter(is_staff=False)  # signups, not the admin login
    job = current_job()  # None when called in-process, as a plain function
    today = timezone.now().date()
    per_day = []
    for step in range(1, days + 1):
        day = today - timedelta(days=step - 1)
        per_day.append(
            {"date": day.isoformat(), "signups": users.filter(date_joined__date=day).count()}
        )
        if job is not None:
            job.send_status(step, days)
    latest = users.order_by("-date_joined", "-pk").first()
    return {
        "days": days,
        "total_users": users.count(),
        "latest_signup": latest.get_username() if latest else None,
        "per_day": per_day,
    }
