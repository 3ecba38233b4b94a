package fence

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestTheRecordedAttemptIsReadFromTheRunsState(t *testing.T) {
	var decoded map[string]any
	require.NoError(t, json.Unmarshal([]byte(`{"mode":"background","host_attempt":2}`), &decoded))
	require.Equal(t, 2, Recorded(decoded), "as the API's JSON decodes")
	require.Equal(t, 3, Recorded(State(3)))
	require.Equal(t, 4, Recorded(map[string]any{StateKey: json.Number("4")}))
	for _, state := range []map[string]any{nil, {}, {StateKey: "2"}, {StateKey: 1.5}, {"other": 2}} {
		require.Zero(t, Recorded(state), "%v", state)
	}
}

func TestAnAttemptIsSupersededOnlyByALaterOne(t *testing.T) {
	require.NoError(t, Check(State(1), 1))
	require.NoError(t, Check(State(1), 2), "an attempt that has not recorded itself yet")
	require.NoError(t, Check(nil, 1))
	require.NoError(t, Check(State(5), 0), "a workflow that numbers no attempts is never fenced")

	err := Check(State(3), 2)
	var superseded *SupersededError
	require.ErrorAs(t, err, &superseded)
	require.Equal(t, SupersededError{Own: 2, Recorded: 3}, *superseded)
	require.True(t, Fenced(err))
	require.Contains(t, err.Error(), "attempt 3 holds it now")
}

func TestALeaseHoldsWhileRenewedAndIsLostOnceItIsNot(t *testing.T) {
	const ttl = 300 * time.Millisecond
	var losses atomic.Int32
	var reason atomic.Pointer[error]
	lease := NewLease(ttl, func(err error) { losses.Add(1); reason.Store(&err) })
	// Renewed well within its ttl, for several ttls: it holds.
	for deadline := time.Now().Add(3 * ttl); time.Now().Before(deadline); {
		lease.Renew()
		require.NoError(t, lease.Err())
		time.Sleep(ttl / 10)
	}
	require.Zero(t, losses.Load())

	require.Eventually(t, func() bool { return lease.Err() != nil }, 10*ttl, 5*time.Millisecond, "a lease nobody renews is lost")
	var lost *LeaseLostError
	require.ErrorAs(t, lease.Err(), &lost)
	require.Equal(t, ttl, lost.After)
	require.Equal(t, int32(1), losses.Load())
	require.Equal(t, lease.Err(), *reason.Load())

	lease.Renew()
	require.Error(t, lease.Err(), "a lost lease stays lost")
	lease.Lose(errors.New("later"))
	require.ErrorAs(t, lease.Err(), &lost, "and keeps its first reason")
	require.Equal(t, int32(1), losses.Load(), "lost is called once")
}

func TestALeaseLostOnPurposeOrStopped(t *testing.T) {
	var losses atomic.Int32
	lease := NewLease(time.Hour, func(error) { losses.Add(1) })
	superseded := &SupersededError{Own: 1, Recorded: 2}
	lease.Lose(superseded)
	require.Equal(t, superseded, lease.Err())
	require.Equal(t, int32(1), losses.Load())

	stopped := NewLease(50*time.Millisecond, func(error) { losses.Add(1) })
	stopped.Stop()
	stopped.Lose(superseded)
	require.NoError(t, stopped.Err(), "a step that is over loses nothing")
	require.Equal(t, int32(1), losses.Load())
}

func TestTheCauseOfAFencedContext(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	require.NoError(t, Cause(ctx))
	cancel(&LeaseLostError{After: time.Second})
	require.ErrorContains(t, Cause(ctx), "no heartbeat of this worker reached Temporal for 1s")

	cancelled, stop := context.WithCancelCause(context.Background())
	stop(errors.New("the run was cancelled"))
	require.NoError(t, Cause(cancelled), "a cancel is not a fence")
}
