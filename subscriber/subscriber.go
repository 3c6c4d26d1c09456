package subscriber

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/internal/codec"
	"github.com/warrenmesh/warren/internal/match"
	"github.com/warrenmesh/warren/mesh"
)

// Errors returned by a Subscriber; returned errors wrap them (test with
// errors.Is).
var (
	// ErrInvalidConfig wraps configuration errors.
	ErrInvalidConfig = errors.New("subscriber: invalid configuration")
	// ErrInvalidPattern reports a malformed topic pattern given to On.
	ErrInvalidPattern = errors.New("subscriber: invalid topic pattern")
	// ErrDecode reports a payload that does not decode into the value given.
	ErrDecode = errors.New("subscriber: cannot decode payload")
)

// HandlerFunc handles one event. Handlers of a subscriber run one at a time,
// on the subscriber's delivery goroutine, in the order events arrived; ctx
// is cancelled when Close gives up waiting for them.
//
// msg, and the payload behind it, are valid only until the handler returns:
// call msg.Decode inside the handler (the decoded value is the handler's to
// keep), and do not retain msg.
type HandlerFunc func(ctx context.Context, msg *Message)

// Message is one event.
type Message struct {
	// Topic is the event's full topic, as published, even when the
	// handler was registered with a wildcard pattern.
	Topic string
	// From is the ID of the node of the publisher.
	From    string
	payload []byte
}

// Decode decodes the event's payload into v, a non-nil pointer. An event
// published with a nil payload leaves v unchanged.
func (m *Message) Decode(v any) error {
	if err := codec.Unmarshal(m.payload, v); err != nil {
		return fmt.Errorf("%w of %q: %w", ErrDecode, m.Topic, err)
	}
	return nil
}

// Payload returns the raw msgpack payload, valid only until the handler
// returns.
func (m *Message) Payload() []byte { return m.payload }

// Handle registers a typed handler: each event's payload is decoded into a
// T. An event that does not decode is logged (at most once a second) and
// counted in Stats.DecodeErrors, and fn does not run for it.
func Handle[T any](s *Subscriber, pattern string, fn func(context.Context, T)) {
	s.On(pattern, func(ctx context.Context, m *Message) {
		var v T
		if err := m.Decode(&v); err != nil {
			s.decodeFailed(err)
			return
		}
		fn(ctx, v)
	})
}

// Stats counts a subscriber's work since it started.
type Stats struct {
	// Received counts events accepted into the buffer.
	Received uint64
	// Delivered counts events that ran at least one handler.
	Delivered uint64
	// Unmatched counts events for which no handler matched.
	Unmatched uint64
	// Panics counts handler panics recovered.
	Panics uint64
	// DecodeErrors counts events a Handle handler could not decode.
	DecodeErrors uint64
	// Overflow counts events dropped on arrival because a publisher sent
	// more than the buffer allows; only a misbehaving publisher (or
	// repeated connection losses) can cause it.
	Overflow uint64
	// Abandoned counts events dropped unhandled because Close's ctx ended.
	Abandoned uint64
	// Queued is the number of events waiting for the handlers now.
	Queued int
}

type route struct {
	pattern string
	h       HandlerFunc
}

// routeTable is an immutable snapshot of the handlers, replaced by On.
type routeTable struct {
	routes []route
}

// Subscriber receives the events whose topic matches its patterns. Create
// it with New, add handlers with On or Handle, and Close it when done.
type Subscriber struct {
	name        string
	cfg         config
	node        *mesh.Node
	log         *slog.Logger
	creditBatch int // credits returned per credit frame when busy
	idleCredits int // least credits returned when the queue runs empty
	hardLimit   int // events queued per publisher beyond which arrivals are dropped
	// The same in bytes (payloads and topics) for the byte bound.
	byteBatch, idleBytes, hardBytes int64

	mu       sync.Mutex
	port     *mesh.Port
	routes   []route
	patterns []string
	closed   bool

	table atomic.Pointer[routeTable]

	queue // events between the read loops and the delivery goroutine

	ctx     context.Context // handlers' context, cancelled by Close
	cancel  context.CancelFunc
	abandon atomic.Bool   // Close gave up: drop what is left
	done    chan struct{} // closed when the delivery goroutine ends

	delivered, unmatched, panics, decodeErrs, abandoned atomic.Uint64
	lastDecodeLog                                       atomic.Int64
}

// New creates a subscriber named name (a label shown in the catalogue). It
// appears in the catalogue, with its patterns, from its first On.
func New(name string, opts ...Option) (*Subscriber, error) {
	cfg := config{buffer: DefaultBuffer, bufBytes: DefaultBufferBytes}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.buffer < 1 || cfg.buffer > MaxBuffer {
		return nil, fmt.Errorf("%w: buffer %d must be between 1 and %d", ErrInvalidConfig, cfg.buffer, MaxBuffer)
	}
	if cfg.bufBytes < 1 || cfg.bufBytes > MaxBufferBytes {
		return nil, fmt.Errorf("%w: buffer of %d bytes must be between 1 and %d", ErrInvalidConfig, cfg.bufBytes, int64(MaxBufferBytes))
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
	s := &Subscriber{
		name:        name,
		cfg:         cfg,
		node:        cfg.node,
		log:         log.With("subscriber", name),
		creditBatch: max(1, cfg.buffer/4),
		idleCredits: max(1, cfg.buffer/32),
		hardLimit:   2 * cfg.buffer,
		byteBatch:   max(1, cfg.bufBytes/4),
		idleBytes:   max(1, cfg.bufBytes/32),
		hardBytes:   2 * cfg.bufBytes,
		done:        make(chan struct{}),
	}
	s.queue.init()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.table.Store(&routeTable{})
	return s, nil
}

// On registers h for events whose topic matches pattern: dot-separated
// segments where "*" matches exactly one segment and a final "**" one or
// more, so "payment.*" matches "payment.completed" and "**" matches every
// topic. Every handler whose pattern matches runs once per event, in the
// order registered. On panics on an invalid pattern or a nil handler, like
// http.HandleFunc. On after Close does nothing.
func (s *Subscriber) On(pattern string, h HandlerFunc) {
	if err := match.ValidPattern(pattern); err != nil {
		panic(fmt.Errorf("%w: %w", ErrInvalidPattern, err))
	}
	if h == nil {
		panic(fmt.Errorf("%w: nil handler for %q", ErrInvalidPattern, pattern))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.routes = append(s.routes, route{pattern, h})
	s.table.Store(&routeTable{routes: slices.Clone(s.routes)})
	if slices.Contains(s.patterns, pattern) {
		return
	}
	s.patterns = append(s.patterns, pattern)
	slices.Sort(s.patterns)
	patterns := slices.Clone(s.patterns)
	if s.port != nil {
		if err := s.port.Update(func(c *mesh.Component) { c.Handles = patterns }); err != nil {
			s.log.Error("subscriber: cannot advertise pattern", "pattern", pattern, "err", err)
		}
		return
	}
	// Registered only now, so that no subscriber without patterns is ever
	// visible.
	p, err := s.node.Register(mesh.Component{
		Kind:        mesh.KindSubscriber,
		Name:        s.name,
		Key:         s.cfg.key,
		Namespace:   s.cfg.namespace,
		Handles:     patterns,
		Group:       s.cfg.group,
		Buffer:      s.cfg.buffer,
		BufferBytes: s.cfg.bufBytes,
		DropFull:    s.cfg.dropFull,
	}, (*handler)(s))
	if err != nil {
		s.log.Error("subscriber: cannot register", "err", err)
		return
	}
	s.port = p
	go s.run(p)
}

// Stats returns the subscriber's counters.
func (s *Subscriber) Stats() Stats {
	s.qmu.Lock()
	received, overflow := s.received, s.overflow
	s.qmu.Unlock()
	st := Stats{
		Received:     received,
		Delivered:    s.delivered.Load(),
		Unmatched:    s.unmatched.Load(),
		Panics:       s.panics.Load(),
		DecodeErrors: s.decodeErrs.Load(),
		Overflow:     overflow,
		Abandoned:    s.abandoned.Load(),
	}
	if done := st.Delivered + st.Unmatched + st.Abandoned; received > done {
		st.Queued = int(received - done)
	}
	return st
}

// Close removes the subscriber from the catalogue, so publishers stop
// sending to it, and waits for the handlers to finish the events already
// buffered. If ctx ends first, the handlers' context is cancelled, events
// still waiting are dropped (counted in Stats.Abandoned) and Close returns
// an error wrapping ctx's error; the delivery goroutine then ends as soon as
// the running handler returns. Close may be called again to wait anew.
func (s *Subscriber) Close(ctx context.Context) error {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	port := s.port
	s.mu.Unlock()
	if port == nil {
		s.cancel()
		return nil
	}
	if first {
		port.Close()
		s.queue.close()
	}
	select {
	case <-s.done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.abandon.Store(true)
		s.cancel()
		return fmt.Errorf("subscriber: close %q: %w", s.name, ctx.Err())
	}
}

// deliver runs every handler matching topic, each once.
func (s *Subscriber) deliver(c *deliveryCache, msg *Message, topic, from string, payload []byte) {
	hs := c.lookup(s.table.Load(), topic)
	if len(hs) == 0 {
		s.unmatched.Add(1)
		return
	}
	for _, h := range hs {
		*msg = Message{Topic: topic, From: from, payload: payload}
		s.call(h, msg)
	}
	s.delivered.Add(1)
}

// call runs one handler, recovering a panic.
func (s *Subscriber) call(h HandlerFunc, msg *Message) {
	defer func() {
		if p := recover(); p != nil {
			s.panics.Add(1)
			s.log.Error("subscriber: handler panicked", "topic", msg.Topic, "panic", p, "stack", string(debug.Stack()))
		}
	}()
	h(s.ctx, msg)
}

func (s *Subscriber) decodeFailed(err error) {
	s.decodeErrs.Add(1)
	now := time.Now().UnixNano()
	last := s.lastDecodeLog.Load()
	if now-last >= int64(time.Second) && s.lastDecodeLog.CompareAndSwap(last, now) {
		s.log.Warn("subscriber: event dropped: payload does not decode", "err", err)
	}
}

// deliveryCache remembers which handlers match a topic; it belongs to the
// delivery goroutine and is reset when the handlers change.
type deliveryCache struct {
	table     *routeTable
	hs        map[string][]HandlerFunc
	lastTopic string // the most recent topic and its handlers
	lastHs    []HandlerFunc
}

const maxCachedTopics = 4096

func (c *deliveryCache) lookup(t *routeTable, topic string) []HandlerFunc {
	if c.table != t || len(c.hs) >= maxCachedTopics {
		c.table = t
		clear(c.hs)
		c.lastTopic, c.lastHs = "", nil
	}
	if topic == c.lastTopic && topic != "" {
		return c.lastHs
	}
	hs, ok := c.hs[topic]
	if !ok {
		hs = c.match(t, topic)
	}
	c.lastTopic, c.lastHs = topic, hs
	return hs
}

func (c *deliveryCache) match(t *routeTable, topic string) []HandlerFunc {
	var hs []HandlerFunc
	if match.ValidName(topic) != nil {
		// Only a misbehaving publisher sends this: nothing matches it.
		t = &routeTable{}
	}
	for _, r := range t.routes {
		if match.Match(r.pattern, topic) {
			hs = append(hs, r.h)
		}
	}
	c.hs[topic] = hs
	return hs
}
