package proctest

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParent(t *testing.T) {
	parent, err := Parent(os.Getpid())
	require.NoError(t, err)
	require.Equal(t, os.Getppid(), parent)
	_, err = Parent(1 << 30)
	require.Error(t, err)
}
