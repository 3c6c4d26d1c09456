package subscriber

import (
	"log/slog"

	"github.com/warrenmesh/warren/mesh"
)

// Option configures a Subscriber.
type Option func(*config)

type config struct {
	node      *mesh.Node
	key       string
	namespace string
	group     string
	buffer    int
	bufBytes  int64
	dropFull  bool
	logger    *slog.Logger
}

// DefaultBuffer is the number of events a subscriber buffers per publisher
// unless WithBuffer says otherwise. It is also the publisher's window: the
// events it may have in flight to the subscriber before credits come back,
// so a larger buffer carries more events per round trip (4096 small events
// is about 20 % more throughput than 1024 over a veth link here) at the cost
// of up to that many events held in memory per publisher.
const DefaultBuffer = 4096

// MaxBuffer is the largest buffer WithBuffer accepts.
const MaxBuffer = 1 << 20

// DefaultBufferBytes bounds the bytes (payloads and topics) of the events
// a subscriber buffers per publisher unless WithBufferBytes says otherwise:
// DefaultBuffer small events fit many times over, while 4096 events of a
// few megabytes each would not.
const DefaultBufferBytes = 64 << 20

// MaxBufferBytes is the largest byte bound WithBufferBytes accepts.
const MaxBufferBytes = 1 << 37

// WithMesh sets the node to register on (default: mesh.Default()).
func WithMesh(n *mesh.Node) Option { return func(c *config) { c.node = n } }

// WithKey sets the key; only publishers with the same key reach this
// subscriber.
func WithKey(key string) Option { return func(c *config) { c.key = key } }

// WithNamespace sets the namespace; only publishers in it reach this
// subscriber.
func WithNamespace(ns string) Option { return func(c *config) { c.namespace = ns } }

// WithGroup puts the subscriber in a queue group: subscribers sharing a
// group name split the events of each topic between them, round-robin,
// one member each, while subscribers without a group all get every event.
// Run several copies of a worker in one group to share its load.
func WithGroup(name string) Option { return func(c *config) { c.group = name } }

// WithBuffer sets how many events from one publisher may wait for this
// subscriber's handlers (default DefaultBuffer, at most MaxBuffer). A
// publisher that has filled it waits for room, or drops the event with
// WithDropWhenFull, so a slow subscriber never makes memory grow without
// bound.
func WithBuffer(n int) Option { return func(c *config) { c.buffer = n } }

// WithBufferBytes bounds the bytes of the events from one publisher that
// may wait for this subscriber's handlers (default DefaultBufferBytes, at
// most MaxBufferBytes), counting payloads and topics. Whichever of this
// and WithBuffer is reached first makes the publisher wait (or drop, with
// WithDropWhenFull). An event larger than n still gets through, once at
// most n/2 bytes wait: the buffer then holds at most n/2 plus that event.
func WithBufferBytes(n int64) Option { return func(c *config) { c.bufBytes = n } }

// WithDropWhenFull makes publishers drop events for this subscriber while
// its buffer is full, instead of waiting for room. The drops are counted in
// the publishers' Stats.DroppedFull. Use it for subscribers that can afford
// to miss events (dashboards, metrics) and must never slow publishers down.
func WithDropWhenFull() Option { return func(c *config) { c.dropFull = true } }

// WithLogger sets the logger (default: the node's).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }
