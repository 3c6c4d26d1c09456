// Package svc is the start-up and shut-down plumbing the example services
// share: the mesh node, the logger, settings from the environment and a
// bounded graceful shutdown.
package svc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/warrenmesh/warren/mesh"
)

// ShutdownTimeout bounds a graceful shutdown: what is not done by then is
// abandoned, so a container stops well within Kubernetes' 30 s grace period.
const ShutdownTimeout = 10 * time.Second

// ErrBadSetting wraps an invalid environment variable or flag.
var ErrBadSetting = errors.New("svc: bad setting")

// Logger returns a service's logger: text on stderr, tagged with the service.
func Logger(service string) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", service)
}

// Node joins the mesh, configured by the WARREN_* variables (see the mesh
// package). When WARREN_NAME is unset the node is named after the service
// rather than the host, so the instances of a service read well in replies
// and logs: validation-service-3f2a9c1e.
func Node(service string) (*mesh.Node, error) {
	var opts []mesh.Option
	if os.Getenv(mesh.EnvName) == "" {
		opts = append(opts, mesh.WithName(service))
	}
	return mesh.New(opts...)
}

// EnvDuration reads a duration ("250ms", "2s") from the variable key, or
// whole seconds ("30"); def when the variable is unset or empty.
func EnvDuration(key string, def time.Duration) (time.Duration, error) {
	v := os.Getenv(key)
	if v == "" {
		return def, nil
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%w: %s=%q: want a duration such as 500ms or 30s", ErrBadSetting, key, v)
	}
	return d, nil
}

// Step is one part of a graceful shutdown.
type Step struct {
	Name  string
	Close func(context.Context) error
}

// Shutdown runs the steps in order, all within ShutdownTimeout, and logs
// each failure; it returns them joined.
func Shutdown(log *slog.Logger, steps ...Step) error {
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	var errs []error
	for _, s := range steps {
		if err := s.Close(ctx); err != nil {
			log.Error("shutdown", "step", s.Name, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}
