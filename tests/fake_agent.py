"""A stand-in for an AI model CLI, for the runner's tests.

``fake_agent.py [-p] [--model MODEL] [--output-file PATH] [--dangerously-skip-permissions]
[--] DIRECTION``: it parses its options with argparse, as a real CLI would, so a direction
that reached it as an option shows (``--output-file`` writes that file). Installed on
PATH as ``claude`` it stands in for the built-in route.

Each run appends one JSON line to the file named by ``FAKE_AGENT_RUNS``: its argv, the
options it parsed and its working folder. Words of the direction steer it: ``sleep=S``
sleeps S seconds, ``print=N`` writes N numbered lines, ``exit=N`` exits with status N.
"""
import argparse
import json
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(prog="claude")
    parser.add_argument("-p", "--print", action="store_true")
    parser.add_argument("--model")
    parser.add_argument("--output-file")
    parser.add_argument("--dangerously-skip-permissions", action="store_true")
    parser.add_argument("direction", nargs="?", default="")
    options = parser.parse_args()
    with open(os.environ["FAKE_AGENT_RUNS"], "a") as runs:
        runs.write(json.dumps({"argv": sys.argv[1:], "options": vars(options),
                               "cwd": os.getcwd()}) + "\n")
    if options.output_file:
        with open(options.output_file, "w") as out:
            out.write("written because an option said so\n")
    direction = options.direction
    words = dict(word.split("=", 1) for word in direction.split() if "=" in word)
    print(f"working on: {direction}", flush=True)
    print("a note on stderr", file=sys.stderr, flush=True)
    time.sleep(float(words.get("sleep", 0)))
    for number in range(int(words.get("print", 0))):
        print(f"line {number}")
    return int(words.get("exit", 0))


if __name__ == "__main__":
    sys.exit(main())
