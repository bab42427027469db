"""gunicorn settings for the service (`gunicorn -c gunicorn.conf.py wsgi:app`).

Every value can be overridden by the usual GUNICORN_* style flags or by
environment variables read here. Benchmarks use exactly this file.
"""

import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 20
keepalive = 5
# The webhook receiver answers 401 (with a reason) to oversized signature headers
# itself; gunicorn's 8 KiB default would cut them off with a bare 400 first.
limit_request_field_size = 32768
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
