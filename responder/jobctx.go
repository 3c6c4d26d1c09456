package responder

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// jobCtx is the context a handler gets. It is cancelled when the caller
// gives up, when the caller's node goes away, when the responder closes, and
// when the handler returns; it ends with context.DeadlineExceeded at the
// caller's deadline.
//
// It is built for the common case of a handler that never looks at its
// context: it lives inside the job (no allocation of its own), ends without
// a lock, makes its Done channel only when asked, and its ctxWatch (deadline
// timer and AfterFunc list) only for AfterFunc, or for Done on a context
// with a deadline. Err checks the deadline against the clock, so a handler
// that polls Err sees it pass without any timer. Contexts derived from it
// (context.WithTimeout and the like) hook in through AfterFunc, as they do
// on the standard library's contexts, with no goroutine per derived context.
type jobCtx struct {
	deadline time.Time // zero: none

	// state is ctxLive until the context ends, then the code of its error;
	// Err reads it without a lock. watched is set, under mu, by the first
	// Done or AfterFunc: only then does cancel take mu, to close done and run
	// the functions. Both are atomics (sequentially consistent), so a Done
	// or AfterFunc racing a cancel either sees the context ended or is seen
	// by cancel.
	state   atomic.Uint32
	watched atomic.Bool

	mu   sync.Mutex
	done chan struct{} // made on first Done (closedChan if c had ended)
	more *ctxWatch     // made on first AfterFunc, or when the deadline timer is armed
}

// closedChan is the Done channel of a jobCtx that had ended when Done was
// first called.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// The values of jobCtx.state.
const (
	ctxLive uint32 = iota
	ctxCanceled
	ctxExpired
)

func ctxErr(state uint32) error {
	switch state {
	case ctxLive:
		return nil
	case ctxExpired:
		return context.DeadlineExceeded
	}
	return context.Canceled
}

// ctxWatch is the part of a jobCtx that only handlers that watch their
// context need: kept apart, it costs the others nothing (a job is allocated
// for every request).
type ctxWatch struct {
	timer  *time.Timer
	funcs  []afterFunc
	nextID uint64
}

// watchLocked returns c.more, made if needed. c.mu is held.
func (c *jobCtx) watchLocked() *ctxWatch {
	if c.more == nil {
		c.more = &ctxWatch{}
	}
	return c.more
}

type afterFunc struct {
	id uint64
	f  func()
}

var _ context.Context = (*jobCtx)(nil)

func (c *jobCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *jobCtx) Value(any) any { return nil }

func (c *jobCtx) Err() error {
	if st := c.state.Load(); st != ctxLive {
		return ctxErr(st)
	}
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		c.cancel(context.DeadlineExceeded)
		return ctxErr(c.state.Load())
	}
	return nil
}

func (c *jobCtx) Done() <-chan struct{} {
	c.mu.Lock()
	c.watched.Store(true)
	if c.done == nil {
		if c.state.Load() != ctxLive {
			c.done = closedChan
		} else {
			c.done = make(chan struct{})
		}
	}
	done := c.done
	expired := c.armLocked()
	c.mu.Unlock()
	if expired {
		c.cancel(context.DeadlineExceeded)
	}
	return done
}

// AfterFunc arranges for f to run once c is done (on the goroutine that
// cancels c, or a new one when c is done already), and returns a function that unregisters f, reporting whether it
// did so before f ran. The context package finds this method on a parent
// context and uses it for every context derived from c.
func (c *jobCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	c.watched.Store(true)
	if c.state.Load() != ctxLive {
		c.mu.Unlock()
		// Not on this goroutine: the context package calls AfterFunc with
		// the derived context's lock held, and f takes it.
		go f()
		return func() bool { return false }
	}
	w := c.watchLocked()
	w.nextID++
	id := w.nextID
	w.funcs = append(w.funcs, afterFunc{id, f})
	expired := c.armLocked()
	c.mu.Unlock()
	if expired {
		c.cancel(context.DeadlineExceeded)
	}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, a := range w.funcs {
			if a.id == id {
				w.funcs = append(w.funcs[:i], w.funcs[i+1:]...)
				return true
			}
		}
		return false
	}
}

// armLocked starts the deadline timer if c has a deadline, is not done and
// has none yet. It reports a deadline that has already passed (the caller
// then cancels c, outside the lock). c.mu is held.
func (c *jobCtx) armLocked() (expired bool) {
	if c.deadline.IsZero() || c.state.Load() != ctxLive || (c.more != nil && c.more.timer != nil) {
		return false
	}
	d := time.Until(c.deadline)
	if d <= 0 {
		return true
	}
	c.watchLocked().timer = time.AfterFunc(d, func() { c.cancel(context.DeadlineExceeded) })
	return false
}

// cancel ends c with err, context.Canceled or context.DeadlineExceeded
// (the first call wins), and runs the functions registered with AfterFunc.
// A context nobody watched ends without a lock.
func (c *jobCtx) cancel(err error) {
	st := ctxCanceled
	if err == context.DeadlineExceeded {
		st = ctxExpired
	}
	if !c.state.CompareAndSwap(ctxLive, st) || !c.watched.Load() {
		return
	}
	c.mu.Lock()
	if c.done != nil && c.done != closedChan {
		close(c.done)
	}
	var funcs []afterFunc
	if w := c.more; w != nil {
		if w.timer != nil {
			w.timer.Stop()
		}
		funcs, w.funcs = w.funcs, nil
	}
	c.mu.Unlock()
	for _, a := range funcs {
		a.f()
	}
}
