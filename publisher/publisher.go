package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/warrenmesh/warren/internal/codec"
	"github.com/warrenmesh/warren/internal/match"
	"github.com/warrenmesh/warren/internal/wire"
	"github.com/warrenmesh/warren/mesh"
)

// Errors returned by a Publisher. Returned errors wrap them (test with
// errors.Is); an error from a context that ended wraps ctx's error instead.
var (
	// ErrClosed is returned by calls on a closed publisher.
	ErrClosed = errors.New("publisher: closed")
	// ErrInvalidTopic reports a malformed topic: topics are dot-separated
	// non-empty segments without wildcards, such as "payment.completed".
	ErrInvalidTopic = errors.New("publisher: invalid topic")
	// ErrEncode reports a payload that cannot be encoded.
	ErrEncode = errors.New("publisher: cannot encode payload")
)

// Stats counts a publisher's work since it started.
type Stats struct {
	// Published counts events accepted by Publish (valid topic, encodable
	// payload), whether or not anyone received them.
	Published uint64
	// Delivered counts event frames sent, one per receiving subscriber.
	Delivered uint64
	// NoSubscriber counts events dropped because no subscriber matched.
	NoSubscriber uint64
	// DroppedFull counts events not sent to a subscriber that asked to drop
	// rather than wait (subscriber.WithDropWhenFull) while its buffer was
	// full.
	DroppedFull uint64
	// Failed counts events that could not reach a subscriber: its node was
	// unreachable, or it went away while Publish waited for buffer space.
	Failed uint64
}

const (
	// defaultWindow is the credit window of a subscriber that advertises
	// no buffer size; maxWindow bounds what a subscriber may advertise.
	defaultWindow = 1024
	maxWindow     = 1 << 24
	// maxTopics bounds the per-view route cache and maxCounters the
	// round-robin counters of groups.
	maxTopics   = 4096
	maxCounters = 4096
	// postBudget bounds the bytes of events queued for one subscriber
	// without waiting for the connection's back-pressure: events of at most
	// postBudget/window bytes are queued at once (see sendTo), larger ones
	// wait for the writer like any other frame.
	postBudget = 1 << 20
)

// Publisher sends events to the subscribers whose patterns match their
// topic. Create it with New; it is safe for concurrent use.
type Publisher struct {
	name   string
	node   *mesh.Node
	port   *mesh.Port
	log    *slog.Logger
	me     mesh.Component // environment, key and namespace, for Peers
	closed atomic.Bool
	done   chan struct{} // closed by Close: wakes Publish calls that wait

	// Routing state, rebuilt when the node's view changes.
	mu     sync.Mutex
	view   *mesh.View
	cands  []cand
	topics map[string]*route
	last   *route                   // the route of the most recent topic, which is often the next one
	rr     map[rrKey]*atomic.Uint64 // round-robin position of each (topic, group), kept across views

	// Flow-control state of every subscriber in view, kept across views.
	smu  sync.Mutex
	subs map[subKey]*target

	// Publish calls waiting for credits sleep on waitCh, which is closed
	// (and replaced) when credits arrive while waiters > 0.
	waitMu  sync.Mutex
	waitCh  chan struct{}
	waiters atomic.Int32

	published, delivered, noSubscriber, droppedFull, failed atomic.Uint64
}

type subKey struct {
	node string
	id   uint64
}

type rrKey struct {
	topic, group string
}

// cand is a subscriber this publisher may send to in the current view.
type cand struct {
	t       *target
	handles []string // aliases the immutable view
	group   string
}

// route is where one topic's events go in one view: every solo subscriber,
// and one member of each group.
type route struct {
	topic  string
	solo   []*target
	groups []group
}

type group struct {
	name    string
	members []*target
	rr      *atomic.Uint64
}

func (r *route) empty() bool { return len(r.solo) == 0 && len(r.groups) == 0 }

func (r *route) group(name string) *group {
	for i := range r.groups {
		if r.groups[i].name == name {
			return &r.groups[i]
		}
	}
	return nil
}

// target is the flow-control state of one subscriber: the credits this
// publisher may still spend on it. Every event sent takes one event credit
// and, when the subscriber bounds its buffer in bytes, its size in byte
// credits; the subscriber returns them as it handles events.
type target struct {
	key        subKey
	window     int64 // event credits when none are outstanding
	byteWindow int64 // byte credits when none are outstanding; 0 = no byte bound
	postMax    int   // largest payload queued without back-pressure
	dropFull   bool
	credits    atomic.Uint64 // packed: see packCredits
	gone       atomic.Bool
	seen       uint64 // view generation that last listed it; guarded by Publisher.smu
}

// Event and byte credits share one word, so one compare-and-swap takes
// both: the event credits in the top 25 bits (maxWindow is 1<<24), the
// byte credits, which may go below zero, in the low 39 bits offset by
// byteBias (maxByteWindow is far below byteBias, and an event is at most a
// frame, far less than byteBias, so the field never overflows).
const (
	byteBits      = 39
	byteMask      = 1<<byteBits - 1
	byteBias      = 1 << (byteBits - 1)
	maxByteWindow = 1 << 37
)

func packCredits(events, bytes int64) uint64 {
	return uint64(events)<<byteBits | uint64(bytes+byteBias)&byteMask
}

func unpackCredits(c uint64) (events, bytes int64) {
	return int64(c >> byteBits), int64(c&byteMask) - byteBias
}

// reset gives t its whole window: nothing is outstanding.
func (t *target) reset() { t.credits.Store(packCredits(t.window, t.byteWindow)) }

// take spends the credits of an event of size bytes, if t has them: one
// event credit, and with a byte window, byte credits of at least the
// event's size or half the window, whichever is less. So an event larger
// than the window still goes (once at most half the window is
// outstanding), and at most max(window, window/2 + the event) bytes are
// ever outstanding.
func (t *target) take(size int) bool {
	n := int64(size)
	for {
		c := t.credits.Load()
		ev, by := unpackCredits(c)
		if ev <= 0 {
			return false
		}
		if t.byteWindow > 0 {
			if by < min(n, t.byteWindow/2) {
				return false
			}
			by -= n
		}
		if t.credits.CompareAndSwap(c, packCredits(ev-1, by)) {
			return true
		}
	}
}

// give returns credits of events and bytes, never beyond the windows.
func (t *target) give(events, bytes int64) {
	for {
		c := t.credits.Load()
		ev, by := unpackCredits(c)
		nev := min(ev+max(events, 0), t.window)
		nby := by
		if t.byteWindow > 0 {
			nby = min(by+max(bytes, 0), t.byteWindow)
		}
		nc := packCredits(nev, nby)
		if nc == c || t.credits.CompareAndSwap(c, nc) {
			return
		}
	}
}

// eventSize is what an event costs in byte credits, as the subscriber
// counts it: its payload and its topic.
func eventSize(topic string, body []byte) int { return len(topic) + len(body) }

// pickReady takes a credit from the next group member in round-robin order
// that has one, or returns nil.
func (g *group) pickReady(size int) *target {
	n := uint64(len(g.members))
	start := g.rr.Add(1) - 1
	for i := range n {
		if t := g.members[(start+i)%n]; t.take(size) {
			return t
		}
	}
	return nil
}

func (g *group) allDropFull() bool {
	for _, t := range g.members {
		if !t.dropFull {
			return false
		}
	}
	return true
}

// New creates a publisher named name (a label shown in the catalogue) and
// registers it on its node.
func New(name string, opts ...Option) (*Publisher, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
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
	p := &Publisher{
		name:   name,
		node:   cfg.node,
		log:    log.With("publisher", name),
		me:     mesh.Component{Environment: cfg.node.Environment(), Key: cfg.key, Namespace: cfg.namespace},
		done:   make(chan struct{}),
		topics: map[string]*route{},
		rr:     map[rrKey]*atomic.Uint64{},
		subs:   map[subKey]*target{},
		waitCh: make(chan struct{}),
	}
	port, err := cfg.node.Register(mesh.Component{
		Kind:      mesh.KindPublisher,
		Name:      name,
		Key:       cfg.key,
		Namespace: cfg.namespace,
	}, (*handler)(p))
	if err != nil {
		return nil, fmt.Errorf("publisher: register %q: %w", name, err)
	}
	p.port = port
	return p, nil
}

// Publish sends an event to every subscriber (same environment, key and
// namespace) with a pattern matching topic, and to one member of each group
// of such subscribers, in turn. Each subscriber gets the event once, even
// when several of its patterns match. The payload is encoded once with
// msgpack (json struct tags are honoured); nil sends no payload.
//
// Delivery is at most once and not durable: an event that no subscriber
// matches is dropped and counted in Stats.
//
// Each subscriber has a bounded buffer. When one is full, Publish waits for
// it to make room (after sending to the others), until ctx ends, in which
// case it returns an error wrapping ctx's error; subscribers created with
// WithDropWhenFull instead lose the event, counted in Stats.DroppedFull.
// Events from one goroutine reach each subscriber in the order published.
func (p *Publisher) Publish(ctx context.Context, topic string, payload any) error {
	if p.closed.Load() {
		return ErrClosed
	}
	r, err := p.routeFor(topic)
	if err != nil {
		return err
	}
	buf, err := codec.Encode(payload)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrEncode, err)
	}
	defer buf.Release()
	p.published.Add(1)
	if r.empty() {
		p.noSubscriber.Add(1)
		return nil
	}
	body := buf.Bytes()
	size := eventSize(topic, body)

	// Subscribers with room and a connection get the event at once; those
	// still to be dialled (or too large an event to queue) come next, and
	// those without room are waited for last, so that neither a full one
	// nor one slow to connect holds up the others, even when ctx ends
	// while Publish waits for it.
	var sendLater, waitSolo [4]*target
	var waitGroups [4]string
	later, ws, wg := sendLater[:0], waitSolo[:0], waitGroups[:0]
	for _, t := range r.solo {
		switch {
		case t.take(size):
			if !p.post(t, topic, body) {
				later = append(later, t)
			}
		case t.dropFull:
			p.droppedFull.Add(1)
		default:
			ws = append(ws, t)
		}
	}
	for i := range r.groups {
		g := &r.groups[i]
		if t := g.pickReady(size); t != nil {
			if !p.post(t, topic, body) {
				later = append(later, t)
			}
		} else if g.allDropFull() {
			p.droppedFull.Add(1)
		} else {
			wg = append(wg, g.name)
		}
	}
	for i, t := range later {
		if err := p.sendTo(ctx, t, topic, body); err != nil {
			// The others were given a credit: they get the event if they
			// can without waiting, or the credit back.
			for _, u := range later[i+1:] {
				if !p.post(u, topic, body) {
					u.give(1, int64(size))
				}
			}
			p.notify()
			return err
		}
	}
	for _, t := range ws {
		if err := p.waitSolo(ctx, topic, t, body); err != nil {
			return err
		}
	}
	for _, name := range wg {
		if err := p.waitGroup(ctx, topic, name, body); err != nil {
			return err
		}
	}
	return nil
}

// post queues one event frame for t, which has been given a credit, when
// it can without waiting (a connection exists, the frame is small), and
// reports whether it did.
func (p *Publisher) post(t *target, topic string, body []byte) bool {
	if len(body)+len(topic) > t.postMax {
		return false
	}
	h := wire.Header{To: t.key.id, Name: topic}
	if p.port.Post(t.key.node, wire.KindEvent, &h, body) != nil {
		return false
	}
	p.delivered.Add(1)
	return true
}

// sendTo sends one event frame to t, which has been given a credit. It
// returns an error only when Publish must fail: a frame too large, ctx
// ended, or the publisher or its node closed.
func (p *Publisher) sendTo(ctx context.Context, t *target, topic string, body []byte) error {
	h := wire.Header{To: t.key.id, Name: topic}
	var err error
	if len(body)+len(topic) <= t.postMax {
		// Queue the frame without writing it ourselves: a background flusher
		// writes what accumulates meanwhile in one system call, so even a
		// single goroutine's events are batched. The credit window bounds
		// what may queue this way to postBudget per subscriber. Without a
		// connection yet, Send dials.
		if err = p.port.Post(t.key.node, wire.KindEvent, &h, body); err != nil {
			err = p.port.Send(ctx, t.key.node, wire.KindEvent, &h, body)
		}
	} else {
		err = p.port.Send(ctx, t.key.node, wire.KindEvent, &h, body)
	}
	if err == nil {
		p.delivered.Add(1)
		return nil
	}
	t.give(1, int64(eventSize(topic, body)))
	p.notify()
	switch {
	case errors.Is(err, mesh.ErrClosed) && p.closed.Load():
		return ErrClosed
	case errors.Is(err, wire.ErrFrameTooLarge), errors.Is(err, mesh.ErrClosed), ctx.Err() != nil:
		return fmt.Errorf("publisher: publish %q: %w", topic, err)
	}
	p.failed.Add(1)
	p.log.Debug("event not sent", "topic", topic, "node", t.key.node, "err", err)
	return nil
}

// waitSolo waits for a credit of t, then sends. A subscriber that leaves
// the route meanwhile (it closed, its node left or became unreachable) is
// given up and counted as failed.
func (p *Publisher) waitSolo(ctx context.Context, topic string, t *target, body []byte) error {
	for {
		size := eventSize(topic, body)
		ok, err := p.await(ctx, topic, func() bool { return t.take(size) })
		if err != nil {
			return err
		}
		if ok {
			return p.sendTo(ctx, t, topic, body)
		}
		r, err := p.routeFor(topic)
		if err != nil {
			return err
		}
		if t.gone.Load() || !containsTarget(r.solo, t) {
			p.failed.Add(1)
			return nil
		}
	}
}

// waitGroup waits until a member of the group has a credit, then sends to
// it. Members may come and go meanwhile.
func (p *Publisher) waitGroup(ctx context.Context, topic, name string, body []byte) error {
	for {
		r, err := p.routeFor(topic)
		if err != nil {
			return err
		}
		g := r.group(name)
		if g == nil {
			p.failed.Add(1)
			return nil
		}
		var picked *target
		size := eventSize(topic, body)
		ok, err := p.await(ctx, topic, func() bool { picked = g.pickReady(size); return picked != nil })
		if err != nil {
			return err
		}
		if ok {
			return p.sendTo(ctx, picked, topic, body)
		}
	}
}

// await waits until ready (tried after registering as a waiter, so no
// wake-up is missed) succeeds, the view changes (false, nil), ctx ends or
// the publisher closes.
func (p *Publisher) await(ctx context.Context, topic string, ready func() bool) (bool, error) {
	v := p.node.View()
	p.waitMu.Lock()
	ch := p.waitCh
	p.waiters.Add(1)
	p.waitMu.Unlock()
	defer p.waiters.Add(-1)
	for {
		if ready() {
			return true, nil
		}
		select {
		case <-ch:
			p.waitMu.Lock()
			ch = p.waitCh
			p.waitMu.Unlock()
		case <-v.Changed():
			return false, nil
		case <-ctx.Done():
			return false, fmt.Errorf("publisher: publish %q: waiting for a full subscriber: %w", topic, ctx.Err())
		case <-p.done:
			return false, ErrClosed
		}
	}
}

// notify wakes the Publish calls waiting for credits, if any.
func (p *Publisher) notify() {
	if p.waiters.Load() == 0 {
		return
	}
	p.waitMu.Lock()
	close(p.waitCh)
	p.waitCh = make(chan struct{})
	p.waitMu.Unlock()
}

func containsTarget(ts []*target, t *target) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// routeFor returns where topic's events go in the current view.
func (p *Publisher) routeFor(topic string) (*route, error) {
	v := p.node.View()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.view == nil || v.Gen > p.view.Gen {
		p.rebuildLocked(v)
	}
	if r := p.last; r != nil && r.topic == topic {
		return r, nil
	}
	if r := p.topics[topic]; r != nil {
		p.last = r
		return r, nil
	}
	if err := match.ValidName(topic); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidTopic, err)
	}
	r := p.buildRouteLocked(topic)
	if len(p.topics) >= maxTopics {
		clear(p.topics)
	}
	p.topics[topic] = r
	p.last = r
	return r, nil
}

// rebuildLocked refreshes the candidate subscribers from view v, keeping
// the flow-control state of those still there. p.mu must be held.
func (p *Publisher) rebuildLocked(v *mesh.View) {
	clear(p.cands)
	p.cands = p.cands[:0]
	p.smu.Lock()
	for i := range v.Components {
		c := &v.Components[i]
		if c.Kind != mesh.KindSubscriber || !p.me.Peers(c) {
			continue
		}
		k := subKey{c.Node, c.ID}
		t := p.subs[k]
		if t == nil {
			w := int64(c.Buffer)
			if w <= 0 {
				w = defaultWindow
			}
			w = min(w, maxWindow)
			t = &target{key: k, window: w, byteWindow: min(max(c.BufferBytes, 0), maxByteWindow),
				postMax: int(postBudget / w), dropFull: c.DropFull}
			t.reset()
			p.subs[k] = t
		}
		t.seen = v.Gen
		if c.State != mesh.StateActive || v.Unreachable[c.Node] || len(c.Handles) == 0 {
			continue
		}
		p.cands = append(p.cands, cand{t: t, handles: c.Handles, group: c.Group})
	}
	for k, t := range p.subs {
		if t.seen != v.Gen {
			t.gone.Store(true)
			delete(p.subs, k)
		}
	}
	p.smu.Unlock()
	clear(p.topics)
	p.last = nil
	p.view = v
}

// buildRouteLocked computes topic's route from the candidates. p.mu must be
// held.
func (p *Publisher) buildRouteLocked(topic string) *route {
	r := &route{topic: topic}
	for _, c := range p.cands {
		if !match.Any(c.handles, topic) {
			continue
		}
		if c.group == "" {
			r.solo = append(r.solo, c.t)
			continue
		}
		if g := r.group(c.group); g != nil {
			g.members = append(g.members, c.t)
			continue
		}
		r.groups = append(r.groups, group{name: c.group, members: []*target{c.t}})
	}
	for i := range r.groups {
		g := &r.groups[i]
		k := rrKey{topic, g.name}
		ctr := p.rr[k]
		if ctr == nil {
			if len(p.rr) >= maxCounters {
				clear(p.rr)
			}
			ctr = new(atomic.Uint64)
			p.rr[k] = ctr
		}
		g.rr = ctr
	}
	return r
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() Stats {
	return Stats{
		Published:    p.published.Load(),
		Delivered:    p.delivered.Load(),
		NoSubscriber: p.noSubscriber.Load(),
		DroppedFull:  p.droppedFull.Load(),
		Failed:       p.failed.Load(),
	}
}

// Close removes the publisher from the catalogue. Publish calls waiting for
// buffer space return ErrClosed, as do later calls. Close does not wait:
// events already handed to the connection are still delivered.
func (p *Publisher) Close(ctx context.Context) error {
	if !p.closed.CompareAndSwap(false, true) {
		return nil
	}
	p.port.Close()
	close(p.done)
	return nil
}

// handler receives the publisher's frames from the node: credits.
type handler Publisher

func (h *handler) HandleFrame(from string, f *wire.Frame) {
	p := (*Publisher)(h)
	if f.Kind != wire.KindCredit || f.Header.Seq == 0 {
		return
	}
	p.smu.Lock()
	t := p.subs[subKey{from, f.Header.From}]
	p.smu.Unlock()
	if t == nil {
		return
	}
	// Seq carries the events credited, Deadline their bytes.
	t.give(int64(min(f.Header.Seq, uint64(t.window))), min(f.Header.Deadline, maxByteWindow))
	p.notify()
}

// PeerDown resets the windows of the subscribers on node: events in flight
// on the lost connection will never be acknowledged.
func (h *handler) PeerDown(node string) {
	p := (*Publisher)(h)
	p.smu.Lock()
	for k, t := range p.subs {
		if k.node == node {
			t.reset()
		}
	}
	p.smu.Unlock()
	p.notify()
}

// NodeClosing is called by the node as it closes: the component closes at
// once, failing what it still holds.
func (h *handler) NodeClosing() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	(*Publisher)(h).Close(ctx)
}
