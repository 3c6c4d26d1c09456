//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/mesh"
)

const (
	// envRole selects what a re-executed child does instead of the tests.
	envRole = "WARREN_E2E_ROLE"
	// envHostNS carries the parent's network namespace; a child refuses to
	// run there, so a node can never discover on the machine's real network.
	envHostNS = "WARREN_E2E_HOSTNS"

	membersEvery = 200 * time.Millisecond
	maxLife      = 90 * time.Second // a child never outlives this, whatever happens to the parent
	closeTimeout = 5 * time.Second
)

// event is one JSON line a node child prints on stdout.
type event struct {
	Event string   `json:"event"`           // ready, members, closed, error
	ID    string   `json:"id,omitempty"`    // ready
	Addr  string   `json:"addr,omitempty"`  // ready
	N     int      `json:"n,omitempty"`     // members
	IDs   []string `json:"ids,omitempty"`   // members
	Err   string   `json:"error,omitempty"` // closed, error
}

func TestMain(m *testing.M) {
	if role := os.Getenv(envRole); role != "" {
		os.Exit(runRole(role))
	}
	// Safety net for the host namespace: any node created by mistake in this
	// process stays off multicast. Children get their environment explicitly.
	os.Setenv(mesh.EnvDiscovery, "none")
	os.Exit(m.Run())
}

func netnsID() (string, error) { return os.Readlink("/proc/self/ns/net") }

func runRole(role string) int {
	self, err := netnsID()
	if err != nil || os.Getenv(envHostNS) == "" || self == os.Getenv(envHostNS) {
		fmt.Fprintf(os.Stderr, "e2e %s: refusing to run outside a test network namespace (%s, %v)\n", role, self, err)
		return 3
	}
	switch role {
	case "node":
		return runNode()
	case "responder":
		return runResponder()
	case "requester":
		return runRequester()
	case "publisher":
		return runPublisher()
	case "subscriber":
		return runSubscriber()
	default:
		fmt.Fprintf(os.Stderr, "e2e: unknown role %q\n", role)
		return 2
	}
}

// runNode builds a node from the WARREN_* variables only (plus a logger to
// stderr), prints a ready event, then the members every 200 ms, and closes
// the node on SIGTERM.
func runNode() int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	enc := json.NewEncoder(os.Stdout)
	emit := func(e event) {
		if err := enc.Encode(e); err != nil {
			fmt.Fprintf(os.Stderr, "e2e node: stdout: %v\n", err)
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel(os.Getenv(mesh.EnvLog))}))
	n, err := mesh.New(mesh.WithLogger(log))
	if err != nil {
		emit(event{Event: "error", Err: err.Error()})
		return 1
	}
	emit(event{Event: "ready", ID: n.ID(), Addr: n.Addr()})
	tick := time.NewTicker(membersEvery)
	defer tick.Stop()
	life := time.NewTimer(maxLife)
	defer life.Stop()
loop:
	for {
		select {
		case <-sigs:
			break loop
		case <-life.C:
			fmt.Fprintln(os.Stderr, "e2e node: maximum lifetime reached")
			break loop
		case <-tick.C:
			ms := n.Members()
			ids := make([]string, len(ms))
			for i, m := range ms {
				ids[i] = m.ID
			}
			emit(event{Event: "members", N: len(ms), IDs: ids})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		emit(event{Event: "closed", Err: err.Error()})
		return 1
	}
	emit(event{Event: "closed"})
	return 0
}

func logLevel(s string) slog.Level {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}
