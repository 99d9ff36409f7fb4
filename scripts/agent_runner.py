"""The runner's command line from the project folder, without installing the project:
``app/runner/cli.py`` (installed, the ``agent-runner`` command) with the project on the
import path."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runner.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
