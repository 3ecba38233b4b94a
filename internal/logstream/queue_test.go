package logstream

import (
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestQueueSpillsAndReadsBackInOrder(t *testing.T) {
	dir := t.TempDir()
	q := newQueue(1000, dir)
	next, want := 0, 0
	for round := range 50 {
		for range 37 + round%5 {
			require.NoError(t, q.push([]byte(fmt.Sprintf(`{"n":%d}`, next))))
			next++
		}
		if q.spilling() {
			files, _ := os.ReadDir(dir)
			require.Len(t, files, 1)
		}
		batch, _, err := q.first(25, 1<<20)
		require.NoError(t, err)
		for _, e := range batch {
			require.Equal(t, fmt.Sprintf(`{"n":%d}`, want), string(e))
			want++
		}
		q.drop(len(batch))
	}
	for q.len() > 0 {
		batch, _, err := q.first(25, 1<<20)
		require.NoError(t, err)
		for _, e := range batch {
			require.Equal(t, fmt.Sprintf(`{"n":%d}`, want), string(e))
			want++
		}
		q.drop(len(batch))
	}
	require.Equal(t, next, want)
	require.False(t, q.spilling())
	files, _ := os.ReadDir(dir)
	require.Empty(t, files)
}
