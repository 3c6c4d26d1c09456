package wire

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"
)

const (
	// DefaultMaxPending is the default number of bytes that may wait for the
	// active flush before WriteFrame blocks.
	DefaultMaxPending = 4 << 20
	// DefaultWriteTimeout bounds each Write on a connection with a write
	// deadline (net.Conn and anything else with SetWriteDeadline): a Write
	// blocked for longer fails (after at most 1.5 times it).
	DefaultWriteTimeout = 10 * time.Second

	// flushRounds is how many batches a caller writes as the flusher before
	// it hands the role to a new goroutine, so that no caller is held for
	// long by other goroutines' traffic.
	flushRounds = 8
	// retainLimit is the largest buffer kept for good. Larger buffers (grown
	// by bursts of traffic or big frames, and bounded by back-pressure) are
	// kept while batches that large keep coming, and dropped at the end of a
	// flush once none has come for retainFor, so a connection that calms
	// down does not pin them (and a busy one does not reallocate them).
	retainLimit = 256 << 10
	retainFor   = time.Second // Writer.retainFor; tests shorten it
	// holdLimit is how many pending bytes holds may keep back: past it,
	// WriteFrame flushes even while holds are outstanding.
	holdLimit = 64 << 10
	// DefaultBatch is how many frames may gather while a flusher yields
	// before the goroutine that appends the last of them writes them (see
	// WithBatch), when the process runs goroutines on more than one core.
	DefaultBatch = 10
)

// WriterOption configures a Writer.
type WriterOption func(*Writer)

// WithMaxPending sets how many bytes may wait for the active flush before
// WriteFrame blocks (DefaultMaxPending when n <= 0).
func WithMaxPending(n int) WriterOption {
	return func(w *Writer) {
		if n > 0 {
			w.maxPending = n
		}
	}
}

// WithBatch sets how many frames may gather while a flusher yields (so
// that the goroutines runnable on its core append first) before the
// goroutine appending the n-th takes the flush over and writes them at
// once; n <= 0 lets the flusher gather them all. The default is
// DefaultBatch when GOMAXPROCS is above 1, and no limit with one: on one
// core a yielding flusher waits only for goroutines that are about to
// append, and an early write would only make more, smaller ones; on more,
// it waits for every goroutine queued on its core while goroutines on the
// others append too, and the peer (a responder waiting for requests) sits
// idle meanwhile. The cost is more, smaller writes: worth it while there
// is CPU time to spare for them. Measured with go run ./bench, old and new
// side by side: with 64 requests in flight on two cores, a batch of 10 gave
// 10 % more requests a second than none (row 1c, nine rounds of ten); with
// the 64 spread over three responder processes, so that four busy
// processes share the two cores (row 2), 7 % fewer.
func WithBatch(n int) WriterOption {
	return func(w *Writer) { w.batch = max(n, 0) }
}

// WithWriteTimeout bounds each Write when the underlying writer has
// SetWriteDeadline: a Write blocked for longer than d fails (after at most
// 1.5 d; see Writer.write). d <= 0 sets no deadline.
func WithWriteTimeout(d time.Duration) WriterOption {
	return func(w *Writer) { w.timeout = d }
}

// epoch is the origin of Writer.dlAt.
var epoch = time.Now()

type writeDeadliner interface {
	SetWriteDeadline(time.Time) error
}

// Writer writes frames to a byte stream from any number of goroutines,
// batching concurrent frames into single Write calls.
//
// It uses flat combining rather than a dedicated goroutine: WriteFrame
// appends the encoded frame to a pending buffer under a mutex; if no flush is
// in progress, the caller becomes the flusher and writes the pending bytes
// with one Write call, again and again while other goroutines append
// meanwhile (after flushRounds batches it hands the role to a new goroutine).
// Callers that arrive during a flush only append and return: their bytes go
// out with the next batch without further calls. A lone frame is therefore
// written at once by its caller, and many small frames under load share one
// syscall. Before its first write the flusher yields once, so that the
// goroutines runnable on its core append first; on several cores, the
// goroutine that brings the frames waiting to a batch (WithBatch) takes the
// flush over instead of waiting for it. Two buffers are swapped back and
// forth, so steady state does not allocate.
//
// Hold and Release let a goroutine that is about to write say so: while
// holds are outstanding, frames wait in the buffer (up to holdLimit bytes)
// and the last Release has them all written at once, by a new goroutine.
// warren's responder holds a connection for each request that came in on it
// and that a worker is about to take, until the worker starts it. The
// flusher the last Release starts runs once that worker blocks (or on
// another core), so the replies to a burst of requests, the last one's
// included, share one write.
type Writer struct {
	w          io.Writer
	dl         writeDeadliner // w's SetWriteDeadline, if it has one
	max        int
	maxPending int
	timeout    time.Duration
	retainFor  time.Duration
	dlAt       time.Duration // the write deadline set last, as time.Since(epoch) (0: none); only the flusher uses it

	batch int // see WithBatch; 0: no limit

	mu       sync.Mutex
	pending  []byte // frames not yet handed to w
	npending int    // frames in pending
	spare    []byte // the other buffer, when not being written
	flushing bool   // a goroutine is the flusher
	yielding bool   // the flusher yields before writing (see WriteFrame)
	turn     uint64 // counts flushes taken over from a yielding flusher
	holds    int    // Hold calls not yet Released
	closed   bool
	werr     error         // first write error, wrapping ErrClosed
	wake     chan struct{} // closed on progress when someone waits; nil otherwise
	bigAt    time.Time     // when the last batch over retainLimit was taken
	swaps    uint64        // batches taken from pending
	done     uint64        // batches whose Write returned
	frames   uint64
	writes   uint64
	yields   uint64 // flushers that yielded before writing (tests read it)
}

// NewWriter returns a Writer of frames of at most max bytes after the length
// prefix (DefaultMaxFrame when max <= 0) to w. Options set the back-pressure
// threshold (WithMaxPending, default 4 MiB) and the per-Write deadline
// (WithWriteTimeout, default 10 s). The Writer owns w's write deadline:
// nothing else may set it once the Writer writes (the Writer does not set it
// again for every Write, see write).
func NewWriter(w io.Writer, max int, opts ...WriterOption) *Writer {
	wr := &Writer{w: w, max: normMax(max), maxPending: DefaultMaxPending, timeout: DefaultWriteTimeout, retainFor: retainFor}
	if runtime.GOMAXPROCS(0) > 1 {
		wr.batch = DefaultBatch
	}
	wr.dl, _ = w.(writeDeadliner)
	for _, o := range opts {
		o(wr)
	}
	return wr
}

// WriteFrame encodes one frame and queues it for writing. When it returns
// nil the frame has been written, or will be by the active flusher without
// further calls.
//
// A frame larger than the limit fails with ErrFrameTooLarge and leaves the
// Writer usable. When more than the back-pressure threshold is already
// pending, WriteFrame waits for the flusher to take it, or returns ctx.Err()
// when ctx ends first (ctx is consulted only then). A caller that becomes
// the flusher may spend up to 1.5 times the write timeout in each Write, whatever
// ctx says, since the batch holds other callers' frames too. After a write
// error or Close every call fails with an error wrapping ErrClosed (and the
// write error).
func (w *Writer) WriteFrame(ctx context.Context, kind Kind, h *Header, payload []byte) error {
	return w.writeFrame(ctx, kind, h, payload, true)
}

// WriteFrameNow is WriteFrame for a caller that knows no other frame is on
// its way (a requester with one request in flight, a responder with one
// request to answer): when it becomes the flusher it writes at once,
// without first yielding to goroutines that would append to the batch. The
// yield, with nothing else to run, still costs a pass through the
// scheduler, which wakes an idle core's thread to look for work.
func (w *Writer) WriteFrameNow(ctx context.Context, kind Kind, h *Header, payload []byte) error {
	return w.writeFrame(ctx, kind, h, payload, false)
}

func (w *Writer) writeFrame(ctx context.Context, kind Kind, h *Header, payload []byte, yield bool) error {
	w.mu.Lock()
	for {
		if err := w.errLocked(); err != nil {
			w.mu.Unlock()
			return err
		}
		if len(w.pending) < w.maxPending {
			break
		}
		if !w.flushing {
			// Held back by holds (past a threshold set below holdLimit):
			// write it first.
			w.flushing = true
			if err := w.flushLocked(flushRounds); err != nil {
				return err
			}
			w.mu.Lock()
			continue
		}
		// A flusher is active, so waiting here always ends with progress
		// or a write error.
		ch := w.waitLocked()
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		w.mu.Lock()
	}
	buf, err := AppendFrame(w.pending, kind, h, payload, w.max)
	if err != nil {
		w.mu.Unlock()
		return err
	}
	w.pending = buf
	w.npending++
	w.frames++
	if w.flushing {
		if w.yielding && w.batch > 0 && w.npending >= w.batch {
			// The flusher still yields, and goroutines on other cores have
			// filled a batch meanwhile: write it now (the flusher leaves
			// when it resumes).
			w.yielding = false
			w.turn++
			return w.flushLocked(flushRounds)
		}
		w.mu.Unlock()
		return nil
	}
	if w.holds > 0 && len(w.pending) < holdLimit {
		w.mu.Unlock()
		return nil // the last Release has it written
	}
	if !yield {
		w.flushing = true
		return w.flushLocked(flushRounds)
	}
	w.flushing, w.yielding = true, true
	w.yields++
	turn := w.turn
	// Let goroutines already runnable on this P (handlers replying, callers
	// sending) append their frames first, so they share this write: under
	// load this turns one syscall per frame into one per batch (3x the
	// throughput at 64 requests in flight), and alone it costs well under a
	// microsecond.
	w.mu.Unlock()
	runtime.Gosched()
	w.mu.Lock()
	return w.endYieldLocked(turn)
}

// endYieldLocked is what a flusher does once it has yielded: it writes,
// unless another goroutine took the flush over meanwhile (turn changed).
// It is called with w.mu held and returns with it released.
func (w *Writer) endYieldLocked(turn uint64) error {
	if !w.yielding || w.turn != turn {
		w.mu.Unlock()
		return nil // taken over: this frame is written, or will be
	}
	w.yielding = false
	return w.flushLocked(flushRounds)
}

// Hold defers the writing of frames queued by WriteFrame until the matching
// Release (or until holdLimit bytes wait). Every Hold must be matched by
// exactly one Release: it is for a goroutine that has been woken to answer
// and will run at once, so that the answers of a burst share one write.
func (w *Writer) Hold() {
	w.mu.Lock()
	w.holds++
	w.mu.Unlock()
}

// Release ends one Hold. It never blocks: the last one leaves what waits
// to a new goroutine, which writes it as the flusher. That goroutine is
// queued to run next on this core, so it runs once the caller blocks: a
// worker that releases its hold as it starts the last request of a burst
// still appends that request's reply to the same write (writing at once
// would send that reply alone, in a second write), and a slow handler
// holds nothing back, since the flush runs as soon as it waits.
func (w *Writer) Release() {
	w.mu.Lock()
	w.holds--
	if w.holds < 0 {
		w.mu.Unlock()
		panic("wire: Writer.Release without Hold")
	}
	if w.holds == 0 {
		w.flushHeldLocked()
	}
	w.mu.Unlock()
}

// flushHeldLocked starts a background flush of frames that wait with no
// flusher (held back by holds), if there are any.
func (w *Writer) flushHeldLocked() {
	if !w.flushing && len(w.pending) > 0 {
		w.flushing = true
		go w.flushBackground()
	}
}

// Post queues one frame like WriteFrame but never blocks: it does not wait
// for back-pressure and never makes the caller the flusher (a new goroutine
// flushes when none is active). It is for small control replies sent from a
// connection's read loop, which must not stall on a peer that is not
// reading.
func (w *Writer) Post(kind Kind, h *Header, payload []byte) error {
	w.mu.Lock()
	if err := w.errLocked(); err != nil {
		w.mu.Unlock()
		return err
	}
	buf, err := AppendFrame(w.pending, kind, h, payload, w.max)
	if err != nil {
		w.mu.Unlock()
		return err
	}
	w.pending = buf
	w.npending++
	w.frames++
	if !w.flushing {
		w.flushing = true
		go w.flushBackground()
	}
	w.mu.Unlock()
	return nil
}

// flushLocked writes pending batches until none is left, a write fails, or
// rounds batches were written (then a new goroutine takes over; rounds < 0
// means no limit). It is called with w.mu held and w.flushing set, and
// returns with w.mu released. It returns the write error, if one happened.
func (w *Writer) flushLocked(rounds int) error {
	var err error
	for i := 0; ; i++ {
		if len(w.pending) == 0 || w.werr != nil {
			w.pending, w.npending = w.pending[:0], 0 // after an error the rest is dropped
			if !w.bigAt.IsZero() && time.Since(w.bigAt) > w.retainFor {
				w.bigAt = time.Time{}
				if cap(w.pending) > retainLimit {
					w.pending = nil
				}
				if cap(w.spare) > retainLimit {
					w.spare = nil
				}
			}
			w.flushing = false
			w.notifyLocked()
			w.mu.Unlock()
			return err
		}
		if i == rounds {
			w.mu.Unlock()
			go w.flushBackground()
			return nil
		}
		buf := w.pending
		if len(buf) > retainLimit {
			w.bigAt = time.Now()
		}
		w.pending, w.spare = w.spare[:0], nil
		w.npending = 0
		w.swaps++
		w.notifyLocked()
		w.mu.Unlock()

		werr := w.write(buf)

		w.mu.Lock()
		w.writes++
		w.done++
		w.spare = buf[:0]
		if werr != nil {
			err = fmt.Errorf("%w: %w", ErrClosed, werr)
			if w.werr == nil {
				w.werr = err
			}
		}
	}
}

func (w *Writer) flushBackground() {
	w.mu.Lock()
	w.flushLocked(-1)
}

// write hands one batch to the underlying writer, under a write deadline
// when it supports one. The deadline is not set for every Write: setting
// one moves a runtime timer, under two locks, and cost a round trip of one
// request at a time about a tenth of its instructions. It is set 1.5
// times the timeout ahead, and again only when less than the timeout is
// left, so that a Write may block for between the timeout and 1.5 times it
// before it fails. Only the flusher calls write, one at a time.
func (w *Writer) write(b []byte) error {
	if w.dl != nil && w.timeout > 0 {
		now := time.Since(epoch)
		if w.dlAt-now < w.timeout {
			w.dlAt = now + w.timeout + w.timeout/2
			// An error here (a closed connection) shows up in Write too.
			_ = w.dl.SetWriteDeadline(epoch.Add(w.dlAt))
		}
	}
	n, err := w.w.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	return err
}

// waitLocked returns a channel closed at the next progress of the flusher
// (or Close).
func (w *Writer) waitLocked() chan struct{} {
	if w.wake == nil {
		w.wake = make(chan struct{})
	}
	return w.wake
}

func (w *Writer) notifyLocked() {
	if w.wake != nil {
		close(w.wake)
		w.wake = nil
	}
}

func (w *Writer) errLocked() error {
	if w.werr != nil {
		return w.werr
	}
	if w.closed {
		return ErrClosed
	}
	return nil
}

// Flush waits until every frame queued before the call has been handed to
// the underlying writer, or ctx ends. It returns the write error that broke
// the Writer, if any (frames queued before Close are still written, so a
// Writer that is only closed flushes cleanly).
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	w.flushHeldLocked()
	target := w.swaps
	if len(w.pending) > 0 {
		target++ // the batch that will take what is pending now
	}
	for w.done < target && w.werr == nil {
		ch := w.waitLocked()
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		w.mu.Lock()
	}
	err := w.werr
	w.mu.Unlock()
	return err
}

// Close marks the Writer closed: later WriteFrame calls fail with ErrClosed.
// Frames already queued are still written by the active flusher. Close does
// not close the underlying writer.
func (w *Writer) Close() error {
	w.mu.Lock()
	w.closed = true
	w.flushHeldLocked() // queued, so written
	w.notifyLocked()
	w.mu.Unlock()
	return nil
}

// Err returns the error that broke the Writer (wrapping ErrClosed and the
// write error), ErrClosed after Close, or nil.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.errLocked()
}

// Stats returns how many frames were queued and how many Write calls were
// made; frames/writes is the batching factor.
func (w *Writer) Stats() (frames, writes uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.frames, w.writes
}
