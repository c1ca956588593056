from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from django_gearman import TaskError
from django_gearman.gearman.errors import GearmanError

from .forms import SignupForm
from .tasks import build_report, send_signup_mail


def signup(request: HttpRequest) -> HttpResponse:
    """The signup form: creates the user and queues the welcome mail in the same transaction,
    through the outbox: the mail is sent once the row is committed (so the worker finds the
    user), and still sent later if no job server answers now. The response does not wait."""
    form = SignupForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        with transaction.atomic():
            user = get_user_model().objects.create_user(
                username=form.cleaned_data["username"], email=form.cleaned_data["email"]
            )
            send_signup_mail.background_on_commit(user.pk)
        return redirect("signup:thanks", user_id=user.pk)
    return render(request, "signup/signup.html", {"form": form})


def thanks(request: HttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    return render(request, "signup/thanks.html", {"new_user": user})


def report(request: HttpRequest) -> HttpResponse:
    """Runs ``build_report`` on a worker and waits for it, collecting its progress reports."""
    try:
        days = min(max(int(request.GET.get("days", 7)), 1), 31)
    except ValueError:
        days = 7
    steps: list[tuple[int, int]] = []
    result, error = None, None
    try:
        result = build_report.using(
            on_status=lambda status: steps.append((status.numerator, status.denominator))
        ).submit(days)
    except (TaskError, GearmanError) as exc:
        error = str(exc)
    context = {
        "days": days,
        "steps": steps,
        "result": result,
        "result_json": json.dumps(result, indent=2),
        "error": error,
    }
    return render(request, "signup/report.html", context, status=503 if error else 200)
