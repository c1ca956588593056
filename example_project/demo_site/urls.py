from django.urls import include, path

urlpatterns = [path("", include("signup.urls"))]
