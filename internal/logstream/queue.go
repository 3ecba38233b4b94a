package logstream

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// queue holds encoded entries in order: the oldest in memory, and once memory
// holds memLimit bytes, the rest appended to a spill file, read back in order
// as memory drains. It is not safe for concurrent use.
type queue struct {
	memLimit int
	dir      string

	mem      [][]byte
	memBytes int

	file    *os.File
	writer  *bufio.Writer
	reader  *bufio.Reader
	spilled int // entries in the file not yet read back
	// spilledBytes is the total ever written to the spill file (a figure for stats).
	spilledBytes int64
	spillErr     error
}

func newQueue(memLimit int, dir string) *queue {
	return &queue{memLimit: memLimit, dir: dir}
}

// push appends an entry. Once anything is in the spill file, every later
// entry goes there too, so the order holds.
func (q *queue) push(data []byte) error {
	if q.file == nil && q.memBytes+len(data) <= q.memLimit {
		q.mem = append(q.mem, data)
		q.memBytes += len(data)
		return nil
	}
	if q.file == nil {
		if err := q.openSpill(); err != nil {
			// Without a file the entry stays in memory: better unbounded
			// than lost.
			q.mem = append(q.mem, data)
			q.memBytes += len(data)
			return err
		}
	}
	if _, err := q.writer.Write(data); err != nil {
		return q.spillFailed(err)
	}
	if err := q.writer.WriteByte('\n'); err != nil {
		return q.spillFailed(err)
	}
	q.spilled++
	q.spilledBytes += int64(len(data)) + 1
	return nil
}

func (q *queue) openSpill() error {
	if q.spillErr != nil {
		return q.spillErr
	}
	if q.dir == "" {
		q.spillErr = errors.New("no spill directory configured")
		return q.spillErr
	}
	if err := os.MkdirAll(q.dir, 0o700); err != nil {
		q.spillErr = fmt.Errorf("create log spill dir: %w", err)
		return q.spillErr
	}
	f, err := os.CreateTemp(q.dir, "log-*.jsonl")
	if err != nil {
		q.spillErr = fmt.Errorf("create log spill file: %w", err)
		return q.spillErr
	}
	q.file = f
	q.writer = bufio.NewWriterSize(f, 64<<10)
	q.reader = bufio.NewReaderSize(io.NewSectionReader(f, 0, 1<<62), 64<<10)
	return nil
}

func (q *queue) spillFailed(err error) error {
	q.spillErr = fmt.Errorf("write log spill file: %w", err)
	return q.spillErr
}

// len is the number of entries queued.
func (q *queue) len() int { return len(q.mem) + q.spilled }

// first returns up to maxEntries oldest entries whose sizes add up to at most
// maxBytes (always at least one), reading spilled entries back as needed.
func (q *queue) first(maxEntries, maxBytes int) ([][]byte, int, error) {
	if err := q.refill(); err != nil {
		return nil, 0, err
	}
	n, size := 0, 0
	for _, e := range q.mem {
		if n == maxEntries || (n > 0 && size+len(e) > maxBytes) {
			break
		}
		n++
		size += len(e)
	}
	return q.mem[:n], size, nil
}

// drop removes the n oldest entries.
func (q *queue) drop(n int) {
	for _, e := range q.mem[:n] {
		q.memBytes -= len(e)
	}
	clear(q.mem[:n])
	q.mem = q.mem[n:]
}

// refill moves spilled entries back into memory while there is room.
func (q *queue) refill() error {
	if q.file == nil || q.memBytes > q.memLimit/2 {
		return nil
	}
	if err := q.writer.Flush(); err != nil {
		return q.spillFailed(err)
	}
	for q.spilled > 0 && q.memBytes < q.memLimit {
		line, err := q.readLine()
		if err != nil {
			return fmt.Errorf("read log spill file: %w", err)
		}
		q.mem = append(q.mem, line)
		q.memBytes += len(line)
		q.spilled--
	}
	if q.spilled == 0 {
		q.closeSpill()
	}
	return nil
}

// readLine reads the next spilled entry. A bufio.Reader that met the end of
// the file once reports it again before it looks for data written since, so
// an EOF is retried: every line counted in spilled has been flushed whole.
func (q *queue) readLine() ([]byte, error) {
	var line []byte
	for range 3 {
		part, err := q.reader.ReadBytes('\n')
		line = append(line, part...)
		if err == nil {
			return bytes.TrimSuffix(line, []byte{'\n'}), nil
		}
		if !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%d entries are missing from the file", q.spilled)
}

// closeSpill removes the spill file; it is the queue's alone.
func (q *queue) closeSpill() {
	if q.file != nil {
		q.file.Close()
		os.Remove(q.file.Name())
		q.file, q.writer, q.reader = nil, nil, nil
	}
}

// spilling reports whether entries are in a spill file now.
func (q *queue) spilling() bool { return q.file != nil }
