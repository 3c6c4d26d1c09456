//go:build linux

// Package nsnet builds the private network the benchmark runs in: two network
// namespaces, "a" (clients: requesters, publishers) and "b" (servers:
// responders, subscribers), joined by one veth pair whose two ends are created
// directly inside them. Nothing is ever added to the host (root) namespace:
// no veth end, no address, no route. Each namespace gets a default route on
// its veth, so cote's UDP broadcasts to 255.255.255.255 and warren's mDNS
// multicast reach the other namespace and nothing else; neither namespace
// forwards, so no packet can leave.
//
// Unlike internal/netns (a test harness built on testing.TB) it works in an
// ordinary program, and Close undoes everything, also after Ctrl-C.
package nsnet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Prefix starts the name of every namespace this package creates. It starts
// with "w" as the project's rules demand, and holds letters that are not hex
// digits, so it cannot collide with internal/netns's "w<6 hex>" names.
const Prefix = "wbench-"

// Iface is the name of the veth end in each namespace.
const Iface = "eth0"

// cmdTimeout bounds each ip(8) invocation.
const cmdTimeout = 10 * time.Second

// ErrCommand wraps a failed ip(8) invocation; the message carries the command
// line and its output.
var ErrCommand = errors.New("nsnet: command failed")

// Host is one namespace of the Net.
type Host struct {
	NS    string // namespace name
	IP    string // IPv4 address on eth0
	Iface string // "eth0"
}

// Net is the two namespaces and the link between them.
type Net struct {
	A, B Host

	mu      sync.Mutex
	created []string
	closed  bool
}

// New creates the namespaces and the link. On error everything made so far
// is removed.
func New(ctx context.Context) (*Net, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("nsnet: the benchmark needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("nsnet: the benchmark needs the ip(8) command from iproute2: %w", err)
	}
	id := fmt.Sprintf("%d%04x", os.Getpid()%100000, rand.N(1<<16))
	subnet := fmt.Sprintf("10.%d.%d", 200+rand.N(51), rand.N(256))
	n := &Net{
		A: Host{NS: Prefix + id + "-a", IP: subnet + ".1", Iface: Iface},
		B: Host{NS: Prefix + id + "-b", IP: subnet + ".2", Iface: Iface},
	}
	if err := n.setup(ctx); err != nil {
		_ = n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Net) setup(ctx context.Context) error {
	for _, h := range []Host{n.A, n.B} {
		if err := run(ctx, "ip", "netns", "add", h.NS); err != nil {
			return err
		}
		n.mu.Lock()
		n.created = append(n.created, h.NS)
		n.mu.Unlock()
	}
	// Both ends are born inside the namespaces: the link is created in A
	// with its peer placed directly into B.
	if err := run(ctx, "ip", "-n", n.A.NS, "link", "add", Iface, "type", "veth", "peer", "name", Iface, "netns", n.B.NS); err != nil {
		return err
	}
	for _, h := range []Host{n.A, n.B} {
		steps := [][]string{
			{"ip", "-n", h.NS, "link", "set", "lo", "up"},
			{"ip", "-n", h.NS, "addr", "add", h.IP + "/24", "dev", Iface},
			{"ip", "-n", h.NS, "link", "set", Iface, "up"},
			{"ip", "-n", h.NS, "route", "add", "default", "dev", Iface},
		}
		for _, s := range steps {
			if err := run(ctx, s...); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close deletes the namespaces (which removes the veth pair). It is
// idempotent. Processes still running inside keep their namespace alive
// until they exit, so kill them first.
func (n *Net) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	names := n.created
	n.mu.Unlock()
	var errs []error
	for i := len(names) - 1; i >= 0; i-- {
		if err := run(context.Background(), "ip", "netns", "delete", names[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Stale lists namespaces left by an earlier benchmark run that was killed
// before it could clean up (their names start with Prefix). The caller decides
// what to say about them; this package never deletes what it did not create.
func Stale(ctx context.Context) []string {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return nil
	}
	var stale []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], Prefix) {
			stale = append(stale, f[0])
		}
	}
	return stale
}

func run(ctx context.Context, argv ...string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s: %v: %s", ErrCommand, strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
