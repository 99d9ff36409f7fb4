#!/usr/bin/env bash
# Smoke test of a running server and the runner, with curl.
#
# Start the server with the example routing file first, so that tasks run harmless
# local commands instead of an AI model CLI:
#
#   AGENT_ROUTING_FILE=scripts/routing.example.json make run
#   scripts/smoke.sh            # in another terminal (or: make smoke)
#
# It creates two tasks (one that completes, one that fails on purpose), runs
# scripts/agent_runner.py --once, then reads both tasks and the metrics back.
# Environment: AGENT_API_BASE (default http://127.0.0.1:8000), AGENT_API_TOKEN (sent as
# a bearer token on every request when set), AGENT_RUNNER_DIR (the runner's folder,
# default logs/runner), PYTHON (default .venv/bin/python, else python3).
# Prints one PASS or FAIL line per check; exits 0 only if every check passed.
set -uo pipefail
cd "$(dirname "$0")/.."

API="${AGENT_API_BASE:-http://127.0.0.1:8000}"
API="${API%/}/api/agent"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
failed=0

auth=()
if [[ -n "${AGENT_API_TOKEN:-}" ]]; then
    auth=(-H "Authorization: Bearer $AGENT_API_TOKEN")
fi
# call CURL-ARGS...: curl that fails on HTTP errors, with the token when there is one.
call() { curl -fsS ${auth[@]+"${auth[@]}"} "$@"; }

pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
stop() { fail "$*"; echo "smoke: stopped"; exit 1; }

# field KEY...: print that field of the JSON read from stdin (empty if it is missing).
field() {
    "$PYTHON" -c '
import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1:]:
    value = value.get(key, "") if isinstance(value, dict) else ""
print(value)' "$@" 2>/dev/null
}

# check WHAT EXPECTED ACTUAL
check() {
    if [[ "$2" == "$3" ]]; then pass "$1: $3"; else fail "$1: expected $2, got ${3:-nothing}"; fi
}

metrics=$(call "$API/metrics") || stop "no answer from $API (is the server running?)"
pass "server answers at $API"

model=$(call "$API/route?task_type=impl" | field model)
[[ "$model" == "local/echo" ]] || stop "tasks are routed to '$model', not to the example" \
    "routing: start the server with AGENT_ROUTING_FILE=scripts/routing.example.json"
pass "tasks are routed to the example's harmless commands"

pending=$(call "$API/tasks?status=pending&limit=1" | field total)
[[ "$pending" == "0" ]] || stop "$pending task(s) already pending: the runner would run" \
    "them too; run the smoke test against a server with an empty queue"
pass "no other task is pending"

completed_before=$(field success_rate completed <<<"$metrics")
failed_before=$(field success_rate failed <<<"$metrics")

create() {
    call -X POST "$API/tasks" -H 'Content-Type: application/json' \
        -d "{\"direction\": \"$1\", \"task_type\": \"$2\"}" | field id
}
good_direction="smoke test: say hello"
bad_direction="smoke test: FAIL on purpose"
good=$(create "$good_direction" impl) && [[ -n "$good" ]] || stop "could not create a task"
bad=$(create "$bad_direction" review) && [[ -n "$bad" ]] || stop "could not create a task"
pass "created tasks $good and $bad"

if "$PYTHON" scripts/agent_runner.py --once; then
    pass "the runner ran the queue and exited 0"
else
    fail "the runner exited with status $?"
fi

for pair in "$good completed $good_direction" "$bad failed $bad_direction"; do
    read -r id status direction <<<"$pair"
    task=$(call "$API/tasks/$id")
    check "task $id status" "$status" "$(field status <<<"$task")"
    if [[ "$(field output <<<"$task")" == *"local/echo received: $direction"* ]]; then
        pass "task $id output holds its direction"
    else
        fail "task $id output: $(field output <<<"$task")"
    fi
done

metrics=$(call "$API/metrics")
check "metrics: completed tasks" "$((completed_before + 1))" \
    "$(field success_rate completed <<<"$metrics")"
check "metrics: failed tasks" "$((failed_before + 1))" "$(field success_rate failed <<<"$metrics")"

if ((failed)); then
    echo "smoke: $failed check(s) failed"
    exit 1
fi
echo "smoke: all checks passed"
