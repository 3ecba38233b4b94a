#!/bin/sh
# A small coding agent for the demo and the tests: it reads the task from
# stdin, writes a plan, makes a real change in the clone, and says what it
# does — in plain lines and in taskworker's JSON-lines protocol (see the
# README), which the run's log shows as messages and tool calls.
set -eu

prompt=$(cat)

# An interactive run's later turns bring a follow-up message (TASK_TURN 2, 3,
# …, the message on stdin and in TASK_PROMPT): do what it asks in README.md
# and note it in CHANGES.md, so each turn leaves a change of its own.
turn=${TASK_TURN:-1}
if [ "$turn" -gt 1 ]; then
	request=$(printf '%s\n' "$prompt" | head -n 1)
	echo "Turn $turn: reading the follow-up: $request"
	echo '{"type":"message","text":"I will do what the follow-up asks in README.md and record it in CHANGES.md."}'
	echo '{"type":"tool_call","id":"edit-readme-'"$turn"'","title":"Edit README.md","kind":"edit","input":{"path":"README.md"}}'
	printf '\n%s (turn %s of the demo agent)\n' "$request" "$turn" >> README.md
	echo '{"type":"tool_result","id":"edit-readme-'"$turn"'","status":"completed","output":"answered the follow-up"}'
	printf -- '- Follow-up, turn %s: %s (run %s)\n' "$turn" "$request" "$RUN_ID" >> CHANGES.md
	echo '{"type":"output","summary":"Answered the follow-up in README.md and recorded it in CHANGES.md."}'
	exit 0
fi

title=$(printf '%s\n' "$prompt" | head -n 1)

echo "Reading the task: $title"
echo "Working in $(basename "$(pwd)") on branch $(git rev-parse --abbrev-ref HEAD)"
echo '{"type":"message","text":"I will plan the change, edit README.md and record it in CHANGES.md."}'

cat > "$TASK_ARTIFACTS_DIR/plan.md" <<PLAN
# Plan

Task: $title

1. Read README.md to see what the project says about itself.
2. Add a section to README.md that answers the task.
3. Record what changed in CHANGES.md.
PLAN
echo "Wrote plan.md with 3 steps"

echo '{"type":"tool_call","id":"edit-readme","title":"Edit README.md","kind":"edit","input":{"path":"README.md"}}'
printf '\n## %s\n\nAdded by the demo agent for task %s.\n' "$title" "$TASK_ID" >> README.md
echo '{"type":"tool_result","id":"edit-readme","status":"completed","output":"added a section"}'

echo '{"type":"tool_call","id":"edit-changes","title":"Edit CHANGES.md","kind":"edit","input":{"path":"CHANGES.md"}}'
printf -- '- %s (run %s)\n' "$title" "$RUN_ID" >> CHANGES.md
echo '{"type":"tool_result","id":"edit-changes","status":"completed","output":"recorded the change"}'

echo "This demo agent does not run tests; a real agent would run them now" >&2
echo '{"type":"output","summary":"Added a README section for the task and recorded it in CHANGES.md."}'
