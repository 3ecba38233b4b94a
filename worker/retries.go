package worker

import (
	"context"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"

	"github.com/taskworker/taskworker/activities"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// Each kind of Tasks API call has one level of retries:
//
//   - the API steps' (StartRun, Note, FinishRun): the step's retry policy
//     (see package workflows); the client sends them once;
//   - the host steps' (RunAgent, Publish): the client, hostCallRetries times,
//     as the steps are not retried for them;
//   - a log append: the stream's own loop (see package logstream); the
//     client sends it once;
//   - the reaper's and the dispatcher's: their next cycle, but for the two
//     calls the dispatcher makes after starting a workflow (see package
//     dispatch); the client sends them once.
const (
	// hostCallRetries is how often the client sends a host step's call again:
	// RunAgent is never retried (its agent must not run twice), and Publish
	// is not retried for one of its calls, which would push, ask GitHub and
	// upload all over. Worst case of one call: 7 requests of up to 30 s,
	// apart by apiRetryWait doubling to apiRetryMaxWait (jittered down to
	// half) or by the API's Retry-After when longer (a minute at most): half
	// a minute to a minute of the API down, 4.5 min when each request times
	// out, 9.5 min at the very most. watchRun's reads are RunAgent's calls
	// too; its next read comes its interval after the last one ended.
	hostCallRetries = 6
	apiRetryWait    = time.Second
	apiRetryMaxWait = 30 * time.Second
)

// stepRetries sets the retries of a step's Tasks API calls (the host steps'
// in the client), and keeps the next attempt of a step that failed on the
// API no sooner than its own policy's backoff (see
// activities.RetryNoSoonerThanPolicy).
type stepRetries struct {
	interceptor.WorkerInterceptorBase
}

func (*stepRetries) InterceptActivity(_ context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	return &stepRetriesInbound{ActivityInboundInterceptorBase: interceptor.ActivityInboundInterceptorBase{Next: next}}
}

type stepRetriesInbound struct {
	interceptor.ActivityInboundInterceptorBase
}

func (i *stepRetriesInbound) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	switch activity.GetInfo(ctx).ActivityType.Name {
	case activities.RunAgentName, activities.PublishName:
		ctx = tasksapi.WithRetries(ctx, hostCallRetries)
	}
	out, err := i.Next.ExecuteActivity(ctx, in)
	return out, activities.RetryNoSoonerThanPolicy(ctx, err)
}
