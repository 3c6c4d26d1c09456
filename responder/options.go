package responder

import (
	"log/slog"
	"time"

	"github.com/warrenmesh/warren/mesh"
)

// Option configures a Responder.
type Option func(*config)

type config struct {
	node        *mesh.Node
	key         string
	namespace   string
	subset      string
	concurrency int
	drainGrace  time.Duration
	logger      *slog.Logger
}

// DefaultConcurrency bounds the handlers a responder runs at once.
const DefaultConcurrency = 256

func defaults() config {
	return config{concurrency: DefaultConcurrency, drainGrace: 300 * time.Millisecond}
}

// WithMesh sets the node to register on (default: mesh.Default()).
func WithMesh(n *mesh.Node) Option { return func(c *config) { c.node = n } }

// WithKey sets the key; only requesters with the same key reach this responder.
func WithKey(key string) Option { return func(c *config) { c.key = key } }

// WithNamespace sets the namespace; only requesters in it reach this responder.
func WithNamespace(ns string) Option { return func(c *config) { c.namespace = ns } }

// WithSubset puts the responder in a subset: requests naming that subset go
// only to its members, and requests naming none may still come here.
func WithSubset(s string) Option { return func(c *config) { c.subset = s } }

// WithConcurrency bounds how many handlers run at once (default 256). Further
// requests wait in order for a free slot.
func WithConcurrency(n int) Option { return func(c *config) { c.concurrency = n } }

// WithDrainGrace sets how long Close keeps serving after announcing that it
// drains, so requesters have time to stop choosing it (default 300 ms).
// Requests that still arrive after that are refused and transparently resent
// elsewhere by the requester.
func WithDrainGrace(d time.Duration) Option { return func(c *config) { c.drainGrace = d } }

// WithLogger sets the logger (default: the node's).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }
