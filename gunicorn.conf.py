"""gunicorn settings; each can be overridden on the command line or by GUNICORN_CMD_ARGS.

Settings are checked before anything starts (app/serving.py): one that cannot be used
stops the server with one line saying which.
"""
import gc

from app.shared_settings import exit_on_config_error
from app.serving import LIMIT_REQUEST_LINE, server_settings

with exit_on_config_error("agent-metrics-service"):
    settings = server_settings()

bind = settings.bind
workers = settings.workers
# Threaded workers: a client that sends or reads slowly holds one thread of its worker,
# not the whole worker, and the worker's timeout watches its main loop, not a request,
# so a long export is not cut.
# gthread, answering gunicorn's own refusals (a request line too long...) as JSON.
worker_class = "app.serving.JsonErrorWorker"
threads = settings.threads
limit_request_line = LIMIT_REQUEST_LINE
accesslog = "-"
timeout = 60

# Load the app once in the master and read the stores there before forking, so each
# worker starts warm (a million metric records take seconds to read) instead of every
# worker reading the whole store on its first request.
preload_app = True


def when_ready(server):
    try:
        server.app.wsgi().extensions["agent"].warm_up()
    except OSError as exc:
        server.log.warning("stores not read ahead (%s); each worker reads them itself", exc)
    gc.freeze()  # the collector then leaves the shared pages alone: fewer copies per worker
