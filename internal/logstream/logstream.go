// Package logstream ships a run's log entries to append_log: in production
// order, in batches, one request at a time, without ever blocking the producer
// on the network. Entries wait in memory up to a bound, then in a spill file.
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

// Config bounds batches, memory, size and retries; zero fields take the defaults below.
type Config struct {
	// A batch is sent when it holds MaxBatchEntries or MaxBatchBytes, or
	// FlushDelay after its first entry arrived, whichever comes first.
	MaxBatchEntries int
	MaxBatchBytes   int
	FlushDelay      time.Duration
	// RetryWait is the first backoff after a failed append; it doubles up to
	// RetryMaxWait, and a longer Retry-After of the API's is waited instead.
	RetryWait    time.Duration
	RetryMaxWait time.Duration
	// MemoryBytes is how much may wait in memory; the rest waits in a file in SpillDir.
	MemoryBytes int
	SpillDir    string
	// MaxBytes caps what one stream sends; past it entries are counted, not sent.
	MaxBytes int64
	// EventIDScope, when set, derives each entry's event_id from it and the
	// entry's place in the stream (acp.EventID): a step that writes its
	// entries again, on a retried attempt, writes them under the same IDs,
	// so a reader keeps one copy. Empty gives each entry a random ID.
	EventIDScope string
}

// Defaults, measured in docs/benchmarks.md. The hosted runner waits for 500 ms
// of quiet (5 s at most); 200 ms after the first entry of a batch keeps the UI
// live, while a busy agent fills batches by count long before that.
const (
	DefaultMaxBatchEntries = 500
	DefaultMaxBatchBytes   = 1 << 20
	DefaultFlushDelay      = 200 * time.Millisecond
	DefaultRetryWait       = 500 * time.Millisecond
	DefaultRetryMaxWait    = 15 * time.Second
	DefaultMemoryBytes     = 8 << 20
	DefaultMaxBytes        = 100 << 20
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
	if c.MemoryBytes <= 0 {
		c.MemoryBytes = DefaultMemoryBytes
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
}

// Stats is what a stream did.
type Stats struct {
	Emitted  int
	Sent     int
	Rejected int // entries the API refused one by one (400)
	Dropped  int // entries never sent: unsent at the close deadline, or after a fatal answer
	// CutEntries and CutBytes are what came past MaxBytes: counted, not sent.
	CutEntries   int
	CutBytes     int64
	SpilledBytes int64
	Requests     int
	// Redacted counts the entries that had a secret masked.
	Redacted int
}

// Stream is the log of one run, for the life of one activity.
type Stream struct {
	api      Appender
	taskID   string
	runID    string
	redactor *redact.Redactor
	cfg      Config
	now      func() time.Time
	wake     chan struct{}
	// emitMu orders producers: an entry's number, timestamp and place in the
	// queue are taken together, so IDs and timestamps follow the log's order.
	emitMu       sync.Mutex
	seq          int
	done         chan struct{}
	sendCtx      context.Context
	cancelSender context.CancelFunc

	mu        sync.Mutex
	queue     *queue
	oldest    time.Time // when the oldest queued entry arrived
	bytes     int64     // accepted so far, against MaxBytes
	closed    bool
	stats     Stats
	fatal     error
	closeOnce sync.Once
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
		queue: newQueue(cfg.MemoryBytes, cfg.SpillDir),
	}
	go s.run()
	return s
}

// Emit stamps, redacts and queues an entry. It never waits for the network.
func (s *Stream) Emit(e acp.Entry) {
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	now := s.now()
	s.stampID(&e)
	e.Stamp(now)
	data, redacted := s.encode(e)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Emitted++
	if redacted {
		s.stats.Redacted++
	}
	if s.closed || s.fatal != nil {
		s.stats.Dropped++
		return
	}
	if s.bytes+int64(len(data)) > s.cfg.MaxBytes {
		s.stats.CutEntries++
		s.stats.CutBytes += int64(len(data))
		return
	}
	s.bytes += int64(len(data))
	s.enqueue(data, now)
}

// stampID gives e the next number of the stream, and the event_id derived
// from it when the stream has a scope; the caller holds emitMu.
func (s *Stream) stampID(e *acp.Entry) {
	if e.EventID == "" && s.cfg.EventIDScope != "" {
		e.EventID = acp.EventID(s.cfg.EventIDScope, s.seq)
	}
	s.seq++
}

// enqueue adds encoded data; the caller holds mu.
func (s *Stream) enqueue(data []byte, now time.Time) {
	first := s.queue.len() == 0
	if first {
		s.oldest = now
	}
	// A failing spill file keeps the entry in memory; nothing is lost.
	_ = s.queue.push(data)
	// The sender needs waking only to start a batch's timer or to send a full one.
	if first || s.queue.len()%s.cfg.MaxBatchEntries == 0 {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Console is a shorthand for Emit(acp.Console(level, message)).
func (s *Stream) Console(level, message string) { s.Emit(acp.Console(level, message)) }

// encode turns an entry into JSON with every secret masked. Masking the
// encoded text reaches every value, whatever its type; the redactor knows
// each secret's JSON-escaped forms too.
func (s *Stream) encode(e acp.Entry) (data []byte, redacted bool) {
	raw, err := json.Marshal(e)
	if err != nil {
		raw, _ = json.Marshal(acp.Console(acp.LevelWarn, fmt.Sprintf("log entry could not be encoded: %v", err)))
	}
	text := string(raw)
	clean := s.redactor.String(text)
	if clean == text {
		return raw, false
	}
	if json.Valid([]byte(clean)) {
		return []byte(clean), true
	}
	// A secret that spans JSON syntax: mask value by value instead.
	e.Notification.Params, _ = s.redactor.Value(e.Notification.Params).(map[string]any)
	raw, _ = json.Marshal(e)
	return raw, true
}

// Close sends what is queued and stops the stream. It returns when everything
// was sent or ctx ends; entries still unsent then are counted as dropped.
// The returned error is a fatal API answer (401/403/404), if one stopped the stream.
func (s *Stream) Close(ctx context.Context) (Stats, error) {
	s.closeOnce.Do(func() {
		s.emitMu.Lock()
		defer s.emitMu.Unlock()
		s.mu.Lock()
		if s.stats.CutEntries > 0 {
			note := acp.Console(acp.LevelWarn, fmt.Sprintf(
				"log cut: %d entries (%d bytes) past this step's cap of %d bytes were not sent",
				s.stats.CutEntries, s.stats.CutBytes, s.cfg.MaxBytes))
			s.stampID(&note)
			note.Stamp(s.now())
			data, _ := s.encode(note)
			s.enqueue(data, s.now())
		}
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
	s.stats.Dropped += s.queue.len()
	s.stats.SpilledBytes = s.queue.spilledBytes
	s.queue.drop(len(s.queue.mem))
	s.queue.spilled = 0
	s.queue.closeSpill()
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

// nextBatch waits until a batch is due and returns it (still queued); ok is
// false once the stream is closed and empty, failed, or the sender was cancelled.
func (s *Stream) nextBatch() ([]json.RawMessage, bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.mu.Lock()
		if s.fatal != nil || s.sendCtx.Err() != nil || (s.closed && s.queue.len() == 0) {
			s.mu.Unlock()
			return nil, false
		}
		var wait time.Duration
		if n := s.queue.len(); n > 0 {
			entries, size, err := s.queue.first(s.cfg.MaxBatchEntries, s.cfg.MaxBatchBytes)
			if err != nil {
				// The spill file can't be read back: what it holds is lost.
				s.fatal = fmt.Errorf("log entries waiting on disk: %w", err)
				s.mu.Unlock()
				return nil, false
			}
			full := len(entries) == s.cfg.MaxBatchEntries || size >= s.cfg.MaxBatchBytes || n > len(entries)
			wait = s.cfg.FlushDelay - s.now().Sub(s.oldest)
			if s.closed || full || wait <= 0 {
				batch := make([]json.RawMessage, len(entries))
				for i, e := range entries {
					batch[i] = e
				}
				s.mu.Unlock()
				return batch, true
			}
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

// send delivers a batch, retrying transient failures until the sender is
// cancelled, and then takes it off the queue. This loop is the one level of
// retries of an append: the client it is given sends each call once (the
// worker's does), or each failed try here would cost the client's retries too.
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
	s.queue.drop(len(batch))
	// Entries that came in during this request start a new batch now, so a
	// steady trickle is sent every FlushDelay, not one request per entry.
	s.oldest = s.now()
}

func (s *Stream) deliver(batch []json.RawMessage) (sent, rejected int, err error) {
	wait := s.cfg.RetryWait
	for {
		s.mu.Lock()
		s.stats.Requests++
		s.mu.Unlock()
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
		// Worst case, for as long as the failures last: one request per
		// wait, each wait RetryWait doubling to RetryMaxWait (0.5 s to 15 s
		// by default, jittered down to half) or the API's Retry-After when
		// longer (at most a minute); 6 requests in the first 8 s, then at
		// most 8 a minute. The sender stops at the step's flush deadline
		// (Close), what it could not send counted as dropped.
		pause := max(wait/2+rand.N(wait/2+1), tasksapi.RetryAfter(err))
		select {
		case <-time.After(pause):
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
		if s.cfg.EventIDScope != "" && id.EventID != "" {
			// The note stands in for the rejected entry: a retried step's
			// copy of it gets the same ID.
			note.EventID = acp.EventID(s.cfg.EventIDScope+"/rejected/"+id.EventID, 0)
		}
		note.Stamp(s.now())
		data, _ := s.encode(note)
		n, _, err := s.deliver([]json.RawMessage{data})
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
