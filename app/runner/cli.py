"""Run pending agent tasks: claim each over the API, run its command, report it.

Exit status: 0 when done (``--once``) with every report delivered; 1 when the API cannot
be reached or used at start, or a report was not delivered or was refused; 2 for bad
arguments or settings; 128 + the signal number when stopped by SIGINT (130) or SIGTERM
(143).

Installed, it is the ``agent-runner`` command; from the project, ``scripts/agent_runner.py``.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from app.api_limits import DEFAULT_LEASE_SECONDS, MAX_LEASE_SECONDS, MIN_LEASE_SECONDS
from app.runner.api import ApiError, TaskApi
from app.runner.folder import RunnerFolder
from app.runner.heartbeat import MAX_INTERVAL_SECONDS
from app.runner.identity import runner_id_prefix
from app.runner.outbox import Outbox
from app.runner.reports import Reports
from app.runner.running import RunningCommands, start_watchdog, this_runner
from app.runner.settings import (
    MAX_EXECUTOR_CHARS, api_url, executor_name, positive_seconds, programs, runner_from_env,
)
from app.runner.task_log import prune_task_logs
from app.runner.worker import Runner, RunSettings
from app.shared_settings import exit_on_config_error

log = logging.getLogger("app.runner")


def positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise ValueError(text)
    return number


def lease_seconds(text: str) -> int:
    number = int(text)
    if not MIN_LEASE_SECONDS <= number <= MAX_LEASE_SECONDS:
        raise ValueError(text)
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true",
                        help="claim until none is pending, run those tasks, deliver their "
                             "reports, then exit")
    parser.add_argument("--interval", type=positive_seconds, default=5.0, metavar="S",
                        help="seconds between claims when none is pending (default 5)")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="tasks run at the same time (default 1)")
    parser.add_argument("--timeout", type=positive_seconds, metavar="S",
                        help="seconds a task may run (default AGENT_TASK_TIMEOUT, 3600)")
    parser.add_argument("--lease-seconds", type=lease_seconds, default=DEFAULT_LEASE_SECONDS,
                        metavar="S", help=f"how long a claim holds without a heartbeat, "
                                          f"{MIN_LEASE_SECONDS}-{MAX_LEASE_SECONDS} "
                                          f"(default {DEFAULT_LEASE_SECONDS}); "
                                          "heartbeats go every third of it, at most "
                                          f"{MAX_INTERVAL_SECONDS:g} s apart")
    parser.add_argument("--report-wait", type=positive_seconds, default=30.0,
                        metavar="S", help="with --once, how long undelivered reports are "
                                          "retried before exiting 1 (default 30)")
    parser.add_argument("--api", type=api_url, metavar="URL",
                        help="where the API is served (default AGENT_API_BASE)")
    parser.add_argument("--allow-program", action="append", default=[], metavar="PROGRAM",
                        help="a program a task's command may start with; repeat for more "
                             "(default AGENT_ALLOW_PROGRAMS, else claude)")
    parser.add_argument("--executor", metavar="NAME",
                        help="who runs the tasks, named in each report that ends a "
                             f"task, at most {MAX_EXECUTOR_CHARS} characters (default "
                             "AGENT_EXECUTOR, else the host name)")
    parser.add_argument("--verbose", action="store_true", help="say more on stderr")
    return parser.parse_args(argv)


class OneLine(logging.Formatter):
    """A record without its traceback: stderr gets one line per event; the log file has
    the tracebacks."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(logging.makeLogRecord(
            {**record.__dict__, "exc_info": None, "exc_text": None}))


def setup_logging(log_file: Path, verbose: bool) -> None:
    """Progress on stderr (everything with --verbose); a log file in the runner's folder."""
    level = logging.DEBUG if verbose else logging.INFO
    to_file = logging.FileHandler(log_file)
    to_file.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    to_stderr = logging.StreamHandler()
    to_stderr.setFormatter(OneLine("agent_runner %(levelname)s: %(message)s"))
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
    with exit_on_config_error("agent_runner"):
        settings = runner_from_env()
        executor = (settings.executor if args.executor is None
                    else executor_name(args.executor, "--executor"))
        folder = RunnerFolder.prepare(settings.runner_dir)
    setup_logging(folder.log_file, args.verbose)
    commands = RunningCommands(folder.running, this_runner())
    commands.stop_left()
    start_watchdog(commands)
    removed = prune_task_logs(folder.task_logs, settings.task_log_keep_days)
    if removed:
        log.info("removed %d task logs older than %d days", removed,
                 settings.task_log_keep_days)
    api = TaskApi(args.api or settings.api_base, settings.api_token,
                  pool_size=2 * args.workers + 2)
    try:
        prefix = runner_id_prefix(api)
        if prefix is None:  # else whoami answered: the API is up and takes the token
            api.probe()
    except ApiError as exc:
        log.error("%s", exc)
        return 1
    outbox = Outbox(folder.outbox)
    outbox.discard_partial()
    reports = Reports(api, outbox)
    runner = Runner(api, reports, folder, commands, RunSettings(
        workdir=settings.workdir, timeout=args.timeout or settings.task_timeout,
        lease_seconds=args.lease_seconds, log_max_bytes=settings.task_log_max_bytes,
        cancel_grace=settings.cancel_grace_seconds,
        allowed_programs=programs(args.allow_program) or settings.allowed_programs,
        executor=executor, runner_id_prefix=prefix or "",
    ), workers=args.workers)
    received = stop_on_signals(runner)
    reports.replay()
    reports.start()
    try:
        runner.run(once=args.once, interval=args.interval)
    finally:
        reports.close()
    if received:
        return 128 + received[0]
    left = reports.drain(args.report_wait)
    if left:
        log.error("%d report(s) not delivered; kept in %s for the next start", left,
                  folder.outbox)
    return 1 if runner.claims_failed or left or reports.dropped else 0


if __name__ == "__main__":
    sys.exit(main())
