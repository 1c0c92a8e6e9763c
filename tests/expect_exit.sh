#!/usr/bin/env bash
# Runs a command and passes only if it exits with the expected code AND its output (stdout and stderr)
# matches an extended regular expression: a PASS_REGULAR_EXPRESSION alone would ignore the exit code.
# Usage: expect_exit.sh CODE REGEX COMMAND [ARGS...]
set -uo pipefail
code=$1 regex=$2; shift 2
output=$("$@" 2>&1)
rc=$?
printf '%s\n' "$output"
if [ "$rc" -ne "$code" ]; then echo "FAIL: exit code $rc, expected $code"; exit 1; fi
if ! grep -Eq -- "$regex" <<< "$output"; then echo "FAIL: output does not match /$regex/"; exit 1; fi
