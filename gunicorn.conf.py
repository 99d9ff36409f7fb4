"""gunicorn settings; each can be overridden on the command line or by GUNICORN_CMD_ARGS."""
import os

bind = os.environ.get("AGENT_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("AGENT_WORKERS", "2"))
accesslog = "-"
timeout = 60
