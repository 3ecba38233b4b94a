// Package publish is how a run's change is presented on the repository:
// its branch's name, its commit's message, its pull request's title and
// body. Pure text; the steps that push and open the request use it.
package publish

import (
	"fmt"
	"regexp"
	"strings"
)

// Run is what the names and texts are made of.
type Run struct {
	TaskID, RunID string
	Title         string
	Description   string
	// Slug is the task's slug (ABC-12), as PostHog writes it.
	Slug string
}

var unsafeBranchChars = regexp.MustCompile(`[^A-Za-z0-9._/-]+`)

// Branch fills {slug}, {task_id} and {run_id} in the branch template. The
// slug keeps its case, as in the names PostHog's own runner gives a task's
// branch (posthog/task-ABC-12): a task either of them started is continued
// on the same branch.
func Branch(template string, run Run) string {
	return branch(template, run, func(slug string) string { return slug })
}

// LegacyBranch is the name Branch gave before it kept the slug's case;
// branches pushed then are still continued.
func LegacyBranch(template string, run Run) string {
	return branch(template, run, strings.ToLower)
}

func branch(template string, run Run, slugCase func(string) string) string {
	slug := slugCase(unsafeBranchChars.ReplaceAllString(run.Slug, "-"))
	if slug == "" {
		slug = run.TaskID
	}
	return strings.NewReplacer("{slug}", slug, "{task_id}", run.TaskID, "{run_id}", run.RunID).Replace(template)
}

// Title is the pull request's title, and the commit's subject: the task
// title's first line.
func Title(run Run) string {
	title := strings.TrimSpace(strings.SplitN(run.Title, "\n", 2)[0])
	if title == "" {
		return "Changes for task " + run.TaskID
	}
	return title
}

// CommitMessage is the run's commit message, with trailers naming the task
// and the run.
func CommitMessage(run Run) string {
	return fmt.Sprintf("%s\n\nTask-Id: %s\nRun-Id: %s\n", Title(run), run.TaskID, run.RunID)
}

// RunURL fills {task_id} and {run_id} in template; "" without one.
func RunURL(template string, run Run) string {
	if template == "" {
		return ""
	}
	return strings.NewReplacer("{task_id}", run.TaskID, "{run_id}", run.RunID).Replace(template)
}

// Change is what the pull request's body says of the change.
type Change struct {
	// Summary is the agent's final message.
	Summary                             string
	FilesChanged, Insertions, Deletions int
	RunURL                              string
}

// Body is the pull request's body: the task's description, what the agent
// said it did, the diff's size, and the run it came from.
func Body(run Run, c Change) string {
	var b strings.Builder
	if d := strings.TrimSpace(run.Description); d != "" {
		b.WriteString(d + "\n\n")
	}
	if c.Summary != "" {
		b.WriteString("## What the agent did\n\n" + c.Summary + "\n\n")
	}
	fmt.Fprintf(&b, "%d files changed, %d insertions(+), %d deletions(-)\n\n", c.FilesChanged, c.Insertions, c.Deletions)
	if c.RunURL != "" {
		fmt.Fprintf(&b, "Made by a PostHog task run: %s\n", c.RunURL)
	}
	return b.String()
}
