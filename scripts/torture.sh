#!/usr/bin/env bash
# The MMLog nemesis (issue 21): writers, readers and faults combined at random, every round
# checked record by record.
#
#   scripts/torture.sh [--minutes 5 | --seconds N] [--seed S] [--round-seconds 25]
#                      [--faults kind,kind|none] [--tmpfs-mib 96] [--no-tmpfs] [--dir /tmp]
#   scripts/torture.sh --seed S --round K --length L [--faults ...]   replay one round
#
# Fault kinds: kill-writer stop-writer start-writer rotate kill-rotator disk-full kill-reader
# clock-jump (--faults picks some; none: writers and readers alone). A round's plan (writers,
# their sizes and rates, every fault and its moment) comes from the seed and the round's number
# and length, so a replay runs the same plan; the interleaving of processes is the machine's.
#
# A round (8 to --round-seconds 25 s of faults) makes a new log on a tmpfs of its own (mounted
# when root, --tmpfs-mib 96) and starts 4-7 mmlog-writer processes (1-4 threads, text lines of
# 24-3000 B, some syncing every 1-64 records, some rotating by size; each records in an
# --ack-file, per record, started / appended / failed) and 2 `mmlog tail -F` readers. Faults,
# drawn from the seed: SIGKILL of a writer (mostly replaced by a new one), SIGSTOP/SIGCONT of a
# writer, a writer opening mid-round, `mmlog rotate` (also SIGKILLed after 0.5-30 ms), a full
# disk for up to 3 s (a ballast file), a reader killed and restarted (tail -F -n 0..5), a
# forward jump of the writers' CLOCK_MONOTONIC and/or CLOCK_REALTIME (LD_PRELOAD
# scripts/lib/clockshim.c). Then the writers finish, the readers catch up, and it checks:
#   files    every appended record exactly once, whole, in one file (current or rotated, read
#            with `mmlog cat` while a file has metadata); a record whose append failed, or that
#            no writer started, in none; each worker's records in order across files; NUL runs
#            only where a killed or failed append explains them; no torn line
#   readers  no NUL, no torn line; each run prints consecutive records in file order (no
#            duplicate, none skipped); the last run of each reader reaches the last record
#   usable   mmlog stat, a fresh append (50 records, synced), mmlog recover, then the files again
#   writers  none crashed (a signal we did not send), none wedged, none failed but for ENOSPC
# It prints each round, the faults by kind, and last `torture: N rounds, M records, F failures`;
# exits 1 on any failure, keeping the failing round's directory (round.log, the processes'
# outputs and ack files, gdb stacks of hung processes, the log's files) and printing it with the
# command to replay it. Each failure line names its kind, the file, offset and record at fault.
# Ctrl-C stops and reaps every process it started and unmounts its tmpfs.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
require_swift
cd "$ROOT"
swift build -c release --product mmlog-writer >&2
swift build -c release --product mmlog >&2
bin="$(swift build -c release --show-bin-path)"
cc="$(command -v cc || command -v gcc || command -v clang || true)"
[ -n "$cc" ] || { echo "torture.sh: no C compiler (cc, gcc or clang) for scripts/lib/clockshim.c" >&2; exit 1; }
"$cc" -shared -fPIC -O2 -Wall -o "$bin/clockshim.so" scripts/lib/clockshim.c
exec python3 scripts/torture.py --bin "$bin" --shim "$bin/clockshim.so" "$@"
