package publisher

import (
	"log/slog"

	"github.com/warrenmesh/warren/mesh"
)

// Option configures a Publisher.
type Option func(*config)

type config struct {
	node      *mesh.Node
	key       string
	namespace string
	logger    *slog.Logger
}

// WithMesh sets the node to register on (default: mesh.Default()).
func WithMesh(n *mesh.Node) Option { return func(c *config) { c.node = n } }

// WithKey sets the key; only subscribers with the same key receive this
// publisher's events.
func WithKey(key string) Option { return func(c *config) { c.key = key } }

// WithNamespace sets the namespace; only subscribers in it receive this
// publisher's events.
func WithNamespace(ns string) Option { return func(c *config) { c.namespace = ns } }

// WithLogger sets the logger (default: the node's).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }
