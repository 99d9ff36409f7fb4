"""A stand-in for an AI model CLI, for the runner's tests: ``fake_agent.py DIRECTION MODEL``.

Each run appends one JSON line to the file named by ``FAKE_AGENT_RUNS``: its argv and
working folder. Words of the direction steer it: ``sleep=S`` sleeps S seconds,
``print=N`` writes N numbered lines, ``exit=N`` exits with status N.
"""
import json
import os
import sys
import time


def main() -> int:
    direction = sys.argv[1]
    with open(os.environ["FAKE_AGENT_RUNS"], "a") as runs:
        runs.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd()}) + "\n")
    words = dict(word.split("=", 1) for word in direction.split() if "=" in word)
    print(f"working on: {direction}", flush=True)
    print("a note on stderr", file=sys.stderr, flush=True)
    time.sleep(float(words.get("sleep", 0)))
    for number in range(int(words.get("print", 0))):
        print(f"line {number}")
    return int(words.get("exit", 0))


if __name__ == "__main__":
    sys.exit(main())
