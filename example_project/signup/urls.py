from django.urls import path

from . import views

app_name = "signup"
urlpatterns = [
    path("", views.signup, name="signup"),
    path("thanks/<int:user_id>/", views.thanks, name="thanks"),
    path("report/", views.report, name="report"),
]
