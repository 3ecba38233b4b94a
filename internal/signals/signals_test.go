package signals

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"
)

// Payloads as PostHog's client sends them: one per argument, None as binary/null.
func TestTheConverterReadsEveryArgumentOfASignal(t *testing.T) {
	dc := DataConverter(nil)
	payloads, err := converter.GetDefaultDataConverter().ToPayloads("cancelled", nil)
	require.NoError(t, err)
	require.Len(t, payloads.Payloads, 2)
	var args Args
	require.NoError(t, dc.FromPayloads(payloads, &args))
	require.False(t, args.FirstOnly)
	done, err := DecodeCompletion(args)
	require.NoError(t, err)
	require.Equal(t, Completion{Status: "cancelled"}, done)

	payloads, err = dc.ToPayloads(Positional{"failed", "boom"})
	require.NoError(t, err)
	require.NoError(t, dc.FromPayloads(payloads, &args))
	done, err = DecodeCompletion(args)
	require.NoError(t, err)
	require.Equal(t, Completion{Status: "failed", ErrorMessage: "boom"}, done)

	var plain Args
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(payloads, &plain))
	require.True(t, plain.FirstOnly, "the default converter hands over the first argument only")
	require.Len(t, plain.Values, 1)
}

func TestACompletionMustBeTerminal(t *testing.T) {
	payloads, err := DataConverter(nil).ToPayloads(Positional{"in_progress", nil})
	require.NoError(t, err)
	var args Args
	require.NoError(t, DataConverter(nil).FromPayloads(payloads, &args))
	_, err = DecodeCompletion(args)
	require.ErrorContains(t, err, "not terminal")
}

func TestTheLast500MessageIDsAreKept(t *testing.T) {
	var c Conversation
	for i := range KeptMessageIDs + 1 {
		require.True(t, c.Add(Message{MessageID: fmt.Sprint(i)}))
	}
	require.Len(t, c.SeenIDs, KeptMessageIDs)
	require.False(t, c.Add(Message{MessageID: "500"}), "a recent ID is a duplicate")
	require.False(t, c.Add(Message{MessageID: "1"}))
	require.True(t, c.Add(Message{MessageID: "0"}), "the 501st ID back is forgotten")
	require.True(t, c.Add(Message{}), "a message without an ID is kept")
	require.True(t, c.Add(Message{}))
	require.Equal(t, 2, c.Duplicates)
}
