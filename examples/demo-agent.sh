#!/bin/sh
# A small coding agent for the demo and the tests: it reads the task from
# stdin, writes a plan, makes a real change in the clone, and says what it
# does — in plain lines and in taskworker's JSON-lines protocol (see the
# README), which the run's log shows as messages and tool calls.
set -eu

prompt=$(cat)
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
