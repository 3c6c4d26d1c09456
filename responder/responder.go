package responder

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/codec"
	"github.com/warrenmesh/warren/internal/match"
	"github.com/warrenmesh/warren/internal/wire"
	"github.com/warrenmesh/warren/mesh"
)

// HandlerFunc answers one request. Its return value is encoded as the reply
// (nil for none); a returned error reaches the caller as a remote error with
// its message (and code, for an *Error). ctx ends at the caller's deadline,
// when the caller gives up, or when the responder is closed.
type HandlerFunc func(ctx context.Context, req *Request) (any, error)

// Request is one incoming request.
type Request struct {
	// Type is the request's type, as the requester sent it (even when the
	// handler was registered with a wildcard).
	Type string
	// From is the ID of the node that sent it.
	From    string
	payload []byte
}

// Decode decodes the request's payload into v, a pointer. A payload that
// does not decode into v gives an error wrapping ErrDecode.
func (r *Request) Decode(v any) error {
	if err := codec.Unmarshal(r.payload, v); err != nil {
		return r.decodeError(err)
	}
	return nil
}

// decodeBytes is Decode into a []byte that does not escape.
func (r *Request) decodeBytes(p *[]byte) error {
	if err := codec.UnmarshalBytes(r.payload, p); err != nil {
		return r.decodeError(err)
	}
	return nil
}

func (r *Request) decodeError(err error) error {
	return fmt.Errorf("%w %q: %w", ErrDecode, r.Type, err)
}

// Payload returns the raw msgpack payload.
func (r *Request) Payload() []byte { return r.payload }

// Handle registers a typed handler: the payload is decoded into In, and the
// returned Out is the reply. A payload that does not decode is answered
// with an error naming the type.
func Handle[In, Out any](r *Responder, typ string, fn func(context.Context, In) (Out, error)) {
	if fn == nil {
		r.on(typ, entry{}) // panics, as On does
	}
	_, bytesIn := any(*new(In)).([]byte)
	// The request is decoded (copied) before fn runs and fn never sees it,
	// so it may live in the job and be reused with it (see job.own).
	r.on(typ, entry{typed: true, serve: func(ctx context.Context, req *Request, enc *codec.Buffer) error {
		in, err := decodeArg[In](req, bytesIn)
		if err != nil {
			return &Error{Code: "bad_request", Message: err.Error()}
		}
		out, err := fn(ctx, in)
		if err != nil {
			return err
		}
		return encodeResult(enc, out)
	}})
}

// decodeArg decodes a typed handler's argument. A []byte argument is
// decoded into a variable of its own that does not escape (v below does,
// through msgpack), so that raw bytes cost only their copy.
func decodeArg[In any](req *Request, bytesIn bool) (In, error) {
	if bytesIn {
		var b []byte
		err := req.decodeBytes(&b)
		return any(b).(In), err
	}
	var v In
	err := req.Decode(&v)
	return v, err
}

// encodeResult encodes a typed handler's result into enc; raw bytes are
// written without putting them in an interface (an allocation).
func encodeResult[Out any](enc *codec.Buffer, out Out) error {
	if b, ok := any(out).([]byte); ok && b != nil {
		enc.EncodeBytes(b)
		return nil
	}
	return encodeReply(enc, out)
}

// encodeReply encodes a handler's result (nil: no reply payload) into enc.
func encodeReply(enc *codec.Buffer, v any) error {
	if err := enc.Encode(v); err != nil {
		return &Error{Code: "encode", Message: err.Error()}
	}
	return nil
}

// Stats counts a responder's work since it started.
type Stats struct {
	Received  uint64 // requests received
	Answered  uint64 // replies sent (success or handler error)
	Errors    uint64 // handler errors, panics included
	Panics    uint64 // handler panics recovered
	NoHandler uint64 // requests for a type this responder does not handle
	Expired   uint64 // requests whose caller's deadline passed before their handler ran or returned (no reply is sent)
	Canceled  uint64 // requests the caller abandoned
	InFlight  int    // handlers running or waiting for a slot now
}

// serveFunc runs a handler: it leaves the encoded reply, if there is one,
// in enc (left empty otherwise).
type serveFunc func(ctx context.Context, req *Request, enc *codec.Buffer) error

// entry is a registered handler. typed marks the handlers Handle makes,
// which cannot keep their *Request (see job).
type entry struct {
	serve serveFunc
	typed bool
}

type route struct {
	pattern string
	entry
}

type reqKey struct {
	node string
	from uint64
	seq  uint64
}

// job is one accepted request, from its arrival until its reply is sent.
// Jobs are reused (jobPool), so what a handler may keep after it returns
// is not part of them: its context (taken from a slab of ctxSlab, for a
// handler made by Handle) and the request of a handler registered with On
// (allocated with its context in a kept). A handler made by Handle never
// sees its *Request: the job's own is used, with the payload in the job's
// buffers.
type job struct {
	key   reqKey
	serve serveFunc
	ctx   *jobCtx
	req   *Request
	back  *wire.Writer // the connection it came in on: the reply goes back on it
	held  bool         // back is held from arrival until the job starts (see start)
	alone bool         // the only request waiting or running when a worker took it

	// prev and next link the responder's running jobs (Responder.runHead).
	prev, next *job

	own   Request            // typed handlers' request
	small [smallPayload]byte // own's payload when small
	big   []byte             // own's payload when larger, reused up to maxJobBuf
}

// kept is what a handler registered with On may keep after it returns: its
// context and its request, allocated together for each request (and the
// payload too, when small).
type kept struct {
	ctx   jobCtx
	req   Request
	small [smallPayload]byte
}

const (
	// smallPayload is the largest request payload kept in a job's or a
	// kept's own array.
	smallPayload = 32
	// maxJobBuf bounds the payload buffer a reused job keeps.
	maxJobBuf = 16 << 10
)

var jobPool = sync.Pool{New: func() any { return new(job) }}

// newJob returns a job for the request in f, for handler e, with its
// request ready (the payload copied: f's bytes are the read loop's), and
// its context too unless the handler is typed: accept gives that one a
// context from the responder's slab.
func newJob(key reqKey, e entry, from string, f *wire.Frame) *job {
	j := jobPool.Get().(*job)
	j.key, j.serve, j.back = key, e.serve, f.Back
	var src []byte
	if e.typed {
		j.own = Request{Type: f.Header.Name, From: from}
		j.req = &j.own
		switch n := len(f.Payload); {
		case n == 0:
		case n <= smallPayload:
			src = j.small[:0:n]
		default:
			if cap(j.big) < n {
				j.big = make([]byte, 0, n)
			}
			src = j.big[:0]
		}
	} else {
		k := &kept{req: Request{Type: f.Header.Name, From: from}}
		j.ctx, j.req = &k.ctx, &k.req
		if n := len(f.Payload); n > 0 && n <= smallPayload {
			src = k.small[:0:n]
		}
	}
	if len(f.Payload) > 0 {
		j.req.payload = append(src, f.Payload...)
	}
	return j
}

// ctxSlab is how many contexts are allocated at once for typed handlers'
// requests: one allocation for many, and a context a handler keeps pins
// 2 KiB at most.
const ctxSlab = 32

// newCtxLocked returns a new context from the responder's slab. r.mu is
// held.
func (r *Responder) newCtxLocked() *jobCtx {
	if len(r.ctxs) == 0 {
		r.ctxs = make([]jobCtx, ctxSlab)
	}
	c := &r.ctxs[0]
	r.ctxs = r.ctxs[1:]
	return c
}

// free puts j back in the pool once nothing refers to it: it was taken out
// of the responder's list, and its handler has returned (or never ran).
func (j *job) free() {
	big := j.big
	if cap(big) > maxJobBuf {
		big = nil
	}
	*j = job{big: big[:0]}
	jobPool.Put(j)
}

// start releases the job's hold on the connection it came in on: the
// replies of the jobs that arrived together are written together, by a
// flusher the last release starts and that runs once the worker that
// started the last of them blocks (so that job's reply joins the write when
// its handler is quick), and a slow handler never holds back another's
// reply.
func (j *job) start() {
	if j.held {
		j.back.Release()
		j.held = false
	}
}

func (j *job) cancel() { j.ctx.cancel(context.Canceled) }

// worker is a goroutine that runs jobs. Idle workers wait on their own
// channel (a plain receive, not a select) in a LIFO list, so the most
// recently used, warm one is picked first; one timer per responder retires
// workers idle for longer than workerIdle.
type worker struct {
	wake    chan bool     // capacity 1: true to work, false to exit
	since   time.Time     // when it went idle
	started bool          // its goroutine runs (set by run, before it starts)
	enc     *codec.Buffer // the worker's own, for the replies it encodes
	timed   bool          // serve measures its handlers (ran): the lent read loops' worker
	ran     time.Duration // how long the last handler it served ran, if timed
}

// Responder answers requests of the types it handles. Create it with New,
// add handlers with On or Handle, and Close it to drain gracefully.
type Responder struct {
	name string
	cfg  config
	node *mesh.Node
	log  *slog.Logger

	mu      sync.Mutex
	port    atomic.Pointer[mesh.Port] // set once, by the first On (under mu)
	exact   map[string]entry
	wild    []route
	active  int   // workers not idle: running a job, or waking to take one
	waking  int   // workers woken (or started) that have not taken a job yet
	backlog queue // accepted jobs no worker has taken yet
	// The jobs accepted and not finished (queued or running): a list
	// through job.prev and job.next, newest first, so that a request costs
	// no map insertion. index finds them by key for cancellations once many
	// run (see findLocked); it is dropped when none runs.
	runHead  *job
	nrunning int
	index    map[reqKey]*job
	closed   bool
	refuse   bool // drained: answer new requests "rejected" so they go elsewhere

	lent        worker        // the encoder of the job served on a lent read loop (serveLent)
	noLend      int           // requests still to send to workers after a slow lent one (mayLendLocked)
	lendBackoff int           // the last noLend set, doubled by each slow lent one in a row
	idleW       []*worker     // idle workers, most recently idle last
	idleFor     time.Duration // workerIdle; tests shorten it
	reaper      *time.Timer
	reaperArmed bool
	stopped     bool // workers exit instead of going idle

	routes atomic.Pointer[routeTable]
	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup
	idle   chan struct{} // signalled when active drops to zero

	// received and answered change on every request, under mu, which the
	// code that counts them holds anyway (as atomics, they would be cache
	// lines that the read loops and the workers take from each other).
	// received leaves out the requests counted in noHandler.
	received, answered uint64
	// ctxs is the rest of the last slab of contexts (see newCtxLocked),
	// under mu.
	ctxs []jobCtx

	errs, panics, noHandler, expired, canceled atomic.Uint64
}

type routeTable struct {
	exact map[string]entry
	wild  []route
}

// New creates a responder named name (a label shown in the catalogue). It
// appears in the catalogue once it has a handler.
func New(name string, opts ...Option) (*Responder, error) {
	cfg := defaults()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.concurrency < 1 {
		return nil, fmt.Errorf("%w: concurrency %d must be at least 1", ErrInvalidConfig, cfg.concurrency)
	}
	if cfg.node == nil {
		n, err := mesh.Default()
		if err != nil {
			return nil, err
		}
		cfg.node = n
	}
	log := cfg.logger
	if log == nil {
		log = cfg.node.Logger()
	}
	r := &Responder{
		name:    name,
		cfg:     cfg,
		node:    cfg.node,
		log:     log.With("responder", name),
		exact:   map[string]entry{},
		idle:    make(chan struct{}, 1),
		idleFor: workerIdle,
	}
	r.lent.timed = true
	r.ctx, r.stop = context.WithCancel(context.Background())
	r.routes.Store(&routeTable{exact: map[string]entry{}})
	return r, nil
}

// On registers h for requests of type typ. typ may be a pattern: "*"
// matches one dot-separated segment and a final "**" the rest, so
// On("**", h) answers every type. Exact types win over patterns; among
// patterns, the first registered wins. Registering a type again replaces
// its handler. On panics on an invalid pattern, like http.HandleFunc.
func (r *Responder) On(typ string, h HandlerFunc) {
	e := entry{}
	if h != nil {
		e.serve = func(ctx context.Context, req *Request, enc *codec.Buffer) error {
			res, err := h(ctx, req)
			if err != nil || res == nil {
				return err
			}
			return encodeReply(enc, res)
		}
	}
	r.on(typ, e)
}

// on registers e for typ (see On); a nil e.serve is a nil handler.
func (r *Responder) on(typ string, e entry) {
	if err := match.ValidPattern(typ); err != nil {
		panic(fmt.Errorf("%w: %v", ErrInvalidType, err))
	}
	if e.serve == nil {
		panic(fmt.Errorf("%w: nil handler for %q", ErrInvalidType, typ))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if match.IsWild(typ) {
		i := slices.IndexFunc(r.wild, func(rt route) bool { return rt.pattern == typ })
		if i >= 0 {
			r.wild[i].entry = e
		} else {
			r.wild = append(r.wild, route{typ, e})
		}
	} else {
		r.exact[typ] = e
	}
	rt := &routeTable{exact: make(map[string]entry, len(r.exact)), wild: slices.Clone(r.wild)}
	types := make([]string, 0, len(r.exact)+len(r.wild))
	for k, v := range r.exact {
		rt.exact[k] = v
		types = append(types, k)
	}
	for _, w := range r.wild {
		types = append(types, w.pattern)
	}
	slices.Sort(types)
	r.routes.Store(rt)
	if r.port.Load() == nil {
		p, err := r.node.Register(mesh.Component{
			Kind:      mesh.KindResponder,
			Name:      r.name,
			Key:       r.cfg.key,
			Namespace: r.cfg.namespace,
			Subset:    r.cfg.subset,
			Handles:   types,
		}, (*handler)(r))
		if err != nil {
			r.log.Error("register responder", "err", err)
			return
		}
		r.port.Store(p)
		return
	}
	r.port.Load().Update(func(c *mesh.Component) { c.Handles = types })
}

func (rt *routeTable) lookup(typ string) entry {
	if e, ok := rt.exact[typ]; ok {
		return e
	}
	for _, w := range rt.wild {
		if match.Match(w.pattern, typ) {
			return w.entry
		}
	}
	return entry{}
}

// Stats returns the responder's counters.
func (r *Responder) Stats() Stats {
	r.mu.Lock()
	inflight, received, answered := r.nrunning, r.received, r.answered
	r.mu.Unlock()
	noHandler := r.noHandler.Load()
	return Stats{
		Received: received + noHandler, Answered: answered, Errors: r.errs.Load(),
		Panics: r.panics.Load(), NoHandler: noHandler, Expired: r.expired.Load(),
		Canceled: r.canceled.Load(), InFlight: inflight,
	}
}

// handler receives the responder's frames from the node.
type handler Responder

func (h *handler) HandleFrame(from string, f *wire.Frame) {
	r := (*Responder)(h)
	switch f.Kind {
	case wire.KindRequest:
		r.accept(from, f)
	case wire.KindCancel:
		r.cancel(reqKey{from, f.Header.From, f.Header.Seq})
	}
}

func (h *handler) PeerDown(node string) {
	r := (*Responder)(h)
	// Replies to that node cannot be delivered any more: stop the work.
	var unheld []*wire.Writer
	defer func() {
		for _, b := range unheld {
			b.Release() // never blocks: fine on a read loop
		}
	}()
	r.mu.Lock()
	defer r.mu.Unlock()
	for j := r.runHead; j != nil; j = j.next {
		if j.key.node == node {
			j.cancel()
		}
	}
	live := r.backlog.jobs()
	out := r.backlog.buf[:0] // filtered in place
	for _, j := range live {
		if j.key.node == node {
			j.cancel()
			if j.held {
				unheld = append(unheld, j.back)
				j.held = false
			}
			r.removeLocked(j)
			j.free()
			continue
		}
		out = append(out, j)
	}
	clear(r.backlog.buf[len(out):])
	r.backlog = queue{buf: out}
}

// accept runs on the read loop: it must not block, but for the handler it
// may run on a lent read loop (see below).
func (r *Responder) accept(from string, f *wire.Frame) {
	key := reqKey{from, f.Header.From, f.Header.Seq}
	e := r.routes.Load().lookup(f.Header.Name)
	if e.serve == nil {
		r.noHandler.Add(1)
		r.post(key, &wire.Header{Status: wire.StatusNoHandler,
			Msg: fmt.Sprintf("responder %q has no handler for %q", r.name, f.Header.Name)})
		return
	}
	j := newJob(key, e, from, f)
	var deadline time.Time
	if f.Header.Deadline > 0 {
		deadline = time.Now().Add(time.Duration(f.Header.Deadline))
	}
	r.mu.Lock()
	r.received++
	if r.refuse {
		r.mu.Unlock()
		j.free()
		r.post(key, &wire.Header{Status: wire.StatusRejected, Msg: "responder is shutting down"})
		return
	}
	if j.ctx == nil {
		j.ctx = r.newCtxLocked()
	}
	j.ctx.deadline = deadline
	// Each job's context stands alone (no shared parent whose lock every
	// request would take); Close cancels the running jobs itself.
	r.addLocked(j)
	if r.nrunning == 1 && r.backlog.len() == 0 && r.waking == 0 && r.active < r.cfg.concurrency &&
		f.Lend != nil && r.mayLendLocked() && f.Lend() {
		// Nothing else waits or runs, and no other frame waits to be
		// read: the handler runs here, on the goroutine the mesh lends
		// (another one carries on reading if the handler takes long),
		// which saves waking a worker and the switch to it, the cost
		// that matters most to a caller with one request at a time.
		r.active++
		j.alone = true
		r.mu.Unlock()
		r.serveLent(j)
		return
	}
	r.backlog.push(j)
	// Wake one worker unless one is on its way already: a burst of requests
	// is taken by the workers that are awake, and each worker that takes a
	// job while more wait wakes the next, so a slow handler never delays
	// the others (see work).
	var w *worker
	if r.waking == 0 && r.active < r.cfg.concurrency {
		w = r.wakeLocked()
	}
	if r.waking > 0 && j.back != nil {
		// A worker will take it soon: replies written on its connection
		// meanwhile wait for that (see job.start), so the replies to one
		// burst share a write.
		j.held = true
		j.back.Hold()
	}
	r.mu.Unlock()
	r.run(w)
}

// Lending limits: a handler that kept a lent read loop for more than
// lendSlow (long enough for the mesh to start another) sends the next
// requests to the workers: lendSkip of them, twice as many after each
// further slow one in a row, up to lendSkipMax. So handlers that block
// seldom hold up their connection, and a handler slowed once by the
// scheduler costs little.
const (
	lendSlow    = 50 * time.Microsecond
	lendSkip    = 4
	lendSkipMax = 1024
)

// mayLendLocked reports whether a request may be served on a lent read
// loop, counting down the requests a slow one sent to the workers. r.mu is
// held.
func (r *Responder) mayLendLocked() bool {
	if r.noLend > 0 {
		r.noLend--
		return false
	}
	return true
}

// serveLent serves j on a read loop lent by the mesh (see accept), as a
// worker would, counted in r.active. Only one job runs at a time that way:
// it is the only job running when it starts, so r.lent is free. The
// handler's time decides the backoff; the reply's write is left out (it
// holds the read loop too, but a write is slow only when the scheduler
// delays it or the peer stops reading, which the mesh's guard covers, and
// counting it sent one request in six of row 1a to the workers in a traced
// run, against one in 600 without it).
func (r *Responder) serveLent(j *job) {
	answered := r.serve(j, &r.lent)
	slow := r.lent.ran > lendSlow
	r.mu.Lock()
	if slow {
		r.lendBackoff = min(max(lendSkip, 2*r.lendBackoff), lendSkipMax)
		r.noLend = r.lendBackoff
	} else {
		r.lendBackoff = 0
	}
	r.finishLocked(j, answered)
	var w *worker
	if r.backlog.len() > 0 && r.waking == 0 {
		// Requests came from other connections meanwhile, and no worker
		// could be woken for them (WithConcurrency(1)): this one's place
		// goes to a worker (counted before this one leaves).
		w = r.wakeLocked()
	}
	r.leaveLocked()
	r.mu.Unlock()
	r.run(w)
}

// finishLocked ends job j once served (answered: its reply went out).
// r.mu is held.
func (r *Responder) finishLocked(j *job, answered bool) {
	if answered {
		r.answered++
	}
	r.removeLocked(j)
	j.free()
}

// leaveLocked counts one fewer active worker (or lent read loop), telling
// Close when none is left. r.mu is held.
func (r *Responder) leaveLocked() {
	r.active--
	if r.active == 0 {
		select {
		case r.idle <- struct{}{}:
		default:
		}
	}
}

// wakeLocked counts one more worker waking, and returns the idle worker to
// wake, or a new one to start; run does that once r.mu is released.
func (r *Responder) wakeLocked() *worker {
	r.active++
	r.waking++
	if n := len(r.idleW); n > 0 {
		w := r.idleW[n-1]
		r.idleW[n-1] = nil
		r.idleW = r.idleW[:n-1]
		return w
	}
	r.wg.Add(1)
	return &worker{wake: make(chan bool, 1)} // started by run
}

// run wakes the worker wakeLocked returned (nil: none), or starts it.
func (r *Responder) run(w *worker) {
	switch {
	case w == nil:
	case w.started:
		w.wake <- true // never blocks: an idle worker's channel is empty
	default:
		w.started = true
		go r.work(w)
	}
}

// queue is a FIFO of jobs that reuses its array: popping does not lose
// capacity, so a steady flow of requests does not allocate.
type queue struct {
	buf  []*job
	head int // buf[head:] are the queued jobs
}

func (q *queue) len() int     { return len(q.buf) - q.head }
func (q *queue) jobs() []*job { return q.buf[q.head:] }

func (q *queue) push(j *job) {
	if q.head > 0 && len(q.buf) == cap(q.buf) && q.head >= len(q.buf)/2 {
		// Full, and at least half of it was popped: move the rest down.
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, j)
}

func (q *queue) pop() *job {
	j := q.buf[q.head]
	q.buf[q.head] = nil
	q.head++
	if q.head == len(q.buf) {
		q.buf, q.head = q.buf[:0], 0
	}
	return j
}

// workerIdle is how long a worker stays idle before it exits.
const workerIdle = 2 * time.Second

// work takes jobs from the backlog until it is empty, then waits idle to be
// woken again, so a busy responder reuses its goroutines (and their grown
// stacks). A worker starts as one that is waking (counted in r.waking).
func (r *Responder) work(w *worker) {
	defer r.wg.Done()
	var unheld []*wire.Writer
	r.mu.Lock()
	r.waking--
	for {
		if r.backlog.len() == 0 {
			r.leaveLocked()
			if r.stopped {
				r.mu.Unlock()
				return
			}
			w.since = time.Now()
			r.idleW = append(r.idleW, w)
			if !r.reaperArmed {
				r.reaperArmed = true
				if r.reaper == nil {
					r.reaper = time.AfterFunc(r.idleFor, r.reap)
				} else {
					r.reaper.Reset(r.idleFor)
				}
			}
			r.mu.Unlock()
			if !<-w.wake {
				return
			}
			r.mu.Lock()
			r.waking--
			continue
		}
		j := r.backlog.pop()
		// No other request waits or runs: no other reply is on its way to
		// join this one's write.
		j.alone = r.backlog.len() == 0 && r.nrunning == 1
		var next *worker
		if r.backlog.len() > 0 && r.waking == 0 {
			if r.active < r.cfg.concurrency {
				// More wait: wake the next worker, in case this job is slow.
				next = r.wakeLocked()
			} else {
				// Every worker is busy: the jobs that wait may wait long,
				// and must not hold back other replies meanwhile.
				for _, q := range r.backlog.jobs() {
					if q.held {
						unheld = append(unheld, q.back)
						q.held = false
					}
				}
			}
		}
		r.mu.Unlock()
		r.run(next)
		for i, b := range unheld {
			b.Release()
			unheld[i] = nil
		}
		unheld = unheld[:0]
		answered := r.serve(j, w)
		r.mu.Lock()
		r.finishLocked(j, answered)
	}
}

// indexAbove is how many jobs may run before a cancellation indexes them
// instead of walking their list.
const indexAbove = 64

// addLocked puts j in the list of running jobs (and the index, if there is
// one). r.mu is held.
func (r *Responder) addLocked(j *job) {
	j.prev, j.next = nil, r.runHead
	if j.next != nil {
		j.next.prev = j
	}
	r.runHead = j
	r.nrunning++
	if r.index != nil {
		r.index[j.key] = j
	}
}

// removeLocked takes j out of the list of running jobs. r.mu is held.
func (r *Responder) removeLocked(j *job) {
	if j.prev != nil {
		j.prev.next = j.next
	} else {
		r.runHead = j.next
	}
	if j.next != nil {
		j.next.prev = j.prev
	}
	j.prev, j.next = nil, nil
	r.nrunning--
	if r.index != nil {
		if r.index[j.key] == j {
			delete(r.index, j.key)
		}
		if r.nrunning == 0 {
			r.index = nil
		}
	}
}

// findLocked returns the running job with key k, or nil. A few running jobs
// are walked; with more, the first cancellation indexes them, and the index
// is kept up to date until none runs, so a storm of cancellations on a busy
// responder costs a map lookup each. r.mu is held.
func (r *Responder) findLocked(k reqKey) *job {
	if r.index == nil {
		if r.nrunning <= indexAbove {
			for j := r.runHead; j != nil; j = j.next {
				if j.key == k {
					return j
				}
			}
			return nil
		}
		r.index = make(map[reqKey]*job, r.nrunning)
		for j := r.runHead; j != nil; j = j.next {
			r.index[j.key] = j
		}
	}
	return r.index[k]
}

// reap retires the workers idle for workerIdle or longer (the oldest are
// first in the list) and re-arms itself for the next one.
func (r *Responder) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reaperArmed = false
	if r.stopped {
		return
	}
	now := time.Now()
	k := 0
	for k < len(r.idleW) && now.Sub(r.idleW[k].since) >= r.idleFor {
		r.idleW[k].wake <- false
		k++
	}
	n := copy(r.idleW, r.idleW[k:])
	clear(r.idleW[n:])
	r.idleW = r.idleW[:n]
	if n > 0 {
		r.reaperArmed = true
		r.reaper.Reset(r.idleFor - now.Sub(r.idleW[0].since))
	}
}

// stopWorkers makes every worker exit once it has nothing left to do.
func (r *Responder) stopWorkers() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	if r.reaper != nil {
		r.reaper.Stop()
		r.reaperArmed = false
	}
	for i, w := range r.idleW {
		w.wake <- false
		r.idleW[i] = nil
	}
	r.idleW = nil
}

// serve runs j's handler and sends its reply; it reports whether a reply
// was sent.
func (r *Responder) serve(j *job, w *worker) (answered bool) {
	j.start()
	defer j.cancel()
	w.ran = 0
	if err := j.ctx.Err(); err != nil {
		// The caller's deadline passed or it gave up while the request
		// waited: the handler never runs.
		if err == context.DeadlineExceeded {
			r.expired.Add(1)
		} else {
			r.canceled.Add(1)
		}
		return
	}
	if w.enc == nil {
		w.enc = codec.NewBuffer()
	}
	defer w.enc.Trim()
	var start time.Time
	if w.timed {
		start = time.Now()
	}
	err := r.call(j, w.enc)
	if w.timed {
		w.ran = time.Since(start)
	}
	if j.ctx.Err() == context.DeadlineExceeded {
		// The caller's deadline, measured from the request's arrival, is
		// later than the one the caller itself keeps: it has given up
		// already, so a reply (often just the handler's "deadline
		// exceeded") would only race its timeout error.
		r.expired.Add(1)
		return
	}
	hdr := wire.Header{Status: wire.StatusOK}
	var payload []byte
	if err != nil {
		r.errs.Add(1)
		hdr.Status = wire.StatusError
		hdr.Code, hdr.Msg = errorCode(err)
	} else {
		payload = w.enc.Bytes() // written (copied) by the time reply returns
	}
	ferr := r.reply(j, &hdr, payload)
	if ferr != nil && len(payload) > 0 {
		// Most likely too large for a frame: say so instead of going silent.
		ferr = r.reply(j, &wire.Header{Status: wire.StatusTooLarge,
			Msg: fmt.Sprintf("reply of %d bytes to %q could not be sent: %v", len(payload), j.req.Type, ferr)}, nil)
	}
	return ferr == nil
}

// call runs j's handler, which leaves its encoded reply in enc, turning a
// panic (in the handler, or in a marshaler its reply's type brings) into
// an error.
func (r *Responder) call(j *job, enc *codec.Buffer) (err error) {
	defer func() {
		if p := recover(); p != nil {
			r.panics.Add(1)
			r.log.Error("handler panicked", "type", j.req.Type, "panic", p, "stack", string(debug.Stack()))
			err = &Error{Code: "panic", Message: fmt.Sprintf("handler for %q panicked: %v", j.req.Type, p)}
		}
	}()
	return j.serve(j.ctx, j.req, enc)
}

// reply answers j on the connection it came in on.
func (r *Responder) reply(j *job, h *wire.Header, payload []byte) error {
	p := r.port.Load()
	if p == nil {
		return ErrClosed
	}
	h.To, h.Seq = j.key.from, j.key.seq
	// No per-reply timeout: a stalled peer is cut off by the connection's
	// write deadline, and Close cancels r.ctx.
	err := p.Reply(r.ctx, j.back, j.key.node, h, payload, j.alone)
	if err != nil {
		r.log.Debug("reply not sent", "to", j.key.node, "err", err)
	}
	return err
}

// post answers from the read loop without blocking.
func (r *Responder) post(key reqKey, h *wire.Header) {
	p := r.port.Load()
	if p == nil {
		return
	}
	h.To, h.Seq = key.from, key.seq
	if err := p.Post(key.node, wire.KindResponse, h, nil); err != nil {
		r.log.Debug("refusal not sent", "to", key.node, "err", err)
	}
}

func (r *Responder) cancel(key reqKey) {
	r.mu.Lock()
	if j := r.findLocked(key); j != nil {
		j.cancel()
	}
	r.mu.Unlock()
}

// Close drains the responder: it is marked draining in the catalogue so
// requesters stop choosing it, keeps serving for the drain grace, waits for
// running and queued handlers to finish, then leaves the catalogue. Requests
// that arrive after that are refused and resent elsewhere by the requester,
// so a rolling restart loses none. If ctx ends first, running handlers are
// cancelled and Close returns ctx's error without waiting for them.
func (r *Responder) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	p := r.port.Load()
	r.mu.Unlock()
	if p == nil {
		r.stop()
		r.stopWorkers()
		return nil
	}
	p.Update(func(c *mesh.Component) { c.State = mesh.StateDraining })
	var err error
	grace := time.NewTimer(r.cfg.drainGrace)
	select {
	case <-grace.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	grace.Stop()
	for {
		r.mu.Lock()
		busy := r.active > 0 || r.backlog.len() > 0
		if !busy || err != nil {
			r.refuse = true
		}
		r.mu.Unlock()
		if !busy || err != nil {
			break
		}
		select {
		case <-r.idle:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	p.Close()
	r.stop()
	r.stopWorkers()
	r.mu.Lock()
	for j := r.runHead; j != nil; j = j.next { // handlers still running after a timeout
		j.cancel()
	}
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("responder: close %q: %w", r.name, err)
	}
	r.wg.Wait()
	return nil
}

// NodeClosing is called by the node as it closes: the component closes at
// once, failing what it still holds.
func (h *handler) NodeClosing() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	(*Responder)(h).Close(ctx)
}
