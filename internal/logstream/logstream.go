// Package logstream ships a run's log entries to append_log: in production
// order, in batches, one request at a time, without ever blocking the producer.
package logstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/redact"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// Appender is the part of the Tasks API the stream needs.
type Appender interface {
	AppendLog(ctx context.Context, taskID, runID string, entries []json.RawMessage) error
}

// Config bounds batches and retries; zero fields take the defaults below.
type Config struct {
	// A batch is sent when it holds MaxBatchEntries or MaxBatchBytes, or
	// FlushDelay after its first entry arrived, whichever comes first.
	MaxBatchEntries int
	MaxBatchBytes   int
	FlushDelay      time.Duration
	// RetryWait is the first backoff after a failed append; it doubles up to RetryMaxWait.
	RetryWait    time.Duration
	RetryMaxWait time.Duration
}

// Defaults. The hosted runner debounces 500 ms; 150 ms keeps the UI live while
// an agent that prints fast still fills batches by count or size first.
const (
	DefaultMaxBatchEntries = 200
	DefaultMaxBatchBytes   = 512 << 10
	DefaultFlushDelay      = 150 * time.Millisecond
	DefaultRetryWait       = 500 * time.Millisecond
	DefaultRetryMaxWait    = 15 * time.Second
)

func (c *Config) applyDefaults() {
	if c.MaxBatchEntries <= 0 {
		c.MaxBatchEntries = DefaultMaxBatchEntries
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.FlushDelay <= 0 {
		c.FlushDelay = DefaultFlushDelay
	}
	if c.RetryWait <= 0 {
		c.RetryWait = DefaultRetryWait
	}
	if c.RetryMaxWait <= 0 {
		c.RetryMaxWait = DefaultRetryMaxWait
	}
}

// Stats is what a stream did.
type Stats struct {
	Sent     int
	Rejected int // entries the API refused one by one (400)
	Dropped  int // entries never sent: unsent at the close deadline, or after a fatal error
}

// Stream is the log of one run, for the life of one activity.
type Stream struct {
	api          Appender
	taskID       string
	runID        string
	redactor     *redact.Redactor
	cfg          Config
	now          func() time.Time
	wake         chan struct{}
	done         chan struct{}
	sendCtx      context.Context
	cancelSender context.CancelFunc

	mu        sync.Mutex
	queue     []queued
	closed    bool
	stats     Stats
	fatal     error
	closeOnce sync.Once
}

type queued struct {
	data    json.RawMessage
	arrived time.Time
}

// New starts a stream for a run.
func New(api Appender, taskID, runID string, redactor *redact.Redactor, cfg Config) *Stream {
	cfg.applyDefaults()
	sendCtx, cancel := context.WithCancel(context.Background())
	s := &Stream{
		api: api, taskID: taskID, runID: runID, redactor: redactor, cfg: cfg,
		now:  time.Now,
		wake: make(chan struct{}, 1), done: make(chan struct{}),
		sendCtx: sendCtx, cancelSender: cancel,
	}
	go s.run()
	return s
}

// Emit stamps, redacts and queues an entry. It never blocks on the network.
func (s *Stream) Emit(e acp.Entry) {
	now := s.now()
	e.Stamp(now)
	data := s.encode(e)
	s.mu.Lock()
	if s.closed || s.fatal != nil {
		s.stats.Dropped++
		s.mu.Unlock()
		return
	}
	s.queue = append(s.queue, queued{data: data, arrived: now})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Console is a shorthand for Emit(acp.Console(level, message)).
func (s *Stream) Console(level, message string) { s.Emit(acp.Console(level, message)) }

func (s *Stream) encode(e acp.Entry) json.RawMessage {
	raw, err := json.Marshal(e)
	if err != nil {
		raw, _ = json.Marshal(acp.Console(acp.LevelWarn, fmt.Sprintf("log entry could not be encoded: %v", err)))
	}
	clean := []byte(s.redactor.String(string(raw)))
	if json.Valid(clean) {
		return clean
	}
	// A secret that spans JSON syntax: redact field by field instead.
	e.Notification.Params, _ = s.redactor.Value(e.Notification.Params).(map[string]any)
	raw, _ = json.Marshal(e)
	return raw
}

// Close sends what is queued and stops the stream. It returns when everything
// was sent or ctx ends; entries still unsent then are counted as dropped.
// The returned error is a fatal API answer (401/403/404), if one stopped the stream.
func (s *Stream) Close(ctx context.Context) (Stats, error) {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	})
	select {
	case <-s.done:
	case <-ctx.Done():
		s.cancelSender()
		<-s.done
	}
	s.cancelSender()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Dropped += len(s.queue)
	s.queue = nil
	return s.stats, s.fatal
}

func (s *Stream) run() {
	defer close(s.done)
	for {
		batch, ok := s.nextBatch()
		if !ok {
			return
		}
		s.send(batch)
	}
}

// nextBatch waits until a batch is due and takes it off the queue; ok is false
// once the stream is closed and empty, or the sender was cancelled.
func (s *Stream) nextBatch() ([]json.RawMessage, bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.mu.Lock()
		n, size := s.batchBounds()
		due := s.closed || n == s.cfg.MaxBatchEntries || size >= s.cfg.MaxBatchBytes ||
			(n > 0 && len(s.queue) > n) ||
			(n > 0 && s.now().Sub(s.queue[0].arrived) >= s.cfg.FlushDelay)
		if s.fatal != nil || s.sendCtx.Err() != nil || (s.closed && len(s.queue) == 0) {
			s.mu.Unlock()
			return nil, false
		}
		if due && n > 0 {
			batch := make([]json.RawMessage, n)
			for i := range batch {
				batch[i] = s.queue[i].data
			}
			s.mu.Unlock()
			return batch, true
		}
		var wait time.Duration
		if n > 0 {
			wait = s.cfg.FlushDelay - s.now().Sub(s.queue[0].arrived)
		}
		s.mu.Unlock()

		var timeout <-chan time.Time
		if wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			timeout = timer.C
		}
		select {
		case <-s.wake:
		case <-timeout:
		case <-s.sendCtx.Done():
			return nil, false
		}
	}
}

// batchBounds is how many queued entries the next batch takes and their size.
func (s *Stream) batchBounds() (int, int) {
	n, size := 0, 0
	for _, q := range s.queue {
		if n == s.cfg.MaxBatchEntries || (n > 0 && size+len(q.data) > s.cfg.MaxBatchBytes) {
			break
		}
		n++
		size += len(q.data)
	}
	return n, size
}

// send delivers a batch, retrying transient failures until the stream's
// sender is cancelled; it then removes the batch from the queue.
func (s *Stream) send(batch []json.RawMessage) {
	sent, rejected, err := s.deliver(batch)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Sent += sent
	s.stats.Rejected += rejected
	if err != nil {
		if s.sendCtx.Err() == nil && s.fatal == nil {
			s.fatal = err
		}
		// Leave the batch queued: Close counts it as dropped.
		return
	}
	s.queue = s.queue[len(batch):]
}

func (s *Stream) deliver(batch []json.RawMessage) (sent, rejected int, err error) {
	wait := s.cfg.RetryWait
	for {
		err := s.api.AppendLog(s.sendCtx, s.taskID, s.runID, batch)
		if err == nil {
			return len(batch), 0, nil
		}
		var apiErr *tasksapi.APIError
		if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusBadRequest {
			return s.isolateRejected(batch, apiErr)
		}
		if !tasksapi.IsRetryable(err) {
			return 0, 0, fmt.Errorf("append log entries: %w", err)
		}
		jittered := wait/2 + rand.N(wait/2+1)
		select {
		case <-time.After(jittered):
		case <-s.sendCtx.Done():
			return 0, 0, s.sendCtx.Err()
		}
		wait = min(wait*2, s.cfg.RetryMaxWait)
	}
}

// isolateRejected splits a refused batch until the bad entries stand alone,
// sends the rest, and replaces each bad entry with a console entry saying so.
func (s *Stream) isolateRejected(batch []json.RawMessage, cause *tasksapi.APIError) (sent, rejected int, err error) {
	if len(batch) == 1 {
		var id struct {
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(batch[0], &id)
		note := acp.Console(acp.LevelWarn, fmt.Sprintf("log entry %s was rejected by the Tasks API: %s", id.EventID, cause.Detail))
		note.Stamp(s.now())
		raw, _ := json.Marshal(note)
		n, _, err := s.deliver([]json.RawMessage{raw})
		if err != nil {
			return 0, 1, err
		}
		return n, 1, nil
	}
	half := len(batch) / 2
	for _, part := range [][]json.RawMessage{batch[:half], batch[half:]} {
		n, r, err := s.deliver(part)
		sent += n
		rejected += r
		if err != nil {
			return sent, rejected, err
		}
	}
	return sent, rejected, nil
}
