package requester

import (
	"log/slog"
	"time"

	"github.com/warrenmesh/warren/mesh"
)

// Option configures a Requester.
type Option func(*config)

type config struct {
	node       *mesh.Node
	key        string
	namespace  string
	timeout    time.Duration
	maxPending int
	balancer   Balancer
	retries    int
	logger     *slog.Logger
}

// Defaults.
const (
	DefaultMaxPending = 10000
	// DefaultRetries is how many times an idempotent call is resent after
	// its responder is lost, when the requester has no WithRetry.
	DefaultRetries = 3
)

func defaults() config {
	return config{maxPending: DefaultMaxPending}
}

// WithMesh sets the node to register on (default: mesh.Default()).
func WithMesh(n *mesh.Node) Option { return func(c *config) { c.node = n } }

// WithKey sets the key; only responders with the same key are used.
func WithKey(key string) Option { return func(c *config) { c.key = key } }

// WithNamespace sets the namespace; only responders in it are used.
func WithNamespace(ns string) Option { return func(c *config) { c.namespace = ns } }

// WithTimeout bounds each request whose context has no deadline, covering
// the time it is held waiting for a responder and the time in flight. Zero
// (the default) means no bound beyond the context, like cote.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithMaxPending bounds how many requests may be held waiting for a
// responder (default 10000); beyond it Send fails at once with ErrQueueFull.
func WithMaxPending(n int) Option { return func(c *config) { c.maxPending = n } }

// WithBalancer sets how responders are picked (default RoundRobin).
func WithBalancer(b Balancer) Option { return func(c *config) { c.balancer = b } }

// WithRetry resends a request up to attempts more times when its responder
// is lost before replying (it goes to another responder, or is held until
// one appears). Use it only when every request of this requester is safe to
// run twice; mark single calls with Idempotent otherwise. A request that a
// responder refused without running it (because it was shutting down) is
// always resent, with or without this option.
func WithRetry(attempts int) Option { return func(c *config) { c.retries = attempts } }

// WithLogger sets the logger (default: the node's).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// CallOption configures one Send.
type CallOption func(*call)

// Subset sends the request only to responders of subset s, waiting for one
// if none exists, even when responders of other subsets do.
func Subset(s string) CallOption { return func(c *call) { c.subset = s } }

// Idempotent marks the request as safe to run twice, so it is resent to
// another responder if its responder is lost (up to WithRetry attempts, or
// DefaultRetries).
func Idempotent() CallOption { return func(c *call) { c.idempotent = true } }
