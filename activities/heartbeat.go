package activities

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/fence"
)

// holdAttempt heartbeats a host step until release is called, and returns
// the context the step works in. Temporal's cancel of the step reaches it
// as before; besides, the context ends with a fence error (see package
// fence) once no heartbeat got through for the step's heartbeat timeout, or
// Temporal no longer knows the step. The SDK would go on until the step's
// StartToClose deadline, long after the workflow has started the run over
// on another worker.
//
// The heartbeats go through the worker's client rather than the SDK's own,
// batched ones, whose delivery the step can't see; the heartbeat goes on
// while a cancelled step stops its agent and flushes its log.
func (a *Activities) holdAttempt(ctx context.Context, ref RunRef) (context.Context, func()) {
	if !activity.IsActivity(ctx) {
		return ctx, func() {}
	}
	info := activity.GetInfo(ctx)
	client := activity.GetClient(ctx)
	if info.HeartbeatTimeout <= 0 || client == nil {
		// No timeout to be noticed by (a test's environment): the SDK's
		// heartbeat still brings a cancel.
		return ctx, sdkHeartbeat(ctx)
	}
	fenced, cancel := context.WithCancelCause(ctx)
	lease := fence.NewLease(info.HeartbeatTimeout, func(err error) {
		a.logger(ref).Warn("step fenced: it stops", zap.String("step", info.ActivityType.Name), zap.Error(err))
		cancel(err)
	})
	done := make(chan struct{})
	beats := context.WithoutCancel(ctx)
	every := heartbeatInterval(info.HeartbeatTimeout)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			call, cancelCall := context.WithTimeout(beats, every)
			err := client.RecordActivityHeartbeat(call, info.TaskToken)
			cancelCall()
			var notFound *serviceerror.NotFound
			switch {
			case err == nil:
				lease.Renew()
			case errors.As(err, &notFound):
				// Temporal timed the step out: the run has moved on.
				lease.Lose(&fence.LeaseLostError{After: info.HeartbeatTimeout})
			case temporal.IsCanceledError(err), errors.Is(err, activity.ErrActivityPaused), errors.Is(err, activity.ErrActivityReset):
				// Temporal answered, and asks the step to stop: the SDK's own
				// heartbeat hears the same and cancels the step's context the
				// way the SDK's cancellation works.
				lease.Renew()
				activity.RecordHeartbeat(ctx)
			}
		}
	}()
	var once sync.Once
	return fenced, func() {
		once.Do(func() {
			close(done)
			lease.Stop()
		})
	}
}

// heartbeatInterval is how often a step heartbeats: every 2 s, the most the
// SDK's throttle let through before, or five times per heartbeat timeout
// when that is shorter, so that one slow answer doesn't cost a lease.
func heartbeatInterval(timeout time.Duration) time.Duration {
	return min(max(timeout/5, time.Second), heartbeatEvery)
}

// sdkHeartbeat heartbeats through the SDK until the returned stop is called,
// so the activity learns of a cancellation within the heartbeat throttle
// interval.
func sdkHeartbeat(ctx context.Context) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				// The activity's own context: a heartbeat the SDK batches and
				// sends later must not carry a context that stop cancelled.
				activity.RecordHeartbeat(ctx)
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}
