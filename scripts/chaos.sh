#!/usr/bin/env bash
# The chaos harness: the user-activity pipeline (generate at a steady rate; two bronze
# processes in one consumer group; silver; windows; load; the Kafka sink) and the books
# pipeline (produce at 2 records/s; bronze, silver, gold, load) running continuously
# while a seeded scheduler injects faults one after another at random moments, in rounds: each
# round kills --kills-per-round job processes (default all ten) with kill -9 (restarted after
# a random pause), one fault per job or, with --kill-groups G, in G faults that each kill a
# random group of them at once; kills and restarts the broker (once briefly, once for longer
# than the jobs' message.timeout.ms), cuts the S3 server off for a few seconds (a proxy in front
# of it), restarts PostgreSQL with pg_ctl restart -m immediate, runs `lakectl optimize` on a
# random table, and sends hostile records into both topics (a CAST the cleaning SQL cannot
# compute, a NUL Postgres refuses, wrong types, a 5,000-digit number, 5,000-deep nesting, an
# unknown Avro schema id, a 200 KB value), in a random order; writers compact their own tables
# every 10 commits all along. After each fault it measures how long until every job finished
# a unit again (each job serves --metrics-addr). When the time is up and the rounds are done,
# it stops the faults, drains every stage with --once, and checks from
# outside: every record of each topic exactly once in bronze; silver, quarantine, every window
# table and the books gold tables equal one clean run over the same topics; Postgres holds the
# lake's rows but those it refuses, which are in the load quarantine once each; every hostile
# record ended in the quarantine its kind calls for; the enriched topic holds each row once;
# no job exited 2 or 70 (stopped by what it read); every recovery under 60 s. Exit 0 only
# when all hold.
#
#   bash scripts/chaos.sh [--minutes M] [--rounds N] [--kills-per-round K] [--kill-groups G]
#                         [--seed S] [--rate EVENTS_PER_S]
#                         [--report PATH]          (default bench/results/chaos-<date>-<seed>.json)
#
# The test command runs --minutes 2 --rounds 2 --kills-per-round 2 (2 faults of each kind);
# the long run in bench/results/ is --minutes 30 --rounds 20 --kill-groups 2 (20 kills of every
# job, each round's ten kills in two faults of five jobs at once) with a release build
# (LAKECTL_BIN=$CARGO_TARGET_DIR/release/lakectl).
#
# It uses the stack of scripts/services.sh (started if down; its Postgres is restarted, so run
# nothing else against it meanwhile), a private broker and a database of its own.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakectl-target}
BIN=${LAKECTL_BIN:-$CARGO_TARGET_DIR/debug/lakectl}
[[ -x $BIN ]] || cargo build -p jobs --bin lakectl >&2
args=("$@")
seed=$(date +%s)
for ((i = 0; i < ${#args[@]}; i++)); do
  [[ ${args[i]} == --seed ]] && seed=${args[i + 1]}
done
[[ " ${args[*]} " == *" --seed "* ]] || args+=(--seed "$seed")
[[ " ${args[*]} " == *" --report "* ]] || args+=(--report "$ROOT/bench/results/chaos-$(date -u +%Y-%m-%d)-$seed.json")
echo "[chaos] seed $seed" >&2
bash scripts/services.sh status >/dev/null 2>&1 || bash scripts/services.sh up >&2
set -a
# shellcheck source=/dev/null
source .lakectl/services.env
set +a
PY=$(bash scripts/python-env.sh test)
exec "$PY" scripts/chaos.py --lakectl "$BIN" "${args[@]}"
