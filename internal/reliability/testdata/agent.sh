#!/bin/sh
# The reliability suite's agent. The task title says what to do:
#   "lines N [sleep S]"  print "line 1" .. "line N" (S seconds in between all), change a file
# The description is a folder where it leaves its PID.
set -eu
# What it leaves for the test, a later attempt (as another uid) may replace.
umask 000
set -- $TASK_TITLE
echo "$$" > "$TASK_DESCRIPTION/pid.$RUN_ID"
case "$1" in
lines)
	n=$2
	pause=${4:-0}
	i=1
	while [ "$i" -le "$n" ]; do
		echo "line $i"
		if [ "$i" -eq $((n / 2)) ] && [ "$pause" != 0 ]; then sleep "$pause"; fi
		i=$((i + 1))
	done
	printf 'run %s\n' "$RUN_ID" >> CHANGES.md
	;;
once)
	# Hangs on its first attempt (the test kills or drains its worker), prints
	# its lines on the next.
	if [ -e "$TASK_DESCRIPTION/ran-once" ]; then
		i=1
		while [ "$i" -le "$2" ]; do echo "line $i"; i=$((i + 1)); done
		printf 'run %s\n' "$RUN_ID" >> CHANGES.md
	else
		touch "$TASK_DESCRIPTION/ran-once"
		exec sleep 300
	fi
	;;
stopped)
	# Works until its worker stops it on its first attempt, and answers
	# SIGTERM with its last lines; prints its lines on the next attempt.
	if [ -e "$TASK_DESCRIPTION/stopped-once" ]; then
		i=1
		while [ "$i" -le "$2" ]; do echo "line $i"; i=$((i + 1)); done
		printf 'run %s\n' "$RUN_ID" >> CHANGES.md
	else
		touch "$TASK_DESCRIPTION/stopped-once"
		trap 'echo "got SIGTERM: saving my work"; echo "saved, exiting"; exit 143' TERM
		echo "working until stopped"
		while :; do sleep 0.1; done
	fi
	;;
missing)
	exec /nonexistent/agent-binary --work
	;;
hang)
	exec sleep 300
	;;
fail)
	echo "error: the build is broken" >&2
	exit 3
	;;
killed)
	kill -9 $$
	;;
bigline)
	head -c 10000000 /dev/zero | tr '\0' x
	echo
	;;
gib)
	# 1 GiB of output, in 1 MiB lines.
	head -c 1073741824 /dev/zero | tr '\0' y | fold -w 1048575
	;;
artifacts)
	ln -s /etc/passwd "$TASK_ARTIFACTS_DIR/passwd"
	head -c 31457281 /dev/zero > "$TASK_ARTIFACTS_DIR/too-big.bin"
	echo "small" > "$TASK_ARTIFACTS_DIR/ok.txt"
	printf 'run %s\n' "$RUN_ID" >> CHANGES.md
	;;
*)
	echo "unknown scenario: $TASK_TITLE" >&2
	exit 64
	;;
esac
