#!/usr/bin/env bash
# Runs wrk with a script that stops its threads after a number of answers
# (bench/memory.lua, wrk.thread:stop()), and ends wrk as soon as all its
# threads have stopped: wrk itself would wait for the end of -d. SIGINT
# makes wrk print its statistics, over the time it really ran.
#
#   bench/wrk-until.sh WRK_ARGUMENTS...
set -euo pipefail

wrk "$@" &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null || true' EXIT
sleep 1
# /proc/PID/task: wrk's main thread and one per -t thread
while [ "$(ls "/proc/$pid/task" 2>/dev/null | wc -l)" -gt 1 ]; do
    sleep 0.2
done
kill -INT "$pid" 2>/dev/null || true
wait "$pid"
