"""gunicorn settings; each can be overridden on the command line or by GUNICORN_CMD_ARGS."""
import gc
import os

bind = os.environ.get("AGENT_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("AGENT_WORKERS", "2"))
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
