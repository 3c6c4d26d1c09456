//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/mesh"
)

// gossipPort is the port every node binds on its host's address.
const gossipPort = "7946"

// node is a mesh node running as a child process on a host.
type node struct {
	host *netns.Host
	proc *netns.Proc
	id   string
	addr string
}

// baseEnv is the part of the test's environment a child inherits: enough to
// run (and to race-detect or collect coverage), and no WARREN_* variable.
func baseEnv(t *testing.T, role string) []string {
	t.Helper()
	hostNS, err := netnsID()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{envRole + "=" + role, envHostNS + "=" + hostNS}
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GORACE", "GOCOVERDIR", "GOTRACEBACK"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// startNode runs a node on h configured by vars (WARREN_* variables) and
// waits for it to be ready. Unless vars say otherwise the node is named
// after the host, binds <host ip>:7946 and logs at debug level (to its
// stderr, shown when the test fails).
func startNode(t *testing.T, h *netns.Host, vars map[string]string) *node {
	t.Helper()
	return startRole(t, h, "node", vars, nil)
}

// startRole runs a child of the given role on h (see startNode); stdin, if
// not nil, feeds the child's standard input.
func startRole(t *testing.T, h *netns.Host, role string, vars map[string]string, stdin io.Reader) *node {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]string{
		mesh.EnvName: h.Name,
		mesh.EnvBind: h.IP + ":" + gossipPort,
		mesh.EnvLog:  "debug",
	}
	for k, v := range vars {
		all[k] = v
	}
	env := baseEnv(t, role)
	for k, v := range all {
		env = append(env, k+"="+v)
	}
	// Not t.Context(): it ends before cleanup, which stops nodes gracefully.
	cmd := h.Command(context.Background(), exe)
	cmd.Env = env
	cmd.Stdin = stdin
	p := netns.StartProc(t, role+" "+h.Name, cmd)
	line := p.WaitLine(t, 10*time.Second, func(l string) bool {
		e, ok := parseEvent(l)
		return ok && (e.Event == "ready" || e.Event == "error")
	})
	e, _ := parseEvent(line)
	if e.Event == "error" {
		t.Fatalf("node on %s did not start: %s", h.Name, e.Err)
	}
	return &node{host: h, proc: p, id: e.ID, addr: e.Addr}
}

func parseEvent(line string) (event, bool) {
	var e event
	if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &e) != nil {
		return e, false
	}
	return e, true
}

func ids(nodes []*node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.id
	}
	slices.Sort(out)
	return out
}

// waitMembers waits until every node in nodes reports exactly the members
// want, within timeout overall, and returns how long it took.
func waitMembers(t *testing.T, nodes, want []*node, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	wantIDs := ids(want)
	for _, n := range nodes {
		last := "(none)"
		_, err := n.proc.Await(time.Until(deadline), func(l string) bool {
			e, ok := parseEvent(l)
			if !ok || e.Event != "members" {
				return false
			}
			last = l
			got := slices.Clone(e.IDs)
			slices.Sort(got)
			return slices.Equal(got, wantIDs)
		})
		if err != nil {
			t.Fatalf("node %s does not see members %v after %v: %v\nlast members line: %s\n%s",
				n.host.Name, wantIDs, time.Since(start).Round(time.Millisecond), err, last, n.proc.Report(n.proc.Err()))
		}
	}
	return time.Since(start)
}

// stopAll stops the nodes in parallel with SIGTERM and checks that each
// closed cleanly (exit status 0 after a "closed" event without error).
func stopAll(t *testing.T, nodes ...*node) {
	t.Helper()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			if err := n.proc.Stop(closeTimeout + 3*time.Second); err != nil {
				errs[i] = fmt.Errorf("node %s: %w\n%s", n.host.Name, err, n.proc.Report(err))
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func addHosts(t *testing.T, nw *netns.Net, k int, opts ...netns.HostOption) []*netns.Host {
	t.Helper()
	hosts := make([]*netns.Host, k)
	for i := range hosts {
		hosts[i] = nw.AddHost(t, fmt.Sprintf("h%d", len(nw.Hosts())+1), opts...)
	}
	return hosts
}

// mdnsVars configures a node for mDNS on h's interface. WARREN_DISCOVERY is
// explicit so that the tests using it check seeds and multicast blocking,
// not the defaults (TestMDNSDiscovery checks those).
func mdnsVars(h *netns.Host) map[string]string {
	return map[string]string{mesh.EnvInterfaces: h.Iface, mesh.EnvDiscovery: "mdns"}
}

// TestMDNSDiscovery: nodes told only which interface to use find each
// other by multicast DNS, which is on by default. (The children are test
// binaries, where mesh binds 127.0.0.1 by default; hence WARREN_BIND, set by
// startNode. mDNS must still default to on once interfaces are named.)
func TestMDNSDiscovery(t *testing.T) {
	nw := netns.New(t)
	hosts := addHosts(t, nw, 4)
	start := time.Now()
	var nodes []*node
	for _, h := range hosts {
		nodes = append(nodes, startNode(t, h, map[string]string{mesh.EnvInterfaces: h.Iface}))
	}
	waitMembers(t, nodes, nodes, 15*time.Second)
	t.Logf("4 nodes converged by mDNS %v after the first started", time.Since(start).Round(time.Millisecond))
	stopAll(t, nodes...)
}

// TestSeedsWhenMulticastBlocked: a host that cannot multicast joins three
// mDNS hosts through a seed; a second such host without seeds stays alone,
// which proves the multicast block is real for warren's mDNS.
func TestSeedsWhenMulticastBlocked(t *testing.T) {
	nw := netns.New(t)
	var nodes []*node
	lan := addHosts(t, nw, 3)
	for _, h := range lan {
		nodes = append(nodes, startNode(t, h, mdnsVars(h)))
	}
	blocked := addHosts(t, nw, 2, netns.DropMulticast())
	vars := mdnsVars(blocked[0])
	vars[mesh.EnvSeeds] = lan[0].IP + ":" + gossipPort
	seeded := startNode(t, blocked[0], vars)
	alone := startNode(t, blocked[1], mdnsVars(blocked[1]))
	nodes = append(nodes, seeded)

	took := waitMembers(t, nodes, nodes, 15*time.Second)
	t.Logf("3 mDNS nodes and 1 seeded node converged %v after the last started", took.Round(time.Millisecond))

	// The seedless multicast-blocked node must see nobody, and nobody it.
	if l, err := alone.proc.Await(3*time.Second, func(l string) bool {
		e, ok := parseEvent(l)
		return ok && e.Event == "members" && e.N != 1
	}); !errors.Is(err, netns.ErrTimeout) {
		t.Errorf("multicast-blocked node without seeds found peers (mDNS not blocked?): %q, %v", l, err)
	}
	for _, n := range nodes {
		for _, l := range n.proc.Lines() {
			if e, ok := parseEvent(l); ok && slices.Contains(e.IDs, alone.id) {
				t.Errorf("node %s saw the isolated node: %s", n.host.Name, l)
				break
			}
		}
	}
	stopAll(t, append(nodes, alone)...)
}

// TestDNSSeeds: with discovery off, one DNS name resolving to every host
// (as a headless Service would) is enough to form the mesh.
func TestDNSSeeds(t *testing.T) {
	nw := netns.New(t)
	hosts := addHosts(t, nw, 3)
	var ips []string
	for _, h := range hosts {
		ips = append(ips, h.IP)
	}
	start := time.Now()
	var nodes []*node
	for _, h := range hosts {
		if err := h.SetHostsFile(map[string][]string{"seeds.warren.test": ips}); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, startNode(t, h, map[string]string{
			mesh.EnvDiscovery: "none",
			mesh.EnvSeeds:     "seeds.warren.test",
		}))
	}
	waitMembers(t, nodes, nodes, 15*time.Second)
	t.Logf("3 nodes converged through a DNS seed %v after the first started", time.Since(start).Round(time.Millisecond))
	stopAll(t, nodes...)
}

// seededCluster starts k nodes with discovery off, each seeded with every
// host's address, and waits for them to converge.
func seededCluster(t *testing.T, nw *netns.Net, k int) []*node {
	t.Helper()
	hosts := addHosts(t, nw, k)
	var seeds []string
	for _, h := range hosts {
		seeds = append(seeds, h.IP+":"+gossipPort)
	}
	var nodes []*node
	for _, h := range hosts {
		nodes = append(nodes, startNode(t, h, map[string]string{
			mesh.EnvDiscovery: "none",
			mesh.EnvSeeds:     strings.Join(seeds, ","),
		}))
	}
	waitMembers(t, nodes, nodes, 15*time.Second)
	return nodes
}

// TestNodeKilledIsRemoved: a node killed without leaving is removed by
// failure detection.
func TestNodeKilledIsRemoved(t *testing.T) {
	nw := netns.New(t)
	nodes := seededCluster(t, nw, 3)
	if err := nodes[2].proc.Kill(); err != nil {
		t.Fatal(err)
	}
	took := waitMembers(t, nodes[:2], nodes[:2], 12*time.Second)
	t.Logf("killed node removed after %v", took.Round(time.Millisecond))
	stopAll(t, nodes[:2]...)
}

// TestPartitionHeals: a host cut off from the network is dropped by the
// others, and the mesh re-forms when the link comes back.
func TestPartitionHeals(t *testing.T) {
	nw := netns.New(t)
	nodes := seededCluster(t, nw, 3)
	cut := nodes[2]
	if err := cut.host.SetLink(false); err != nil {
		t.Fatal(err)
	}
	took := waitMembers(t, nodes[:2], nodes[:2], 12*time.Second)
	waitMembers(t, []*node{cut}, []*node{cut}, 12*time.Second)
	t.Logf("partition detected after %v", took.Round(time.Millisecond))
	if err := cut.host.SetLink(true); err != nil {
		t.Fatal(err)
	}
	took = waitMembers(t, nodes, nodes, 20*time.Second)
	t.Logf("mesh re-formed %v after healing", took.Round(time.Millisecond))
	stopAll(t, nodes...)
}
