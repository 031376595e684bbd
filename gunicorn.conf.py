"""gunicorn settings for the web app (Heroku or any container host): `gunicorn -c gunicorn.conf.py`."""

import os
import sys
from pathlib import Path


def _refuse_to_start(reason: str) -> None:
    from webapp.classifier import EXIT_MODEL_INVALID

    print(f"refusing to start: {reason}", file=sys.stderr, flush=True)
    # os._exit: no gunicorn shutdown path runs, so no traceback follows the line; 78 is EX_CONFIG
    # (restarting will not help).
    os._exit(EXIT_MODEL_INVALID)


def _whole_number(name: str, default: int, minimum: int = 1) -> int:
    # A typo in the environment stops the server with one line, not a traceback or a server that
    # listens with no worker to answer (WEB_CONCURRENCY=0).
    value = os.environ.get(name, str(default)).strip()
    if not value.isdigit() or int(value) < minimum:
        _refuse_to_start(f"{name} must be a whole number of at least {minimum}, not {value!r}")
    return int(value)


# Heroku and most container hosts say which port to listen on in $PORT.
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# One worker is ~70 MB resident (LiteRT + NumPy + Pillow + Flask; see docs/PERFORMANCE.md), so
# two fit a 512 MB dyno with room for uploads being decoded (each bounded by MAX_DECODE_MB).
workers = _whole_number("WEB_CONCURRENCY", 2)
# gevent: a connection costs a greenlet, not a thread, so slow or stalled clients cannot take every
# request slot; webapp.worker adds read and request deadlines (docs/DEPLOYMENT.md says why not a
# proxy). Decoding and inference run one at a time per worker, as on two cores they must anyway.
worker_class = "webapp.worker.Worker"
# Connections one worker holds at once. Uploads being received are held in memory, within the
# worker's upload budget (webapp.budget); the deadlines below free the slots of clients that stall.
worker_connections = _whole_number("GUNICORN_WORKER_CONNECTIONS", 100)
# Heroku's router gives up after 30 s. No request may take longer than this: the worker cuts a
# connection that is still sending its body (or not reading its answer) at this deadline.
timeout = 25
# On SIGTERM the listening socket closes at once (new connections are refused, so a router can
# retry elsewhere), requests in flight finish, and the workers exit within this many seconds:
# well inside the 30 s Heroku allows between SIGTERM and SIGKILL.
graceful_timeout = 20
# Also the bound on receiving a request line and headers: a client that dribbles them is cut off.
keepalive = 5
# Recycle workers now and then so that no slow leak can grow without bound (0 turns it off; the
# benchmark does, to measure one worker's memory over 10,000 requests).
max_requests = _whole_number("GUNICORN_MAX_REQUESTS", 5000, minimum=0)
max_requests_jitter = 500
# Logs to stdout/stderr for the platform's log router. The access log records method, path,
# status and timing only: never bodies, so never an uploaded photo.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
wsgi_app = "webapp.wsgi:app"
preload_app = False
# X-Forwarded-Proto (https: HSTS, secure URLs) is believed only from these peers: loopback by
# default; heroku.yml trusts every peer, because there only Heroku's router can reach the dyno.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# gunicorn's control socket defaults to one path per user, so two servers on one host would share
# it; nothing here uses it.
control_socket_disable = True


def on_starting(server):
    """Before listening: the model and its gate must pass their checks, or the server exits with one line."""
    from webapp import SettingsError, check_settings, environment_settings
    from webapp.classifier import Classifier, ModelLoadError
    from webapp.gate import Gate

    try:
        settings = environment_settings()
        check_settings(settings)
        model_dir = Path(settings["MODEL_DIR"])
        Gate.from_metadata(model_dir, Classifier.from_model_dir(model_dir).metadata)
    except (ModelLoadError, SettingsError) as exc:
        _refuse_to_start(str(exc))
