package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// RecordHistoriesEnv, set to 1, makes the tests that run the recorded
// scenarios write their workflows' histories to workflows/testdata, which
// `go test ./workflows/` replays against the workflow's code (see the
// README: re-record them once a change of the workflow's shape is behind a
// workflow.GetVersion).
const RecordHistoriesEnv = "TASKWORKER_RECORD_HISTORIES"

// historyDir is workflows/testdata, from this package's folder.
const historyDir = "../../workflows/testdata"

// history reads a workflow's whole history.
func history(t *testing.T, c client.Client, workflowID string) []*historypb.HistoryEvent {
	t.Helper()
	var events []*historypb.HistoryEvent
	it := c.GetWorkflowHistory(context.Background(), workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		require.NoError(t, err)
		events = append(events, e)
	}
	return events
}

// stepEvents is a workflow's history as what happened to its steps, in
// order: "Publish scheduled", "Publish cancel requested", "Publish canceled",
// "CleanupWorkspace completed", "FinishRun ran" (a local activity), ...
func stepEvents(t *testing.T, c client.Client, workflowID string) []string {
	t.Helper()
	scheduled := map[int64]string{}
	var out []string
	for _, e := range history(t, c, workflowID) {
		switch e.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			name := e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName()
			scheduled[e.GetEventId()] = name
			out = append(out, name+" scheduled")
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED:
			out = append(out, scheduled[e.GetActivityTaskCancelRequestedEventAttributes().GetScheduledEventId()]+" cancel requested")
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
			out = append(out, scheduled[e.GetActivityTaskCanceledEventAttributes().GetScheduledEventId()]+" canceled")
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			out = append(out, scheduled[e.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()]+" completed")
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_FAILED:
			out = append(out, scheduled[e.GetActivityTaskFailedEventAttributes().GetScheduledEventId()]+" failed")
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
			out = append(out, scheduled[e.GetActivityTaskTimedOutEventAttributes().GetScheduledEventId()]+" timed out")
		case enumspb.EVENT_TYPE_MARKER_RECORDED:
			attrs := e.GetMarkerRecordedEventAttributes()
			if attrs.GetMarkerName() != "LocalActivity" {
				continue
			}
			var marker struct{ ActivityType string }
			if data := attrs.GetDetails()["data"].GetPayloads(); len(data) > 0 {
				require.NoError(t, json.Unmarshal(data[0].GetData(), &marker))
			}
			out = append(out, marker.ActivityType+" ran")
		}
	}
	return out
}

// requireBefore checks that event first happened, and before then.
func requireBefore(t *testing.T, events []string, first, then string) {
	t.Helper()
	i, j := slices.Index(events, first), slices.Index(events, then)
	require.True(t, i >= 0 && j >= 0 && i < j, "%q before %q in %q", first, then, events)
}

// keepHistory writes the workflow's history to
// workflows/testdata/name/{workflow ID}.json (the workflow reads its task's
// ID from its own) when RecordHistoriesEnv is 1, in place of the one
// recorded before, with the machine's name and the tests' temporary folders
// replaced by fixed ones: the replay reads only the shape.
func keepHistory(t *testing.T, c client.Client, workflowID, name string) {
	t.Helper()
	if os.Getenv(RecordHistoriesEnv) != "1" {
		return
	}
	h := &historypb.History{Events: history(t, c, workflowID)}
	scrub(h.ProtoReflect(), machineNeutral())
	data, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(h)
	require.NoError(t, err)
	dir := filepath.Join(historyDir, name)
	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	path := filepath.Join(dir, workflowID+".json")
	require.NoError(t, os.WriteFile(path, append(data, '\n'), 0o644))
	t.Logf("recorded the history of %s in %s", workflowID, path)
}

// machineNeutral replaces what names this machine in a history: its host
// name (in identities, queue names and sticky queue names) and the tests'
// temporary folders.
func machineNeutral() func(string) string {
	host, _ := os.Hostname()
	temp := regexp.MustCompile(regexp.QuoteMeta(filepath.Clean(os.TempDir())) + `/[^/"\\]+`)
	var hostRe *regexp.Regexp
	if host != "" {
		hostRe = regexp.MustCompile(`\b` + regexp.QuoteMeta(host) + `(-\d+|@|:)`)
	}
	return func(s string) string {
		s = temp.ReplaceAllString(s, "/tmp/e2e")
		if hostRe != nil {
			s = hostRe.ReplaceAllString(s, "host$1")
		}
		return s
	}
}

// scrub applies clean to every string of m and to the data of its JSON
// payloads.
func scrub(m protoreflect.Message, clean func(string) string) {
	type set struct {
		fd protoreflect.FieldDescriptor
		v  protoreflect.Value
	}
	var sets []set
	jsonPayload := isJSONPayload(m)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				scrub(v.List().Get(i).Message(), clean)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				scrub(mv.Message(), clean)
				return true
			})
		case fd.IsList() || fd.IsMap():
		case fd.Message() != nil:
			scrub(v.Message(), clean)
		case fd.Kind() == protoreflect.StringKind:
			sets = append(sets, set{fd, protoreflect.ValueOfString(clean(v.String()))})
		case fd.Kind() == protoreflect.BytesKind && jsonPayload && fd.Name() == "data":
			sets = append(sets, set{fd, protoreflect.ValueOfBytes([]byte(clean(string(v.Bytes()))))})
		}
		return true
	})
	for _, s := range sets {
		m.Set(s.fd, s.v)
	}
}

func isJSONPayload(m protoreflect.Message) bool {
	if m.Descriptor().FullName() != "temporal.api.common.v1.Payload" {
		return false
	}
	meta := m.Get(m.Descriptor().Fields().ByName("metadata")).Map()
	key := protoreflect.ValueOfString("encoding").MapKey()
	return meta.Has(key) && string(meta.Get(key).Bytes()) == "json/plain"
}
