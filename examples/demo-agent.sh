#!/bin/sh
# A small coding agent for the demo and the tests: it reads the task from
# stdin, writes a plan, makes a real change in the clone, and says what it does.
set -eu

prompt=$(cat)
title=$(printf '%s\n' "$prompt" | head -n 1)

echo "Reading the task: $title"
echo "Working in $(basename "$(pwd)") on branch $(git rev-parse --abbrev-ref HEAD)"
echo "Files here: $(ls | tr '\n' ' ')"

cat > "$TASK_ARTIFACTS_DIR/plan.md" <<PLAN
# Plan

Task: $title

1. Read README.md to see what the project says about itself.
2. Add a section to README.md that answers the task.
3. Record what changed in CHANGES.md.
PLAN
echo "Wrote plan.md with 3 steps"

printf '\n## %s\n\nAdded by the demo agent for task %s.\n' "$title" "$TASK_ID" >> README.md
echo "Edited README.md: added a section titled \"$title\""

printf -- '- %s (run %s)\n' "$title" "$RUN_ID" >> CHANGES.md
echo "Recorded the change in CHANGES.md"

echo "This demo agent does not run tests; a real agent would run them now" >&2
echo "Done: 2 files changed"
