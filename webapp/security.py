"""Security headers on every response; redirects that never name another host."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from flask import Flask, Response, request

# No inline script or style anywhere; images may be data: URIs (the heat map and the photo are
# returned inline so that nothing uploaded is ever written to disk or served from a URL).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Sent only on answers that came over HTTPS (directly, or per X-Forwarded-Proto from a trusted proxy:
# gunicorn's forwarded_allow_ips), so that a plain-HTTP test deployment does not lock browsers out.
STRICT_TRANSPORT_SECURITY = "max-age=31536000; includeSubDomains"


def init_app(app: Flask) -> None:
    """Register the after-request hook that sets the headers."""

    @app.after_request
    def set_security_headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", STRICT_TRANSPORT_SECURITY)
        if response.mimetype in ("text/html", "application/json"):
            # Results describe a person's photo: no shared cache may keep them.
            response.headers.setdefault("Cache-Control", "no-store")
        if response.location:
            response.location = same_site_location(response.location)
        return response


def same_site_location(location: str) -> str:
    """A redirect target without scheme and host: this site only ever redirects to itself."""
    parts = urlsplit(location)
    if not (parts.scheme or parts.netloc or location.startswith("//")):
        return location  # already relative
    # "//host/x" would still name a host: collapse the leading slashes.
    return urlunsplit(("", "", "/" + parts.path.lstrip("/"), parts.query, parts.fragment))
