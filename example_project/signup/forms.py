from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model


class SignupForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField()

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username=username).exists():
            raise forms.ValidationError("That username is taken.")
        return username
