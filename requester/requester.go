package requester

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/codec"
	"github.com/warrenmesh/warren/internal/match"
	"github.com/warrenmesh/warren/internal/wire"
	"github.com/warrenmesh/warren/mesh"
)

// Requester sends typed requests to responders and waits for their replies.
// It is safe for concurrent use; one requester serves a whole process.
type Requester struct {
	name string
	cfg  config
	node *mesh.Node
	port *mesh.Port
	self mesh.Component
	log  *slog.Logger
	bal  Balancer

	mu      sync.Mutex
	calls   inflight     // in flight, by sequence number
	held    []*call      // FIFO of requests waiting for a responder
	heldN   int          // live entries in held
	pending map[tkey]int // in flight per responder, when track is set
	track   bool         // the balancer reads Target.Pending (all but round-robin)
	closed  bool
	// watches watch the contexts that many calls share (see
	// watchLocked); lastDone is the Done channel of the last call that
	// found none, the candidate for the next watch.
	watches  map[<-chan struct{}]*ctxWatch
	lastDone <-chan struct{}

	cacheMu sync.Mutex                 // serializes updates of cache
	cache   atomic.Pointer[routeCache] // read without a lock on every Send

	kick chan struct{}
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	// sent and answered change on every request, under mu, which the code
	// that counts them holds anyway: as atomics they would be two more
	// cache lines that the callers and the read loop, on other cores,
	// take from each other.
	sent, answered uint64
	// solo counts, up to soloTrust, the last calls sent while no other
	// was in flight that stayed alone until their reply (none was sent
	// meanwhile); one that did not resets it (see dispatch).
	solo                                int
	failed, retried, rejected, timedOut atomic.Uint64
}

type tkey struct {
	node string
	id   uint64
}

type routeKey struct{ typ, subset string }

// routeCache is an immutable snapshot of the routes computed for one
// catalogue generation; a new entry replaces the whole snapshot. Routes
// with no subset, nearly all, are keyed by their type alone: a small map
// with string keys is searched without hashing.
type routeCache struct {
	gen    uint64
	bare   map[string]*routeEntry   // subset ""
	subset map[routeKey]*routeEntry // the others
}

func (rc *routeCache) get(typ, subset string) *routeEntry {
	if subset == "" {
		return rc.bare[typ]
	}
	return rc.subset[routeKey{typ, subset}]
}

func (rc *routeCache) len() int { return len(rc.bare) + len(rc.subset) }

const maxCachedRoutes = 1024

type routeEntry struct {
	targets []Target
	handled bool // some responder (in any state) handles the type
	peers   bool // some responder of this requester's partition exists
}

const (
	stateIdle uint8 = iota
	stateHeld
	stateSent
	stateDone
)

type call struct {
	ctx         context.Context
	typ         string
	subset      string
	payload     []byte
	enc         *codec.Buffer // Send's calls: the buffer their payload is encoded in, kept as the call is recycled (see releasePayload)
	idempotent  bool
	retriesLeft int
	state       uint8
	seq         uint64
	target      tkey // the responder it was sent to
	excluded    []tkey
	waitGen     uint64 // every target refused it: wait for a catalogue newer than this
	wasHeld     bool
	res         result          // set by deliver, before done is signalled
	done        chan struct{}   // signalled by deliver: exactly one delivery per call
	recycled    bool            // a Send call: done gets one send (not closed) and the call is reused
	replyBuf    []byte          // recycled calls: the buffer that holds the reply's payload
	release     func()          // Go calls: ends the context watch; run by deliver
	ctxDone     <-chan struct{} // ctx.Done(), taken once by prepare
	// Calls on a context that other calls share are watched by the
	// requester instead of their caller (see ctxWatch): watch is the one
	// whose list the call is in (until it is done), and watched tells Send
	// or Go so. watchDecided is set by the first dispatch, which runs in
	// the goroutine of Send or Go.
	watch        *ctxWatch
	wprev, wnext *call
	watched      bool
	watchDecided bool
	soloAt       uint64 // r.sent when it was sent while no other was in flight, else 0 (see Requester.solo)
	// A call of Send sent alone may be awaited by reading its connection
	// on Send's goroutine (mesh.Port.Await): awaiting is set then, under
	// r.mu, and cleared by whatever takes the call out of flight
	// (unawait), which stops that reading (reading). isDone and unawaitFn
	// are made by its first await and kept as it is recycled.
	awaiting  atomic.Bool
	noReuse   bool // set by Send's goroutine: a late context function may still use the call
	reading   mesh.Reading
	isDone    func() bool
	unawaitFn func()
}

// unawait ends the awaiting of c, stopping Send's reading for it if that
// runs. It is called as c leaves flight, from whatever goroutine.
func (c *call) unawait() {
	if c.awaiting.Swap(false) {
		c.reading.Interrupt()
	}
}

// ctxWatch watches a context shared by many calls, so that each needs no
// watch of its own: Send's caller waits on its call's channel alone, and
// Go registers no function on the context. Otherwise every call takes the
// shared context's lock (twice for a select on its channel, and a map
// insertion and deletion for context.AfterFunc), and under load the
// callers on every core fight over it. When the context ends, the watch's
// function walks its calls and ends them with the context's error,
// wherever they are (held, in flight, or between two attempts). Its
// fields are guarded by the requester's mu.
type ctxWatch struct {
	done <-chan struct{}
	ctx  context.Context // the first call's, for its error (all share done)
	stop func() bool     // unregisters the function from ctx
	head *call           // the calls not done yet, through call.wnext
	n    int
}

// maxWatches bounds the contexts a requester watches at once. Past it,
// calls on other contexts wait on them themselves.
const maxWatches = 8

// soloTrust is how many calls in a row must have stayed alone in flight
// before a call sent alone is treated as such (see dispatch).
const soloTrust = 4

// Send's calls are recycled: a call costs two allocations (itself and its
// done channel) and the reply's copy a third, a fifth of a request's
// allocations in all, for each of which the garbage collector pays again.
var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1), recycled: true} }}

// maxReplyBuf bounds the reply buffer a recycled call keeps.
const maxReplyBuf = 16 << 10

// recycle puts back a call of Send that nothing refers to any more: its
// result was delivered and received, and it was never held (the dispatcher
// may still be finishing with a held call). Only its done channel, which
// is empty, and its reply buffer are kept.
func recycle(c *call) {
	if c.wasHeld || c.noReuse {
		return
	}
	done, buf := c.done, c.res.payload[:0]
	if cap(buf) > maxReplyBuf {
		buf = nil
	}
	*c = call{done: done, recycled: true, replyBuf: buf, enc: c.enc, isDone: c.isDone, unawaitFn: c.unawaitFn}
	callPool.Put(c)
}

type result struct {
	err     error
	status  uint8
	code    string
	msg     string
	payload []byte
}

// Stats counts a requester's work since it started.
type Stats struct {
	Sent     uint64 // requests written to a responder (resends included)
	Answered uint64 // replies received (handler errors included)
	Failed   uint64 // requests that ended in an error other than a handler's
	Retried  uint64 // requests resent after their responder was lost
	Rejected uint64 // requests a responder refused unprocessed and that were resent
	TimedOut uint64 // requests whose deadline passed
	Held     int    // requests waiting for a responder now
	InFlight int    // requests sent and not answered yet
}

// New creates a requester named name (a label shown in the catalogue).
func New(name string, opts ...Option) (*Requester, error) {
	cfg := defaults()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxPending < 0 || cfg.retries < 0 || cfg.timeout < 0 {
		return nil, fmt.Errorf("%w: max pending, retries and timeout must not be negative", ErrInvalidConfig)
	}
	if cfg.node == nil {
		n, err := mesh.Default()
		if err != nil {
			return nil, err
		}
		cfg.node = n
	}
	if cfg.balancer == nil {
		cfg.balancer = RoundRobin()
	}
	log := cfg.logger
	if log == nil {
		log = cfg.node.Logger()
	}
	r := &Requester{
		name:    name,
		cfg:     cfg,
		node:    cfg.node,
		log:     log.With("requester", name),
		bal:     cfg.balancer,
		pending: map[tkey]int{},
		kick:    make(chan struct{}, 1),
	}
	_, rr := cfg.balancer.(*roundRobin)
	r.track = !rr
	r.self = mesh.Component{Kind: mesh.KindRequester, Name: name, Environment: cfg.node.Environment(),
		Key: cfg.key, Namespace: cfg.namespace}
	p, err := cfg.node.Register(r.self, (*handler)(r))
	if err != nil {
		return nil, err
	}
	r.port = p
	r.ctx, r.stop = context.WithCancel(context.Background())
	r.wg.Add(1)
	go r.dispatcher()
	return r, nil
}

// Call sends a request and decodes the reply into a new Out.
func Call[Out any](ctx context.Context, r *Requester, typ string, req any, opts ...CallOption) (Out, error) {
	var out Out
	err := r.Send(ctx, typ, req, &out, opts...)
	return out, err
}

// Send sends req as a request of type typ to one eligible responder and
// decodes its reply into reply (a pointer, or nil to discard it).
//
// Eligible responders have this requester's environment, key and
// namespace, handle typ (exactly or by pattern), and are not draining. When
// there is none yet, the request is held, in order, until one appears, ctx
// ends, or the requester's timeout passes; a request that times out while
// held never reaches a responder. When responders exist but none handles
// typ, Send fails at once with ErrNoHandler.
func (r *Requester) Send(ctx context.Context, typ string, req, reply any, opts ...CallOption) error {
	c := callPool.Get().(*call)
	ctx, cancel, err := r.prepare(ctx, c, typ, req, opts, true)
	if cancel != nil {
		defer cancel()
	}
	if err != nil {
		return err
	}
	node, err := r.dispatch(c, true)
	if err != nil {
		r.releasePayload(c)
		if err != ErrClosed {
			r.failed.Add(1)
		}
		return err
	}
	if node != "" {
		r.await(c, node)
	}
	if c.watched || c.ctxDone == nil {
		<-c.done // the watch ends it with ctx's error, if ctx ends first
	} else {
		select {
		case <-c.done:
		case <-c.ctxDone:
			if r.abandon(c) {
				r.releasePayload(c)
				return r.ctxError(c, ctx)
			}
			<-c.done
		}
	}
	r.releasePayload(c)
	err = r.finish(c, reply)
	recycle(c)
	return err
}

// await reads the connection c was sent on (to node) on Send's goroutine
// until c leaves flight, so that its reply, read here, needs no other
// goroutine to wake this one (see mesh.Port.Await). The context's end
// stops it: c's watch does (through doneLocked), or for an unwatched
// context a function registered on it. When the reading cannot be had or
// stops early, Send waits for c as usual.
func (r *Requester) await(c *call, node string) {
	if c.isDone == nil { // the first await of this call (kept as it is recycled)
		c.isDone = func() bool { return !c.awaiting.Load() || len(c.done) > 0 }
		c.unawaitFn = c.unawait
	}
	if !c.watched && c.ctxDone != nil {
		stop := context.AfterFunc(c.ctx, c.unawaitFn)
		defer func() {
			if !stop() {
				// The function runs or will run: it may touch c after
				// Send returns, so c must not be reused.
				c.noReuse = true
			}
		}()
	}
	if r.port.Await(node, c.isDone, &c.reading) {
		r.mu.Lock()
		others := r.calls.len() > 0
		r.mu.Unlock()
		if others {
			// Their replies come on connections that no caller may read
			// for a while: let the read loops have them.
			r.port.Resume(node)
		}
	}
	c.awaiting.Store(false)
}

// prepare fills in c for a request of type typ: its context (with the
// requester's timeout when ctx has no deadline; cancel is then non-nil),
// its encoded payload (in the call's own buffer, which Send's recycled
// calls keep, when reuse is set; see releasePayload) and its call options.
func (r *Requester) prepare(ctx context.Context, c *call, typ string, req any, opts []CallOption, reuse bool) (context.Context, context.CancelFunc, error) {
	if err := match.ValidName(typ); err != nil {
		return ctx, nil, fmt.Errorf("%w: %v", ErrInvalidType, err)
	}
	var cancel context.CancelFunc
	if _, hasDeadline := ctx.Deadline(); !hasDeadline && r.cfg.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, r.cfg.timeout)
	}
	var payload []byte
	if reuse {
		if c.enc == nil {
			c.enc = codec.NewBuffer()
		}
		if err := c.enc.Encode(req); err != nil {
			return ctx, cancel, fmt.Errorf("requester: %q: %w", typ, err)
		}
		payload = c.enc.Bytes()
	} else {
		var err error
		if payload, err = codec.Marshal(req); err != nil {
			return ctx, cancel, fmt.Errorf("requester: %q: %w", typ, err)
		}
	}
	c.ctx, c.ctxDone, c.typ, c.payload = ctx, ctx.Done(), typ, payload
	for _, o := range opts {
		o(c)
	}
	switch {
	case r.cfg.retries > 0:
		c.retriesLeft = r.cfg.retries
	case c.idempotent:
		c.retriesLeft = DefaultRetries
	}
	return ctx, cancel, nil
}

// releasePayload ends the use of the encoding of a call Send made, once it
// is done: the call keeps its buffer for its next use. Only Send's own
// goroutine ever wrote a call that was never held (WriteFrame copies the
// payload and keeps no reference); a call that was held or resent may
// still be in the dispatcher's hands, so its buffer is left to the garbage
// collector (and the call is not recycled). wasHeld needs no lock here: it
// is set under r.mu before the call's result is delivered (which Send
// waited for) or before Send's abandon took r.mu, and never after.
func (r *Requester) releasePayload(c *call) {
	switch {
	case c.enc == nil:
	case c.wasHeld:
		c.enc = nil // not touched: the dispatcher may still read it
	default:
		c.payload = nil
		c.enc.Trim()
	}
}

// ctxError is the error of a call whose context ended; it counts the call
// as failed.
func (r *Requester) ctxError(c *call, ctx context.Context) error {
	r.failed.Add(1)
	return r.ctxEndError(c, ctx.Err())
}

// ctxEndError is the error of a call whose context ended with err (and
// counts a timeout, not a failure).
func (r *Requester) ctxEndError(c *call, err error) error {
	where := "in flight"
	if c.wasHeld && c.seq == 0 {
		where = "held: no eligible responder appeared"
	}
	if errors.Is(err, context.DeadlineExceeded) {
		r.timedOut.Add(1)
		return fmt.Errorf("%w: %q (%s): %w", ErrTimeout, c.typ, where, err)
	}
	return fmt.Errorf("requester: %q (%s): %w", c.typ, where, err)
}

// finish turns c's delivered result into what Send returns.
func (r *Requester) finish(c *call, reply any) error {
	res := &c.res
	if res.err != nil {
		r.failed.Add(1)
		return res.err
	}
	switch res.status {
	case wire.StatusOK:
		if reply == nil {
			return nil
		}
		if err := codec.Unmarshal(res.payload, reply); err != nil {
			return fmt.Errorf("%w: %q from %s: %w", ErrDecode, c.typ, c.target.node, err)
		}
		return nil
	case wire.StatusError:
		return &RemoteError{Type: c.typ, Responder: c.target.node, Code: res.code, Message: res.msg}
	case wire.StatusTooLarge:
		return fmt.Errorf("%w: %q from %s: %s", ErrReplyTooLarge, c.typ, c.target.node, res.msg)
	}
	return fmt.Errorf("requester: %q: unknown reply status %d from %s", c.typ, res.status, c.target.node)
}

// routes returns the eligible targets for (typ, subset) in view v.
func (r *Requester) routes(v *mesh.View, typ, subset string) *routeEntry {
	if rc := r.cache.Load(); rc != nil && rc.gen == v.Gen {
		if e := rc.get(typ, subset); e != nil {
			return e
		}
	}
	e := &routeEntry{}
	for i := range v.Components {
		c := &v.Components[i]
		if c.Kind != mesh.KindResponder || !c.Peers(&r.self) || (subset != "" && c.Subset != subset) {
			continue
		}
		e.peers = true
		if !match.Any(c.Handles, typ) {
			continue
		}
		e.handled = true
		if c.State != mesh.StateActive || v.Unreachable[c.Node] {
			continue
		}
		e.targets = append(e.targets, Target{Node: c.Node, Component: c.ID, Subset: c.Subset})
	}
	r.cacheMu.Lock()
	next := &routeCache{gen: v.Gen}
	if rc := r.cache.Load(); rc != nil && rc.gen == v.Gen && rc.len() < maxCachedRoutes {
		next.bare, next.subset = maps.Clone(rc.bare), maps.Clone(rc.subset)
	}
	if subset == "" {
		if next.bare == nil {
			next.bare = make(map[string]*routeEntry, 1)
		}
		next.bare[typ] = e
	} else {
		if next.subset == nil {
			next.subset = make(map[routeKey]*routeEntry, 1)
		}
		next.subset[routeKey{typ, subset}] = e
	}
	if rc := r.cache.Load(); rc == nil || rc.gen <= v.Gen {
		r.cache.Store(next) // never replace a newer generation with an older one
	}
	r.cacheMu.Unlock()
	return e
}

// dispatch sends c to a responder, or holds it. It returns an error only
// when c has failed for good (and then c is done). With mayAwait (Send's
// calls), a call sent while no other is in flight is marked awaiting, and
// dispatch returns the node it went to, for Send to await it (see await).
func (r *Requester) dispatch(c *call, mayAwait bool) (node string, err error) {
	for {
		v := r.node.View()
		e := r.routes(v, c.typ, c.subset)
		targets := e.targets
		if len(c.excluded) > 0 && len(targets) > 0 {
			targets = slices.DeleteFunc(slices.Clone(targets), func(t Target) bool {
				return slices.Contains(c.excluded, tkey{t.Node, t.Component})
			})
			if len(targets) == 0 {
				// All refused: wait for the catalogue to change.
				c.excluded = c.excluded[:0]
				c.waitGen = v.Gen
			}
		}
		if len(targets) == 0 && testHookBeforeHold != nil {
			testHookBeforeHold()
		}
		r.mu.Lock()
		if c.state == stateDone {
			r.mu.Unlock()
			return "", nil // abandoned meanwhile
		}
		if r.closed {
			r.doneLocked(c)
			r.mu.Unlock()
			return "", ErrClosed
		}
		if !c.watchDecided {
			c.watchDecided = true
			if c.ctxDone != nil {
				r.watchLocked(c)
			}
		}
		if len(targets) == 0 {
			if e.peers && !e.handled {
				r.doneLocked(c)
				r.mu.Unlock()
				if c.subset != "" {
					return "", fmt.Errorf("%w: %q in subset %q", ErrNoHandler, c.typ, c.subset)
				}
				return "", fmt.Errorf("%w: %q", ErrNoHandler, c.typ)
			}
			if r.heldN >= r.cfg.maxPending {
				r.doneLocked(c)
				r.mu.Unlock()
				return "", fmt.Errorf("%w: %q: %d requests already wait for a responder", ErrQueueFull, c.typ, r.cfg.maxPending)
			}
			c.state, c.wasHeld, c.seq = stateHeld, true, 0
			r.held = append(r.held, c)
			r.heldN++
			r.mu.Unlock()
			if r.node.View().Gen != v.Gen {
				// The catalogue changed since v: the dispatcher may have
				// drained the held queue for the new one before c was in
				// it, and would wait for the next change.
				r.poke()
			}
			return "", nil
		}
		t := targets[0]
		if len(targets) > 1 {
			if r.track {
				targets = slices.Clone(targets)
				for i := range targets {
					targets[i].Pending = r.pending[tkey{targets[i].Node, targets[i].Component}]
				}
			}
			t = targets[r.bal.Pick(targets)]
		}
		seq, ok := r.calls.add(c)
		if !ok {
			r.doneLocked(c)
			r.mu.Unlock()
			return "", fmt.Errorf("%w: %q: %d requests already in flight", ErrQueueFull, c.typ, r.calls.len())
		}
		c.seq, c.target, c.state = seq, tkey{t.Node, t.Component}, stateSent
		// The only call in flight, when calls that went alone recently
		// stayed alone until their replies: no other request of this
		// requester is likely on its way to join this one's write
		// (wire.Writer.WriteFrameNow), or to need the read loop while its
		// caller reads the reply itself (see await). Callers woken
		// together by a burst of replies often find themselves alone for
		// an instant before the others send: there, the write that waits
		// for company and the read loop are the better bet.
		c.soloAt = 0
		alone := false
		if r.calls.len() == 1 {
			c.soloAt = r.sent + 1 // r.sent once this one is counted
			alone = r.solo >= soloTrust
		}
		if alone && mayAwait {
			c.awaiting.Store(true)
		}
		r.sent++ // taken back by forget if it is not written
		if r.track {
			r.pending[tkey{t.Node, t.Component}]++
		}
		r.mu.Unlock()
		if testHookSending != nil {
			testHookSending(c, seq, t.Node)
		}

		// From here c may leave flight at any moment (its responder lost,
		// its context ended) and be dispatched again by another goroutine
		// under a new number: this goroutine uses seq, not c.seq, and
		// forget tells it whether c is still its to handle.
		h := wire.Header{To: t.Component, Seq: seq, Name: c.typ}
		if dl, ok := c.ctx.Deadline(); ok {
			left := time.Until(dl)
			if left <= 0 {
				r.forget(c, seq)
				return "", nil // the caller (or its watch) sees its context end
			}
			h.Deadline = int64(left)
		}
		if alone {
			err = r.port.SendNow(c.ctx, t.Node, wire.KindRequest, &h, c.payload)
		} else {
			err = r.port.Send(c.ctx, t.Node, wire.KindRequest, &h, c.payload)
		}
		if err == nil {
			if c.awaiting.Load() {
				return t.Node, nil
			}
			return "", nil
		}
		if !r.forget(c, seq) {
			return "", nil // answered, abandoned or sent again meanwhile
		}
		switch {
		case errors.Is(err, wire.ErrFrameTooLarge):
			r.finishState(c)
			return "", fmt.Errorf("requester: %q: request of %d bytes: %w", c.typ, len(c.payload), err)
		case c.ctx.Err() != nil:
			return "", nil // the caller (or its watch) sees its context end
		case errors.Is(err, mesh.ErrClosed):
			r.finishState(c)
			return "", fmt.Errorf("requester: %q: %w", c.typ, err)
		}
		r.log.Debug("responder unreachable, trying another", "type", c.typ, "node", t.Node, "err", err)
		c.excluded = append(c.excluded, tkey{t.Node, t.Component})
	}
}

// testHookBeforeHold, when set (by tests), runs in dispatch when a request
// found no target, before it is held.
var testHookBeforeHold func()

// testHookSending, when set (by tests), runs in dispatch once c is in
// flight as number seq to node, before its frame is written.
var testHookSending func(c *call, seq uint64, node string)

// forget takes c, sent as number seq, out of the in-flight table after a
// failed write; false if it was no longer there under that number
// (answered, abandoned, or taken out of flight and dispatched again).
func (r *Requester) forget(c *call, seq uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	c.awaiting.Store(false) // Send's own goroutine: not awaiting yet
	if r.calls.get(seq) != c {
		return false
	}
	r.calls.remove(seq)
	r.unpend(c.target)
	r.sent--
	c.state = stateIdle
	return true
}

func (r *Requester) finishState(c *call) {
	r.mu.Lock()
	r.doneLocked(c)
	r.mu.Unlock()
}

// doneLocked marks c done, the one delivery of its result being on its
// way, and takes it off its context's watch. r.mu is held.
func (r *Requester) doneLocked(c *call) {
	c.state = stateDone
	c.unawait()
	w := c.watch
	if w == nil {
		return
	}
	if c.wprev != nil {
		c.wprev.wnext = c.wnext
	} else {
		w.head = c.wnext
	}
	if c.wnext != nil {
		c.wnext.wprev = c.wprev
	}
	c.watch, c.wprev, c.wnext = nil, nil, nil
	w.n--
}

// watchLocked decides, on its first dispatch, whether call c is watched
// by the requester (see ctxWatch). A context gets a watch when a
// second call in a row uses it (a context made for one call never does),
// while fewer than maxWatches are watched; watches end with their
// context, and one that watches no call may give way to a new one. r.mu
// is held.
func (r *Requester) watchLocked(c *call) {
	d := c.ctxDone
	w := r.watches[d]
	if w == nil {
		if d != r.lastDone {
			r.lastDone = d
			return
		}
		select {
		case <-d:
			return // ended already: the caller sees it at once
		default:
		}
		if len(r.watches) >= maxWatches && !r.evictWatchLocked() {
			return
		}
		w = &ctxWatch{done: d, ctx: c.ctx}
		if r.watches == nil {
			r.watches = make(map[<-chan struct{}]*ctxWatch, 1)
		}
		r.watches[d] = w
		r.lastDone = nil
		w.stop = context.AfterFunc(c.ctx, func() { r.watchEnded(w) })
	}
	c.watch, c.watched = w, true
	c.wnext = w.head
	if c.wnext != nil {
		c.wnext.wprev = c
	}
	w.head = c
	w.n++
}

// evictWatchLocked drops a watch that watches no call, if there is one.
// r.mu is held.
func (r *Requester) evictWatchLocked() bool {
	for d, w := range r.watches {
		if w.n == 0 {
			w.stop()
			delete(r.watches, d)
			return true
		}
	}
	return false
}

// watchEnded runs when a watched context ends: it ends every call still
// watched with the context's error, as abandon does for a caller that
// watches its own.
func (r *Requester) watchEnded(w *ctxWatch) {
	var (
		ended   []*call
		errs    []error
		notices []cancelNotice
	)
	cause := w.ctx.Err()
	r.mu.Lock()
	if r.watches[w.done] == w {
		delete(r.watches, w.done)
	}
	for w.head != nil {
		c := w.head
		switch c.state {
		case stateHeld:
			r.heldN--
		case stateSent:
			r.calls.remove(c.seq)
			r.unpend(c.target)
			notices = append(notices, cancelNotice{c.target, c.seq})
		}
		// stateIdle: between two attempts, its dispatch sees it done.
		r.doneLocked(c)
		ended = append(ended, c)
		errs = append(errs, r.ctxEndError(c, cause))
	}
	r.mu.Unlock()
	for i, c := range ended {
		r.deliver(c, result{err: errs[i]})
	}
	r.sendCancels(notices)
}

// cancelNotice names a request a caller stopped waiting for.
type cancelNotice struct {
	t   tkey
	seq uint64
}

// sendCancels tells the responders of requests their callers stopped
// waiting for, so that their handlers' contexts are cancelled (best
// effort: a second at most in all).
func (r *Requester) sendCancels(notices []cancelNotice) {
	if len(notices) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, n := range notices {
		r.port.Send(ctx, n.t.node, wire.KindCancel, &wire.Header{To: n.t.id, Seq: n.seq}, nil)
	}
}

func (r *Requester) unpend(k tkey) {
	if !r.track {
		return
	}
	if r.pending[k] <= 1 {
		delete(r.pending, k)
	} else {
		r.pending[k]--
	}
}

// abandon withdraws c after its context ended; false if a result is
// already on its way.
func (r *Requester) abandon(c *call) bool {
	r.mu.Lock()
	switch c.state {
	case stateDone:
		r.mu.Unlock()
		return false
	case stateHeld:
		r.heldN--
	case stateSent:
		r.calls.remove(c.seq)
		r.unpend(c.target)
		n := cancelNotice{c.target, c.seq}
		r.doneLocked(c)
		r.mu.Unlock()
		r.sendCancels([]cancelNotice{n})
		return true
	}
	r.doneLocked(c)
	r.mu.Unlock()
	return true
}

// requeueLocked puts c back at the head of the held queue. r.mu held.
func (r *Requester) requeueLocked(c *call) {
	c.unawait()
	c.state, c.wasHeld = stateHeld, true
	r.held = slices.Insert(r.held, 0, c)
	r.heldN++
}

func (r *Requester) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// dispatcher sends held requests, in order, as soon as responders appear.
func (r *Requester) dispatcher() {
	defer r.wg.Done()
	for {
		v := r.node.View()
		r.drainHeld(v)
		select {
		case <-v.Changed():
		case <-r.kick:
		case <-r.ctx.Done():
			return
		}
	}
}

// drainHeld sends the held calls that view v gives somewhere to go.
func (r *Requester) drainHeld(v *mesh.View) {
	r.mu.Lock()
	list := r.held
	r.held = nil
	r.mu.Unlock()
	r.redispatch(v, list)
}

// redispatch sends the calls of list (taken out of r.held) that v gives
// somewhere to go, and puts the others back in front of r.held. Close may
// run meanwhile: it cannot see list, so what list still holds then fails
// here.
func (r *Requester) redispatch(v *mesh.View, list []*call) {
	var keep []*call
	for _, c := range list {
		r.mu.Lock()
		if c.state != stateHeld {
			r.mu.Unlock()
			continue
		}
		if r.closed {
			// Close ran while this list was out of r.held, so it could
			// not fail these calls: fail them here.
			r.doneLocked(c)
			r.mu.Unlock()
			r.failHeldOnClose(c)
			continue
		}
		e := r.routes(v, c.typ, c.subset)
		if (len(e.targets) == 0 && (!e.peers || e.handled)) || c.waitGen == v.Gen {
			keep = append(keep, c) // still nobody to send it to
			r.mu.Unlock()
			continue
		}
		c.state = stateIdle
		r.heldN--
		r.mu.Unlock()
		if _, err := r.dispatch(c, false); err != nil {
			r.deliver(c, result{err: err})
		}
	}
	r.mu.Lock()
	if r.closed {
		// Close ran after the loop looked at these: they fail, as Close
		// fails the calls it finds held.
		var failed []*call
		for _, c := range keep {
			if c.state == stateHeld {
				r.doneLocked(c)
				failed = append(failed, c)
			}
		}
		r.mu.Unlock()
		for _, c := range failed {
			r.failHeldOnClose(c)
		}
		return
	}
	r.held = append(keep, r.held...)
	r.mu.Unlock()
}

// failHeldOnClose completes c, a held call (marked done) that its
// requester's Close ends.
func (r *Requester) failHeldOnClose(c *call) {
	r.deliver(c, result{err: fmt.Errorf("%w: %q was held when the requester closed", ErrClosed, c.typ)})
}

// deliver completes c. The state machine guarantees exactly one delivery
// per call: whoever moves it to stateDone (under r.mu) delivers, except
// when Send's own goroutine abandons it.
func (r *Requester) deliver(c *call, res result) {
	// A recycled call may be reused as soon as done is signalled: read
	// what is needed first.
	release, recycled := c.release, c.recycled
	c.res = res
	if recycled {
		c.done <- struct{}{} // never blocks: one delivery, into a buffer of one
	} else {
		close(c.done)
	}
	if release != nil {
		release()
	}
}

// handler receives the requester's frames from the node.
type handler Requester

func (h *handler) HandleFrame(from string, f *wire.Frame) {
	r := (*Requester)(h)
	if f.Kind != wire.KindResponse {
		return
	}
	r.mu.Lock()
	c := r.calls.get(f.Header.Seq)
	if c == nil || c.target.node != from {
		r.mu.Unlock()
		return // a late reply to an abandoned request
	}
	r.calls.remove(f.Header.Seq)
	r.unpend(c.target)
	if c.soloAt != 0 {
		if r.sent == c.soloAt {
			r.solo = min(r.solo+1, soloTrust)
		} else {
			r.solo = 0
		}
	}
	// This goroutine reads the connection c was sent on: if Send awaits c
	// by reading it, this is that reading, which stops once c is out of
	// flight (no need to interrupt it).
	c.awaiting.Store(false)
	if f.Header.Status == wire.StatusRejected || f.Header.Status == wire.StatusNoHandler {
		// Not processed: safe to send elsewhere, whatever the retry policy.
		c.excluded = append(c.excluded, c.target)
		r.requeueLocked(c)
		r.mu.Unlock()
		r.rejected.Add(1)
		r.poke()
		return
	}
	r.doneLocked(c)
	r.answered++
	r.mu.Unlock()
	res := result{status: f.Header.Status, code: f.Header.Code, msg: f.Header.Msg}
	if len(f.Payload) > 0 {
		// The frame's bytes are the read loop's. A recycled call's buffer is
		// reused once Send has decoded the reply: the decoder copies what it
		// keeps (it reads through an io.Reader), so nothing refers to it then.
		res.payload = append(c.replyBuf, f.Payload...)
		c.replyBuf = nil
	}
	r.deliver(c, res)
}

func (h *handler) PeerDown(node string) {
	r := (*Requester)(h)
	var lost []*call
	r.mu.Lock()
	requeued := false
	r.calls.each(func(c *call) {
		if c.target.node != node {
			return
		}
		r.calls.remove(c.seq)
		r.unpend(c.target)
		if c.retriesLeft > 0 {
			c.retriesLeft--
			c.excluded = append(c.excluded, c.target)
			r.requeueLocked(c)
			r.retried.Add(1)
			requeued = true
			return
		}
		r.doneLocked(c)
		lost = append(lost, c)
	})
	r.mu.Unlock()
	if requeued {
		r.poke()
	}
	for _, c := range lost {
		r.deliver(c, result{err: fmt.Errorf("%w: %q was in flight to %s", ErrResponderLost, c.typ, node)})
	}
}

// Stats returns the requester's counters.
func (r *Requester) Stats() Stats {
	r.mu.Lock()
	held, inflight, sent, answered := r.heldN, r.calls.len(), r.sent, r.answered
	r.mu.Unlock()
	return Stats{
		Sent: sent, Answered: answered, Failed: r.failed.Load(),
		Retried: r.retried.Load(), Rejected: r.rejected.Load(), TimedOut: r.timedOut.Load(),
		Held: held, InFlight: inflight,
	}
}

// Close stops the requester: new requests fail with ErrClosed, held ones
// fail with ErrClosed at once, and Close waits (until ctx ends) for replies
// to requests in flight before leaving the catalogue.
func (r *Requester) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	var failed []*call
	for _, c := range r.held {
		if c.state == stateHeld {
			r.doneLocked(c)
			failed = append(failed, c)
		}
	}
	r.held, r.heldN = nil, 0
	r.mu.Unlock()
	for _, c := range failed {
		r.failHeldOnClose(c)
	}
	var err error
	for {
		r.mu.Lock()
		n := r.calls.len()
		r.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			err = fmt.Errorf("requester: close %q: %w", r.name, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
		if err != nil {
			break
		}
	}
	r.mu.Lock()
	var notices []cancelNotice
	r.calls.each(func(c *call) {
		r.calls.remove(c.seq)
		notices = append(notices, cancelNotice{c.target, c.seq})
		r.doneLocked(c)
		r.deliver(c, result{err: fmt.Errorf("%w: %q was in flight when the requester closed", ErrClosed, c.typ)})
	})
	for _, c := range r.held {
		// Requeued while Close waited (a responder refused it, or its
		// peer went down with retries left).
		if c.state == stateHeld {
			r.doneLocked(c)
			r.failHeldOnClose(c)
		}
	}
	r.held, r.heldN = nil, 0
	for d, w := range r.watches {
		// What a watch still has is between two attempts (or waits for
		// its context's end after a failed one): it fails now.
		for w.head != nil {
			c := w.head
			r.doneLocked(c)
			r.deliver(c, result{err: fmt.Errorf("%w: %q was being sent when the requester closed", ErrClosed, c.typ)})
		}
		w.stop()
		delete(r.watches, d)
	}
	r.lastDone = nil
	r.mu.Unlock()
	r.sendCancels(notices)
	r.stop()
	r.wg.Wait()
	r.port.Close()
	return err
}

// NodeClosing is called by the node as it closes: the component closes at
// once, failing what it still holds.
func (h *handler) NodeClosing() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	(*Requester)(h).Close(ctx)
}
