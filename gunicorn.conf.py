"""gunicorn settings for the web app (Heroku or any container host): `gunicorn -c gunicorn.conf.py`."""

import os

# Heroku and most container hosts say which port to listen on in $PORT.
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# One worker is ~70 MB resident (LiteRT + NumPy + Pillow + Flask; see docs/PERFORMANCE.md), so
# two fit a 512 MB dyno with room for request buffers. Threads overlap upload reading and
# decoding with inference.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Heroku's router gives up after 30 s; answer (or fail) well before it does.
timeout = 25
graceful_timeout = 20
keepalive = 5
# Recycle workers now and then so that no slow leak can grow without bound (0 turns it off; the
# benchmark does, to measure one worker's memory over 10,000 requests).
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "5000"))
max_requests_jitter = 500
# Logs to stdout/stderr for the platform's log router. The access log records method, path,
# status and timing only: never bodies, so never an uploaded photo.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
wsgi_app = "webapp.wsgi:app"
# Each worker loads its own classifier: a model that fails to load stops the worker from booting,
# and gunicorn exits non-zero instead of serving a half-working site.
preload_app = False
forwarded_allow_ips = "*"
