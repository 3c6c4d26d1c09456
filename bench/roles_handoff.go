package main

// The hand-off roles (handoff-server, handoff-client) are a yardstick: the
// floor of warren's design. A minimal request/response protocol over raw TCP
// with the goroutine hand-offs that design requires and nothing else (no
// msgpack, no routing, no tables): a goroutine per caller, woken through its
// own channel for each reply; a worker per request, never the read loop; and
// batched writes through a combining writer (internal/wire/writer.go without
// holds or back-pressure). A frame is [4-byte big-endian length n][4-byte
// big-endian id][n-4 payload bytes]. The gap between these roles and warren
// is warren's own per-request work.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

const (
	handoffWorkers  = 64       // server: workers per connection
	handoffReadBuf  = 64 << 10 // bufio.Reader size, both sides
	handoffMaxFrame = 16 << 20
)

var errHandoffFrame = errors.New("handoff: bad frame length")

// readHandoffFrame reads one frame and returns its id and a new copy of its
// payload.
func readHandoffFrame(br *bufio.Reader) (uint32, []byte, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 4 || n > handoffMaxFrame {
		return 0, nil, fmt.Errorf("%w: %d", errHandoffFrame, n)
	}
	p := make([]byte, n-4)
	if _, err := io.ReadFull(br, p); err != nil {
		return 0, nil, err
	}
	return binary.BigEndian.Uint32(hdr[4:]), p, nil
}

// combiner writes frames from any number of goroutines, batching concurrent
// ones into single Write calls (flat combining): WriteFrame appends the frame
// to a pending buffer; if no flush is in progress, the caller becomes the
// flusher, yields once so that other runnable goroutines append first, then
// writes pending batches until none is left, swapping two buffers.
type combiner struct {
	c net.Conn

	mu       sync.Mutex
	pending  []byte
	spare    []byte
	flushing bool
	err      error // first write error: every later call fails with it
}

// WriteFrame queues one frame. When it returns nil the frame has been
// written, or will be by the active flusher.
func (w *combiner) WriteFrame(id uint32, payload []byte) error {
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.pending = binary.BigEndian.AppendUint32(w.pending, uint32(4+len(payload)))
	w.pending = binary.BigEndian.AppendUint32(w.pending, id)
	w.pending = append(w.pending, payload...)
	if w.flushing {
		w.mu.Unlock()
		return nil
	}
	w.flushing = true
	w.mu.Unlock()
	runtime.Gosched()
	w.mu.Lock()
	for len(w.pending) > 0 && w.err == nil {
		buf := w.pending
		w.pending, w.spare = w.spare[:0], nil
		w.mu.Unlock()
		_, err := w.c.Write(buf) // a net.Conn writes all or fails
		w.mu.Lock()
		w.spare = buf[:0]
		if err != nil {
			w.err = err
		}
	}
	w.pending = w.pending[:0] // after an error the rest is dropped
	w.flushing = false
	err := w.err
	w.mu.Unlock()
	return err
}

// handoffJob is one request taken off the connection.
type handoffJob struct {
	id      uint32
	payload []byte
}

// jobQueue is the FIFO between a connection's read loop and its workers. A
// push wakes one idle worker unless one is already being woken; a worker
// that takes a job wakes the next if jobs remain, so a burst is spread over
// several workers (as warren's responder does).
type jobQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	jobs   []handoffJob
	head   int  // jobs[head:] wait
	idle   int  // workers waiting in pop
	waking bool // a worker has been signalled and has not woken yet
	closed bool
}

func newJobQueue() *jobQueue {
	q := &jobQueue{}
	q.cond.L = &q.mu
	return q
}

func (q *jobQueue) push(j handoffJob) {
	q.mu.Lock()
	q.jobs = append(q.jobs, j)
	if q.idle > 0 && !q.waking {
		q.waking = true
		q.cond.Signal()
	}
	q.mu.Unlock()
}

// pop waits for a job; it returns false once the queue is closed.
func (q *jobQueue) pop() (handoffJob, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head == len(q.jobs) && !q.closed {
		q.idle++
		q.cond.Wait()
		q.idle--
		q.waking = false
	}
	if q.closed {
		return handoffJob{}, false
	}
	j := q.jobs[q.head]
	q.jobs[q.head] = handoffJob{}
	q.head++
	if q.head == len(q.jobs) {
		q.jobs, q.head = q.jobs[:0], 0
	} else if q.idle > 0 && !q.waking {
		q.waking = true
		q.cond.Signal()
	}
	return j, true
}

// close stops every worker, waiting or not (jobs still queued are dropped).
func (q *jobQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

// handoffServer echoes frames: per connection, a read loop hands each
// request to one of handoffWorkers workers, which writes the reply through
// the connection's combiner.
func handoffServer(ctx context.Context, cfg roleConfig) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	return serveTCP(ctx, cfg.Addr, func(c net.Conn) { wg.Go(func() { handoffConn(ctx, c) }) })
}

func handoffConn(ctx context.Context, c net.Conn) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	q := newJobQueue()
	w := &combiner{c: c}
	var wg sync.WaitGroup
	for range handoffWorkers {
		wg.Go(func() {
			for {
				j, ok := q.pop()
				if !ok {
					return
				}
				if w.WriteFrame(j.id, j.payload) != nil {
					c.Close() // ends the read loop, which closes the queue
					return
				}
			}
		})
	}
	br := bufio.NewReaderSize(c, handoffReadBuf)
	for {
		id, p, err := readHandoffFrame(br)
		if err != nil {
			break
		}
		q.push(handoffJob{id: id, payload: p})
	}
	q.close()
	wg.Wait()
}

// handoffClient runs cfg.Conc callers on one connection, each sending its
// request and waiting on its own channel for the reader to hand it the
// reply; it measures like warrenLoad.
func handoffClient(ctx context.Context, cfg roleConfig) error {
	c, err := dialRetry(ctx, cfg.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	// lctx ends with ctx, at the end of the run, or at the first read or
	// write error; then the connection is closed, which stops the reader.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	context.AfterFunc(lctx, func() { c.Close() })
	var firstErr atomic.Pointer[error]
	fail := func(err error) {
		if lctx.Err() == nil { // not the close that ends the run
			firstErr.CompareAndSwap(nil, &err)
		}
		cancel()
	}

	conc := max(cfg.Conc, 1)
	chans := make([]chan []byte, conc)
	for i := range chans {
		chans[i] = make(chan []byte, 1)
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		br := bufio.NewReaderSize(c, handoffReadBuf)
		for {
			id, p, err := readHandoffFrame(br)
			if err != nil {
				fail(fmt.Errorf("read: %w", err))
				return
			}
			if int(id) >= len(chans) {
				fail(fmt.Errorf("read: reply for unknown caller %d", id))
				return
			}
			select {
			case chans[id] <- p:
			case <-lctx.Done():
				return
			}
		}
	}()
	defer func() { cancel(); <-readerDone }()
	w := &combiner{c: c}
	data := make([]byte, cfg.Payload)

	// First round trip, then the window.
	if err := w.WriteFrame(0, data); err != nil {
		return fmt.Errorf("first request: %w", err)
	}
	select {
	case <-chans[0]:
	case <-lctx.Done():
		if p := firstErr.Load(); p != nil {
			return fmt.Errorf("first request: %w", *p)
		}
		return lctx.Err()
	}
	emit(event{Ev: "first", T: time.Now().UnixNano()})

	err = runCallers(lctx, cfg, conc, func(i int) error {
		if err := w.WriteFrame(uint32(i), data); err != nil {
			fail(fmt.Errorf("write: %w", err))
			return errStopped
		}
		select {
		case <-chans[i]:
			return nil
		case <-lctx.Done():
			return errStopped
		}
	})
	if p := firstErr.Load(); p != nil {
		return fmt.Errorf("request: %w", *p)
	}
	return err
}
