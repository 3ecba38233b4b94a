package slots

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPool(t *testing.T) {
	p := New(2)
	now := time.Unix(0, 0)
	p.now = func() time.Time { return now }
	require.True(t, p.Acquire("a", time.Minute))
	require.True(t, p.Acquire("b", time.Minute))
	require.False(t, p.Acquire("c", time.Minute), "full")
	require.True(t, p.Acquire("a", time.Minute), "a claim is renewed, not doubled")
	require.Equal(t, 2, p.InUse())
	p.Release("a")
	require.True(t, p.Acquire("c", time.Minute))
	now = now.Add(2 * time.Minute)
	require.True(t, p.Acquire("d", time.Minute), "expired claims free their slots")
	require.Equal(t, 1, p.InUse())
	p.Release("nobody")

	p.Close()
	require.False(t, p.Acquire("e", time.Minute), "a closed pool takes no new claim")
	require.True(t, p.Acquire("d", time.Minute), "but renews one it holds")
}

// A claim past its expiry is not in use: a drain that waits for the slots
// to empty doesn't wait out its timeout on a run whose workflow vanished.
func TestAnExpiredClaimIsNotInUse(t *testing.T) {
	p := New(2)
	now := time.Unix(0, 0)
	p.now = func() time.Time { return now }
	require.True(t, p.Acquire("lost", time.Minute))
	require.True(t, p.Acquire("live", time.Hour))
	require.Equal(t, 2, p.InUse())
	now = now.Add(2 * time.Minute)
	require.Equal(t, 1, p.InUse(), "the expired claim is free without a new Acquire")
	require.False(t, p.Held("lost"))
	require.True(t, p.Held("live"))
	p.Close()
	p.Release("live")
	require.Zero(t, p.InUse())
}
