"""Run pending agent tasks: claim each over the API, run its command, report it.

Exit status: 0 when done (``--once``); 1 when the API cannot be reached or used, or a
task's report was not delivered; 2 for bad arguments or settings; 128 + the signal number
when stopped by SIGINT (130) or SIGTERM (143).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import config  # noqa: E402
from app.runner.api import ApiError, TaskApi  # noqa: E402
from app.runner.worker import Runner  # noqa: E402

log = logging.getLogger("app.runner")


def positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise ValueError(text)
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true",
                        help="run the tasks pending now, then exit")
    parser.add_argument("--interval", type=config.positive_seconds, default=5.0, metavar="S",
                        help="seconds between listings when polling (default 5)")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="tasks run at the same time (default 1)")
    parser.add_argument("--timeout", type=config.positive_seconds, metavar="S",
                        help="seconds a task may run (default AGENT_TASK_TIMEOUT, 3600)")
    parser.add_argument("--verbose", action="store_true", help="say more on stderr")
    return parser.parse_args(argv)


def setup_logging(logs_dir: Path, verbose: bool) -> None:
    """Progress on stderr (everything with --verbose); a log file in the logs folder."""
    level = logging.DEBUG if verbose else logging.INFO
    to_file = logging.FileHandler(logs_dir / "agent_runner.log")
    to_file.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    to_stderr = logging.StreamHandler()
    to_stderr.setFormatter(logging.Formatter("agent_runner %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(to_file)
    # Without --verbose, stderr shows the runner's own lines, not urllib3's retries.
    (root if verbose else log).addHandler(to_stderr)


def stop_on_signals(runner: Runner) -> list[int]:
    """SIGINT and SIGTERM stop the runner; the returned list fills with what arrived."""
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not received:
            log.warning("%s received: stopping", signal.Signals(signum).name)
        received.append(signum)
        runner.stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return received


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = config.runner_from_env()
        if not settings.workdir.is_dir():
            raise ValueError(f"AGENT_WORKDIR: {settings.workdir} is not a folder")
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as exc:
        print(f"agent_runner: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.logs_dir, args.verbose)
    runner = Runner(
        TaskApi(settings.api_base, settings.api_token, pool_size=args.workers + 1),
        logs_dir=settings.logs_dir,
        workdir=settings.workdir,
        timeout=args.timeout or settings.task_timeout,
        workers=args.workers,
    )
    received = stop_on_signals(runner)
    unreachable = False
    try:
        if args.once:
            runner.drain()
        else:
            runner.poll(args.interval)
    except ApiError as exc:
        log.error("%s", exc)
        unreachable = True
    finally:
        runner.close()
    if received:
        return 128 + received[0]
    return 1 if unreachable or runner.undelivered else 0


if __name__ == "__main__":
    sys.exit(main())
