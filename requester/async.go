package requester

import (
	"context"
	"sync"
)

// Pending is a request sent with Go: it completes on its own, with no
// goroutine of the caller waiting for it.
type Pending struct {
	c       call
	r       *Requester
	reply   any
	counted bool // its error was counted in the stats already (set before done closes)

	mu       sync.Mutex
	stop     func() bool        // unregisters the context watch
	cancel   context.CancelFunc // the requester's timeout, if it added one
	released bool

	once sync.Once
	err  error
}

// Go sends a request like Send but returns at once, with a Pending that
// completes when the reply arrives, the request fails, or ctx ends (or the
// requester's timeout passes, when ctx has no deadline). Routing, holding,
// retries and errors are those of Send; the reply is decoded into reply (a
// pointer, or nil to discard it) by Wait.
//
// A call costs no goroutine while it waits, so a process can hold many
// requests while no responder exists: each costs its payload and a few
// hundred bytes (Send costs, in addition, the stack of the goroutine blocked
// in it, a few kilobytes).
func (r *Requester) Go(ctx context.Context, typ string, req, reply any, opts ...CallOption) *Pending {
	cl := &Pending{r: r, reply: reply}
	c := &cl.c
	c.done = make(chan struct{}) // closed: Done may be shared by many
	ctx, cancel, err := r.prepare(ctx, c, typ, req, opts, false)
	if err != nil {
		if cancel != nil {
			cancel()
		}
		cl.fail(err)
		return cl
	}
	cl.cancel = cancel
	c.release = cl.release
	if _, err := r.dispatch(c, false); err != nil {
		if err != ErrClosed {
			r.failed.Add(1)
		}
		cl.counted = true
		r.deliver(c, result{err: err})
		return cl
	}
	if c.watched || c.ctxDone == nil {
		return cl // the requester watches ctx (see ctxWatch), or it never ends
	}
	// When ctx ends first, the call is withdrawn and fails with ctx's error
	// (at once if it has ended already); a call that completes first
	// unregisters this (and its timeout).
	stop := context.AfterFunc(ctx, func() {
		if r.abandon(c) {
			err := r.ctxError(c, ctx)
			cl.counted = true
			r.deliver(c, result{err: err})
		}
	})
	cl.mu.Lock()
	cl.stop = stop
	released := cl.released
	cl.mu.Unlock()
	if released {
		stop()
	}
	return cl
}

// release runs when the call completes: it unregisters the context watch
// (at once, or as soon as Go has it) and cancels the timeout.
func (cl *Pending) release() {
	cl.mu.Lock()
	cl.released = true
	stop := cl.stop
	cl.mu.Unlock()
	if stop != nil {
		stop()
	}
	if cl.cancel != nil {
		cl.cancel()
	}
}

// fail completes a call that was never dispatched.
func (cl *Pending) fail(err error) {
	cl.c.res = result{err: err}
	cl.counted = true
	close(cl.c.done)
}

// Done returns a channel that is closed when the call has completed.
func (cl *Pending) Done() <-chan struct{} { return cl.c.done }

// Wait waits for the call to complete and returns what Send would have
// returned, having decoded the reply into the reply given to Go. It may be
// called many times, from any goroutine; the reply is decoded once.
func (cl *Pending) Wait() error {
	<-cl.c.done
	cl.once.Do(func() {
		if cl.counted {
			cl.err = cl.c.res.err // counted as failed already
			return
		}
		cl.err = cl.r.finish(&cl.c, cl.reply)
	})
	return cl.err
}
