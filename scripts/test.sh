#!/usr/bin/env bash
# make test: the suite as two pytest sessions side by side on one local stack. Usage: test.sh [pytest args]
#
# The tests marked aws_emulator (the deploy rehearsal, the EMR client, the DocumentDB stand-in, and
# tests/infra, which share infra/'s Terraform files with the rehearsal) spend most of their time
# waiting: the AWS provider's waiters sleep 30-40 s per DocumentDB cluster, instance, EMR application
# and load balancer, against an emulator that answers at once. They run in a session of their own
# while the rest of the suite runs beside them. The sessions cannot disturb each other: every other
# test works on its own topics, database and free ports and never calls the emulator, and no case of
# make test restarts a shared service (the cases that do are marked slow and skipped here).
#
# One session, as before, when the arguments select tests or change where results go (-m, -k, a path
# or node id, --junitxml, --basetemp, --lf): selected, a slow case runs (tests/conftest.py), and it may
# restart Kafka or the store under the other session.
set -uo pipefail
cd "$(dirname "$0")/.."
cli=.venv/bin/sensor-pipeline
pytest=.venv/bin/pytest
mkdir -p test-artifacts
emulator_log=test-artifacts/test-aws-emulator.log

one_session=0
for arg in "$@"; do
  case "$arg" in
    -m | -m* | -k | -k* | tests* | *::* | *.py | --junitxml* | --basetemp* | --lf | --last-failed | --ff | --sw) one_session=1 ;;
  esac
done
if [ "$one_session" = 1 ]; then
  where=tests
  for arg in "$@"; do case "$arg" in tests* | *::* | *.py) where="" ;; esac; done  # a path given: only it
  exec "$pytest" $where --junitxml=test-artifacts/junit-test.xml "$@"
fi

# stack status: 0 all up, 4 a service failed or is not ready, 3 not running, other: the command failed.
status=0
"$cli" stack status >/dev/null 2>&1 || status=$?
started=0
if [ "$status" -eq 3 ]; then started=1; fi
emulator_pid=""
finish() {
  if [ -n "$emulator_pid" ] && kill -0 "$emulator_pid" 2>/dev/null; then
    # Interrupted: the emulator session's own teardown (make destroy of the rehearsal) runs, then it ends.
    kill -INT -- "-$emulator_pid" 2>/dev/null
    wait "$emulator_pid" 2>/dev/null
    echo "==> the tests marked aws_emulator, interrupted:"; cat "$emulator_log"
  fi
  if [ "$started" = 1 ]; then "$cli" stack down >/dev/null || true; fi
}
trap finish EXIT
trap 'exit 130' INT TERM
# --refuse-app-tier: the rehearsal refuses to run beside make local-up's pipeline; say so now, not minutes in.
"$cli" stack up --infra-only --refuse-app-tier | tail -n 1 || exit 1
export SP_TEST_SHARED_STACK=1  # tests/integration/conftest.py: neither session starts or stops the stack

# Job control on for the background session: its own process group, which a Ctrl-C does not reach
# (finish() interrupts it, so that its teardown runs), and SIGINT not ignored, as it is for a plain `&`.
set -m
"$pytest" tests -m aws_emulator --junitxml=test-artifacts/junit-test-aws-emulator.xml "$@" >"$emulator_log" 2>&1 &
emulator_pid=$!
set +m
echo "==> the tests marked aws_emulator run beside the rest (output: $emulator_log, printed at the end)"
rest=0
"$pytest" tests -m "not aws_emulator" --junitxml=test-artifacts/junit-test.xml "$@" || rest=$?
emulator=0
wait "$emulator_pid" || emulator=$?
emulator_pid=""
echo
echo "==> the tests marked aws_emulator (exit $emulator)"
cat "$emulator_log"
if [ "$rest" -ne 0 ]; then exit "$rest"; fi
exit "$emulator"
