package devstack

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// The user's message of an interactive run reads as theirs, not the agent's.
func TestRenderEntrySetsTheUsersMessageApartFromTheAgents(t *testing.T) {
	entry := func(update string) json.RawMessage {
		return json.RawMessage(`{"type":"notification","timestamp":"2026-01-02T03:04:05Z","notification":{"jsonrpc":"2.0",` +
			`"method":"session/update","params":{"update":` + update + `}}}`)
	}
	require.Equal(t, "03:04:05  you   also update the changelog",
		RenderEntry(entry(`{"sessionUpdate":"user_message_chunk","content":{"type":"text","text":"also update the changelog"}}`)))
	require.Equal(t, "03:04:05  agent done",
		RenderEntry(entry(`{"sessionUpdate":"agent_message","content":{"type":"text","text":"done"}}`)))
}
