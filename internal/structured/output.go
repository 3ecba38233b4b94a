package structured

import (
	"encoding/json"
	"slices"
)

// WorkerKeys are the keys of a run's output the worker writes itself: what
// it pushed (base_sha, base_branch, head_branch, commit_sha, changed, published
// and the diff's size, turns), the pull request (pr_url, pr_error) and its checks (ci, ci_rounds), what the agent cost
// (usage), its final message (summary) and what the log lost
// (log_entries_dropped). They are facts of the run the agent must not make
// up, so a result never sets them — whether or not this run wrote them, so
// where a result's key lands does not depend on how the run went. A key the
// worker starts writing belongs here (a test in activities checks).
var WorkerKeys = []string{
	"base_branch", "base_sha", "changed", "ci", "ci_rounds", "commit_sha", "deletions", "files_changed", "head_branch",
	"insertions", "log_entries_dropped", "pr_error", "pr_url", "published", "summary", "turns", "usage",
}

// ResultKey is where a result goes that is not an object, and the keys of
// an object result that are the worker's own.
const ResultKey = "result"

// Merge puts a schema-checked result into the run's output: an object's
// keys at the top level, except the worker's own (WorkerKeys) and "result"
// itself, which are kept under output.result — so the worker's values
// always win and nothing the schema asked for is lost; any other JSON value
// as output.result. It returns the keys it moved under result, sorted.
//
// Kept rather than dropped: a schema may well ask for a "summary" or a
// "changed" of its own, and such a run is not hostile; dropping the key
// would lose what the task asked for.
func Merge(output map[string]any, result json.RawMessage) (map[string]any, []string) {
	if len(result) == 0 {
		return output, nil
	}
	var fields map[string]any
	if json.Unmarshal(result, &fields) == nil && fields != nil {
		kept := map[string]any{}
		var moved []string
		for k, v := range fields {
			if k == ResultKey || slices.Contains(WorkerKeys, k) {
				kept[k] = v
				moved = append(moved, k)
				continue
			}
			output[k] = v
		}
		if len(kept) > 0 {
			output[ResultKey] = kept
		}
		slices.Sort(moved)
		return output, moved
	}
	var v any
	if json.Unmarshal(result, &v) == nil {
		output[ResultKey] = v
	}
	return output, nil
}
