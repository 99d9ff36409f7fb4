#!/usr/bin/env bash
# Smoke test of a running server and the runner: app/smoke.py, with PYTHON (default
# .venv/bin/python, else python3) from the project folder. Installed: agent-smoke.
cd "$(dirname "$0")/.." || exit 1
[[ -n "${PYTHON:-}" ]] || { [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python || PYTHON=python3; }
exec "$PYTHON" -m app.smoke "$@"
