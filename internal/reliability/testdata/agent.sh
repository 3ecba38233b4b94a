#!/bin/sh
# The reliability suite's agent. The task title says what to do:
#   "lines N [sleep S]"  print "line 1" .. "line N" (S seconds in between all), change a file
# The description is a folder where it leaves its PID.
set -eu
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
*)
	echo "unknown scenario: $TASK_TITLE" >&2
	exit 64
	;;
esac
