package activities

import "context"

// NoteInput is a console entry for a run's log.
type NoteInput struct {
	RunRef
	Level   string `json:"level"`
	Message string `json:"message"`
	// Key names the note among the run's notes, so a retried attempt writes
	// it under the same event_id.
	Key string `json:"key,omitempty"`
}

// Note writes one console entry in a run's log.
func (a *Activities) Note(ctx context.Context, in NoteInput) error {
	log := a.stream(ctx, in.RunRef, NoteName+"/"+in.Key, true)
	log.Console(in.Level, in.Message)
	_, err := a.closeStream(ctx, in.RunRef, log, 0)
	return a.temporalError(err)
}
