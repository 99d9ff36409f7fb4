"""A stand-in for an AI model CLI, for the runner's tests.

``fake_agent.py [-p] [--model MODEL] [--output-file PATH] [--dangerously-skip-permissions]
[--] DIRECTION``: it parses its options with argparse, as a real CLI would, so a direction
that reached it as an option shows (``--output-file`` writes that file). Installed on
PATH as ``claude`` it stands in for the built-in route.

Each run appends one JSON line to the file named by ``FAKE_AGENT_RUNS``: its argv, the
options it parsed, its working folder, its pid, ``AGENT_DECISION`` and whether it could
see ``AGENT_API_TOKEN``. Words of the direction steer it:

- ``sleep=S`` sleeps S seconds; ``first-sleep=S`` only when no earlier run of the same
  direction is in ``FAKE_AGENT_RUNS``;
- ``progress=P:STEP`` prints ``::progress:: P STEP`` first;
- ``print=N`` writes N numbered lines;
- ``ask`` without ``AGENT_DECISION`` ends with ``::needs-decision:: ship it?`` (and exit
  status 3), with it prints ``decision: ...``;
- ``exit=N`` exits with status N.
"""
import argparse
import json
import os
import sys
import time


def earlier_runs(path: str, direction: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as runs:
        return sum(json.loads(line)["options"]["direction"] == direction for line in runs)


def main() -> int:
    parser = argparse.ArgumentParser(prog="claude")
    parser.add_argument("-p", "--print", action="store_true")
    parser.add_argument("--model")
    parser.add_argument("--output-file")
    parser.add_argument("--dangerously-skip-permissions", action="store_true")
    parser.add_argument("direction", nargs="?", default="")
    options = parser.parse_args()
    direction = options.direction
    words = dict(word.split("=", 1) for word in direction.split() if "=" in word)
    runs_path = os.environ["FAKE_AGENT_RUNS"]
    sleep = float(words.get("sleep", 0))
    if "first-sleep" in words and earlier_runs(runs_path, direction) == 0:
        sleep += float(words["first-sleep"])
    decision = os.environ.get("AGENT_DECISION")
    with open(runs_path, "a") as runs:
        runs.write(json.dumps({"argv": sys.argv[1:], "options": vars(options),
                               "cwd": os.getcwd(), "pid": os.getpid(), "decision": decision,
                               "sees_token": "AGENT_API_TOKEN" in os.environ}) + "\n")
    if options.output_file:
        with open(options.output_file, "w") as out:
            out.write("written because an option said so\n")
    if "progress" in words:
        print("::progress:: " + words["progress"].replace(":", " ", 1), flush=True)
    print(f"working on: {direction}", flush=True)
    print("a note on stderr", file=sys.stderr, flush=True)
    time.sleep(sleep)
    for number in range(int(words.get("print", 0))):
        print(f"line {number}")
    if "ask" in direction.split():
        if decision is None:
            print("::needs-decision:: ship it?", flush=True)
            return 3
        print(f"decision: {decision}")
    return int(words.get("exit", 0))


if __name__ == "__main__":
    sys.exit(main())
