// Package meshtest starts mesh nodes for tests with safe defaults: loopback
// addresses, free ports, mDNS off, fast failure detection, logs to the test,
// and cleanup that closes every node. Tests in the host network namespace
// must create nodes through it (or with the same options), so a forgotten
// option can never multicast on the machine's real network.
package meshtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/warrenmesh/warren/mesh"
)

// SafeEnv clears every WARREN_* variable that could point a test node at the
// real network, and turns discovery off. Call it from TestMain.
func SafeEnv() {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "WARREN_") && k != "WARREN_TEST_LOG" {
			os.Unsetenv(k)
		}
	}
	os.Setenv(mesh.EnvDiscovery, "none")
	os.Setenv(mesh.EnvBind, "127.0.0.1:0")
}

// FastGossip tunes memberlist for tests: quick probes and suspicion, so a
// dead node is removed in a couple of seconds, yet a node slowed down by the
// race detector on a busy machine is not declared dead.
func FastGossip(c *memberlist.Config) {
	c.ProbeInterval = 300 * time.Millisecond
	c.ProbeTimeout = 250 * time.Millisecond
	c.SuspicionMult = 3
	c.SuspicionMaxTimeoutMult = 2
	c.GossipInterval = 50 * time.Millisecond
	c.PushPullInterval = 2 * time.Second
	c.TCPTimeout = 2 * time.Second
}

// Options are the safe defaults every host-namespace test node gets.
func Options(t testing.TB) []mesh.Option {
	return []mesh.Option{
		mesh.WithBindAddr("127.0.0.1:0"),
		mesh.WithMDNS(false),
		mesh.WithGossipConfig(FastGossip),
		mesh.WithLogger(Logger(t)),
	}
}

// Node starts a node with the safe defaults plus opts, closed at cleanup.
func Node(t testing.TB, opts ...mesh.Option) *mesh.Node {
	t.Helper()
	n, err := mesh.New(append(Options(t), opts...)...)
	if err != nil {
		t.Fatalf("mesh.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Close(ctx); err != nil {
			t.Errorf("close node: %v", err)
		}
	})
	return n
}

// Cluster starts k nodes joined by loopback seeds and waits until every node
// sees all of them.
func Cluster(t testing.TB, k int, opts ...mesh.Option) []*mesh.Node {
	t.Helper()
	nodes := []*mesh.Node{Node(t, opts...)}
	for i := 1; i < k; i++ {
		nodes = append(nodes, Node(t, append(opts, mesh.WithSeeds(nodes[0].Addr()))...))
	}
	WaitMembers(t, nodes, k)
	return nodes
}

// WaitMembers waits until every node sees exactly k members.
func WaitMembers(t testing.TB, nodes []*mesh.Node, k int) {
	t.Helper()
	Eventually(t, 10*time.Second, func() error {
		for _, n := range nodes {
			if got := len(n.Members()); got != k {
				return fmt.Errorf("%s sees %d members, want %d", n.ID(), got, k)
			}
		}
		return nil
	})
}

// Eventually polls cond until it returns nil or the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %v", timeout, err)
		}
		time.Sleep(delay)
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// Logger returns a logger that writes to the test log (warn and above
// unless WARREN_TEST_LOG=debug), and goes quiet once the test is over.
func Logger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("WARREN_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() { w.mu.Lock(); w.done = true; w.mu.Unlock() }

// CheckGoroutines fails the test if goroutines started during it are still
// running shortly after cleanup. Call it first in a test, before starting
// anything, so its cleanup runs last.
func CheckGoroutines(t testing.TB) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			now := runtime.NumGoroutine()
			if now <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, now, buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
