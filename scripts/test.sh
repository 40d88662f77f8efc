#!/usr/bin/env bash
# make test: the suite as two pytest sessions side by side on one local stack.
#
# The tests marked aws_emulator (the deploy rehearsal, the EMR client, the DocumentDB stand-in) spend
# most of their time waiting: the AWS provider's waiters sleep 30-40 s per DocumentDB cluster,
# instance, EMR application and load balancer, against an emulator that answers at once. They run in
# a session of their own while the rest of the suite runs beside them. The two sessions cannot
# disturb each other: every other test works on its own topics, database and free ports and never
# calls the emulator, and nothing in make test restarts a shared service (make chaos and make
# test-all, which do, run one session). The stack is started once here, so neither session starts or
# stops it; it is stopped at the end if this script started it.
set -uo pipefail
cd "$(dirname "$0")/.."
cli=.venv/bin/sensor-pipeline
pytest=.venv/bin/pytest
mkdir -p test-artifacts
emulator_log=test-artifacts/test-aws-emulator.log

# stack status: 0 all up, 4 a service failed or is not ready, 3 not running (deploy.sh reads it alike).
status=0
"$cli" stack status >/dev/null 2>&1 || status=$?
started=0
if [ "$status" -ne 0 ] && [ "$status" -ne 4 ]; then started=1; fi
stop_stack() { if [ "$started" = 1 ]; then "$cli" stack down >/dev/null || true; fi; }
trap stop_stack EXIT
"$cli" stack up --infra-only | tail -n 1 || exit 1

# shellcheck disable=SC2086  # PYTEST_ARGS holds several arguments
"$pytest" tests -m aws_emulator --junitxml=test-artifacts/junit-test-aws-emulator.xml ${PYTEST_ARGS:-} \
  >"$emulator_log" 2>&1 &
emulator_pid=$!
trap 'kill "$emulator_pid" 2>/dev/null; stop_stack' EXIT
echo "==> the tests marked aws_emulator run beside the rest (output: $emulator_log, printed at the end)"
rest=0
# shellcheck disable=SC2086
"$pytest" tests -m "not aws_emulator" --junitxml=test-artifacts/junit-test.xml ${PYTEST_ARGS:-} || rest=$?
emulator=0
wait "$emulator_pid" || emulator=$?
echo
echo "==> the tests marked aws_emulator (exit $emulator)"
cat "$emulator_log"
# 5 is pytest's "no test selected": a -k or node id in PYTEST_ARGS may select tests of one session only.
if [ "$rest" -eq 5 ] && [ "$emulator" -eq 5 ]; then echo "no test selected" >&2; exit 5; fi
[ "$rest" -eq 5 ] && rest=0
[ "$emulator" -eq 5 ] && emulator=0
[ "$rest" -eq 0 ] && [ "$emulator" -eq 0 ]
