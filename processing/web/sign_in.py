"""The sign-in page, rate-limited per username and per address.

Failed attempts count against the username (``LOGIN_FAILURES_PER_USERNAME``),
so nobody can guess one person's password quickly, and every attempt counts
against the address it comes from (``LOGIN_ATTEMPTS_PER_ADDRESS``), so nobody
can try many usernames quickly. Both in windows of ``LOGIN_WINDOW`` seconds.
Over a limit the page answers 429 with ``Retry-After`` and says how long to
wait, without checking the password.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse

from processing import rate_limits
from processing.jobs.actions import address_of


def _limits() -> tuple[rate_limits.Limit, rate_limits.Limit]:
    window = int(settings.LOGIN_WINDOW)
    return (
        rate_limits.Limit("login-username", settings.LOGIN_FAILURES_PER_USERNAME, window),
        rate_limits.Limit("login-address", settings.LOGIN_ATTEMPTS_PER_ADDRESS, window),
    )


def _username(request: HttpRequest) -> str:
    return (request.POST.get("username") or "").strip().lower()[:150]


class SignInView(LoginView):
    """Django's login page, refusing (429) past the attempts allowed."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """Check the limits first; only then the password."""
        per_username, per_address = _limits()
        try:
            rate_limits.charge(
                per_address,
                address_of(request) or "unknown",
                message="Too many sign-in attempts from your address.",
            )
            rate_limits.check(
                per_username,
                _username(request),
                message="Too many failed sign-in attempts for this username.",
            )
        except rate_limits.RateLimited as exc:
            form = self.get_form()
            wait = rate_limits.in_words(exc.retry_after)
            context = self.get_context_data(
                form=form, refusal=f"{exc.message} Try again in {wait}."
            )
            response = self.render_to_response(context, status=429)
            response["Retry-After"] = str(exc.retry_after)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        """A failed attempt counts against the username."""
        per_username, _ = _limits()
        # Already at the limit: the next attempt is refused anyway.
        with contextlib.suppress(rate_limits.RateLimited):
            rate_limits.charge(per_username, _username(self.request), message="")
        return super().form_invalid(form)
