package process

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// fifo is a byte queue backed by a file: the child's output goes in as fast
// as the child writes it, and comes out as fast as its lines are handled.
// Memory stays flat however much the child writes; the file is started over
// whenever the reader has caught up and it has grown past resetBytes.
type fifo struct {
	mu      sync.Mutex
	more    *sync.Cond
	file    *os.File
	r, w    int64
	writing bool
	closed  bool
}

// resetBytes is how large the buffer file may grow before a reader that has
// caught up truncates it; truncating after every read would cost a syscall
// per chunk.
const resetBytes = 8 << 20

func newFIFO(dir string) (*fifo, error) {
	f, err := os.CreateTemp(dir, "output-*.buf")
	if err != nil {
		return nil, fmt.Errorf("create output buffer in %s: %w", dir, err)
	}
	q := &fifo{file: f}
	q.more = sync.NewCond(&q.mu)
	return q, nil
}

// Write appends p. There is one writer; its region of the file is its own
// while it writes, so the I/O happens outside the lock.
func (q *fifo) Write(p []byte) (int, error) {
	q.mu.Lock()
	off := q.w
	q.writing = true
	q.mu.Unlock()

	n, err := q.file.WriteAt(p, off)

	q.mu.Lock()
	q.w += int64(n)
	q.writing = false
	q.more.Signal()
	q.mu.Unlock()
	return n, err
}

// CloseWrite says no more will be written; Read returns io.EOF once drained.
func (q *fifo) CloseWrite() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.more.Broadcast()
}

// Read blocks until there is data or the writer is done. There is one reader.
func (q *fifo) Read(p []byte) (int, error) {
	q.mu.Lock()
	for q.r == q.w && !q.closed {
		q.more.Wait()
	}
	if q.r == q.w {
		q.mu.Unlock()
		return 0, io.EOF
	}
	off, avail := q.r, q.w-q.r
	q.mu.Unlock()

	n, err := q.file.ReadAt(p[:min(int64(len(p)), avail)], off)
	if err == io.EOF && n > 0 {
		err = nil
	}

	q.mu.Lock()
	q.r += int64(n)
	if q.r == q.w && q.w > resetBytes && !q.writing {
		if q.file.Truncate(0) == nil {
			q.r, q.w = 0, 0
		}
	}
	q.mu.Unlock()
	return n, err
}

// Remove deletes the buffer file.
func (q *fifo) Remove() {
	q.file.Close()
	os.Remove(q.file.Name())
}
