#!/bin/sh
# The agent of the end-to-end tests. Its behaviour is chosen by the first word
# of the task title, so one worker serves every scenario.
set -eu
# What it leaves for the test, a later attempt (as another uid) may replace.
umask 000
prompt=$(cat)
case "$TASK_TITLE" in
change*)
	echo "line 1: read the prompt ($(printf '%s' "$prompt" | wc -c) bytes)"
	echo "line 2: editing"
	echo "a warning on stderr" >&2
	printf 'changed by run %s\n' "$RUN_ID" >> README.md
	mkdir -p src && printf 'package main\n' > src/new.go
	printf '# Plan\n\n1. Edit README.md\n' > "$TASK_ARTIFACTS_DIR/plan.md"
	printf '\001\002binary' > "$TASK_ARTIFACTS_DIR/blob.bin"
	ln -s /etc/passwd "$TASK_ARTIFACTS_DIR/passwd-link"
	echo "line 3: done"
	;;
commit*)
	# An agent that commits part of its work itself.
	printf 'agent commit\n' > AGENT.md
	git add AGENT.md
	git -c user.name=Agent -c user.email=agent@example.com commit --quiet -m "Agent's own commit"
	printf 'left for the worker\n' > WORKER.md
	echo "committed one change, left one"
	;;
ci*)
	# The stand-in's CI fails a commit whose ci.txt says broken. "ci fix"
	# fixes it once told what failed; "ci never" never does.
	if [ "$TASK_DESCRIPTION" = fix ] && printf '%s' "$prompt" | grep -q "Failing checks: test"; then
		echo "told: $(printf '%s' "$prompt" | grep 'must say fixed' | head -n 1 | sed 's/^ *//')"
		echo fixed > ci.txt
	else
		echo broken > ci.txt
	fi
	;;
slow*)
	echo "working slowly"
	sleep 2
	echo "done slowly"
	;;
once*)
	# Hangs on its first run, so the test can kill the worker running it;
	# finishes on the next one.
	if [ -e "$TASK_DESCRIPTION/ran-once" ]; then
		echo "second attempt: finishing"
		printf 'finished on attempt 2\n' >> README.md
	else
		touch "$TASK_DESCRIPTION/ran-once"
		echo "first attempt: hanging"
		echo "$$" > "$TASK_DESCRIPTION/pid.tmp" && mv "$TASK_DESCRIPTION/pid.tmp" "$TASK_DESCRIPTION/pid"
		exec sleep 300
	fi
	;;
cut*)
	# Works until it is stopped on its first attempt (the test cuts its
	# worker off from Temporal); on the next it says whether the first one is
	# still running, then finishes.
	if [ -e "$TASK_DESCRIPTION/first" ]; then
		state=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$(cat "$TASK_DESCRIPTION/first")/status" 2>/dev/null || true)
		case "$state" in
		"" | Z) echo "second attempt: the first attempt's agent is gone" ;;
		*) echo "second attempt: the first attempt's agent is still running" ;;
		esac
		printf 'finished on attempt 2\n' >> README.md
	else
		echo "$$" > "$TASK_DESCRIPTION/first.tmp" && mv "$TASK_DESCRIPTION/first.tmp" "$TASK_DESCRIPTION/first"
		while :; do
			echo "first attempt: working"
			sleep 0.2
		done
	fi
	;;
wait*)
	# Works until the test leaves the file go in its folder, then finishes.
	echo "$$" > "$TASK_DESCRIPTION/pid.tmp" && mv "$TASK_DESCRIPTION/pid.tmp" "$TASK_DESCRIPTION/pid"
	until [ -e "$TASK_DESCRIPTION/go" ]; do sleep 0.1; done
	echo "told to finish"
	printf 'finished\n' >> README.md
	;;
nothing*)
	echo "looked around, nothing to change"
	;;
protocol*)
	# Every line type of the command protocol, and a malformed one.
	echo '{"type":"progress","step":"tests","status":"started","label":"Running the tests"}'
	echo '{"type":"message","text":"I will add a changelog."}'
	echo '{"type":"tool_call","id":"c1","title":"Write CHANGELOG.md","kind":"edit","input":{"path":"CHANGELOG.md"}}'
	printf '# Changelog\n' > CHANGELOG.md
	echo '{"type":"tool_result","id":"c1","status":"completed","output":"wrote 1 line"}'
	echo '{"type":"tool_result","status":"completed"}'
	printf 'notes of the run\n' > notes.txt
	echo '{"type":"artifact","path":"notes.txt","name":"run-notes.md"}'
	echo '{"type":"progress","step":"tests","status":"completed","label":"Running the tests"}'
	echo '{"level":"info","msg":"a JSON log line that is not protocol"}'
	echo '{"type":"output","summary":"Added a changelog."}'
	;;
report*)
	# A task with a json_schema: the result goes to TASK_OUTPUT_FILE.
	case "$TASK_DESCRIPTION" in
	good) printf '{"severity":"low","files":["main.go"]}' > "$TASK_OUTPUT_FILE" ;;
	bad) printf '{"severity":"catastrophic"}' > "$TASK_OUTPUT_FILE" ;;
	line) echo '{"type":"output","summary":"one finding","result":{"severity":"high","files":[]}}' ;;
	esac
	printf '%s' "$prompt" | grep -q 'JSON Schema' && echo "the prompt asks for JSON"
	;;
fail*)
	echo "trying something"
	echo "error: could not compile" >&2
	echo "fatal: giving up" >&2
	exit 3
	;;
hang*)
	# A child in the same group, to prove the whole group is stopped.
	sleep 300 &
	echo "$$ $!" > "$TASK_DESCRIPTION.tmp" && mv "$TASK_DESCRIPTION.tmp" "$TASK_DESCRIPTION"
	echo "working for a long time"
	wait
	;;
leak*)
	# The task hands the agent a secret; it prints it every way it can.
	secret=$TASK_DESCRIPTION
	first=$(printf '%s' "$secret" | cut -c1-6)
	rest=$(printf '%s' "$secret" | cut -c7-)
	printf 'split across writes: %s' "$first"
	sleep 0.1
	printf '%s end\n' "$rest"
	printf '{"config":{"token":"%s"}}\n' "$secret"
	echo "cloning https://bot:$secret@example.com/acme/app.git"
	echo "ghp_abcdefghijklmnopqrstuvwxyz012345 is a token shape"
	echo "failed with $secret" >&2
	exit 1
	;;
*)
	echo "unknown scenario: $TASK_TITLE" >&2
	exit 64
	;;
esac
