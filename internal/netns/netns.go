//go:build linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	// ErrCommand wraps a failed ip/bridge/tc invocation; the message carries
	// the command line and its output.
	ErrCommand = errors.New("netns: command failed")
	// ErrHostsEntry reports an invalid name or address given to SetHostsFile.
	ErrHostsEntry = errors.New("netns: invalid hosts entry")
)

const (
	etcNetns   = "/etc/netns"
	bridgeName = "br0"
	// IfaceName is the name of every host's interface on the Net.
	IfaceName = "eth0"
	// cmdTimeout bounds each ip/bridge/tc invocation.
	cmdTimeout = 10 * time.Second
	maxHosts   = 250
)

// dropMulticastBPF is a classic BPF program for tc's bpf classifier in
// direct-action mode. It looks at the first byte of the destination MAC:
// 0x01 (01:00:5e:..., IPv4 multicast) or 0x33 (33:33:..., IPv6 multicast)
// returns TC_ACT_SHOT (2, drop); anything else, broadcast (ARP) included,
// returns TC_ACT_UNSPEC (-1, carry on). It needs only CONFIG_NET_CLS_BPF and
// the clsact qdisc, no nftables/iptables/ebtables binary.
const dropMulticastBPF = "5,48 0 0 0,21 2 0 1,21 1 0 51,6 0 0 4294967295,6 0 0 2"

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

// Net is an isolated L2 network: a "switch" namespace holding a Linux bridge;
// hosts are namespaces attached to it by veth pairs. Nothing is added to the
// host (root) namespace: no veth end, no address, no route, so no packet can
// leave the machine. Multicast works between hosts on the bridge.
type Net struct {
	suffix string // random, makes namespace names unique per Net
	subnet string // "10.a.b" (a /24)
	sw     string // the switch namespace

	ctx    context.Context // cancelled by cleanup: kills every Command
	cancel context.CancelFunc

	mu         sync.Mutex
	hosts      []*Host
	namespaces []string // created, in creation order
	etcDirs    []string // /etc/netns/<ns> directories written
	madeEtc    bool     // /etc/netns did not exist before this Net
}

// Host is a network namespace attached to a Net.
type Host struct {
	Name  string // as given to AddHost
	NS    string // namespace name, "w<suffix>-<name>"
	IP    string // IPv4 address on the Net's /24
	Iface string // "eth0"

	n    *Net
	port string // the veth end in the switch namespace
	drop bool
}

type hostConfig struct {
	dropMulticast bool
}

// HostOption configures a host added with AddHost.
type HostOption func(*hostConfig)

// DropMulticast makes a host unable to send or receive multicast, IPv4 and
// IPv6 alike, as on a network where multicast is filtered. Its switch port
// has mcast_flood off and a tc bpf filter (clsact ingress and egress) that
// drops every frame to a multicast MAC address; broadcast, so ARP, still
// passes. The host also gets no 224.0.0.0/4 route. The filter lives in the
// switch namespace, out of reach of the processes on the host.
func DropMulticast() HostOption { return func(c *hostConfig) { c.dropMulticast = true } }

// New creates the network and registers cleanup (t.Cleanup) that kills every
// process started through it and deletes all namespaces it made, even when
// the test fails. When not root it skips the test, unless the environment
// variable CI is "true", then the test fails.
//
// Networks are made one test process at a time on a machine (a file lock,
// shared by the tests of one process): go test runs the tests of several
// packages at once, and tests that each start a network of processes
// (built with -race, several per host) would otherwise overload a small
// machine, so that a process misses its deadlines for want of a CPU.
func New(t testing.TB) *Net {
	t.Helper()
	Require(t)
	lockMachine(t)
	n := &Net{
		suffix: fmt.Sprintf("%06x", rand.N(1<<24)),
		subnet: fmt.Sprintf("10.%d.%d", 200+rand.N(51), rand.N(256)),
	}
	n.sw = "w" + n.suffix
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if _, err := os.Stat(etcNetns); errors.Is(err, os.ErrNotExist) {
		n.madeEtc = true
	}
	t.Cleanup(func() { n.cleanup(t) })

	if err := n.addNamespace(n.sw); err != nil {
		t.Fatalf("netns: %v", err)
	}
	steps := [][]string{
		{"ip", "-n", n.sw, "link", "set", "lo", "up"},
		{"ip", "-n", n.sw, "link", "add", bridgeName, "type", "bridge", "mcast_snooping", "0", "stp_state", "0"},
		{"ip", "-n", n.sw, "link", "set", bridgeName, "up"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			t.Fatalf("netns: creating switch: %v", err)
		}
	}
	return n
}

// Require skips the test (or fails it when CI=true) unless namespace tests
// can run here: root and the ip(8) command. New calls it.
func Require(t testing.TB) {
	t.Helper()
	skip := func(msg string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("netns: %s (CI=true: namespace tests must run, not skip)", msg)
		}
		t.Skipf("netns: %s; skipping", msg)
	}
	if os.Geteuid() != 0 {
		skip("multi-host tests need root to create network namespaces (run `go test` as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skip("multi-host tests need the ip(8) command from iproute2")
	}
}

// Subnet returns the Net's /24, e.g. "10.231.7.0/24".
func (n *Net) Subnet() string { return n.subnet + ".0/24" }

// Hosts returns the hosts added so far, in order.
func (n *Net) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.hosts)
}

// AddHost adds a host: namespace "w<suffix>-<name>", a veth pair to the
// bridge whose inside end is "eth0", address .N/24 (N = 1, 2, ... in order of
// addition), lo up, and a 224.0.0.0/4 route via eth0 unless DropMulticast.
// name must be 1-20 of [a-z0-9-] and unique within the Net.
func (n *Net) AddHost(t testing.TB, name string, opts ...HostOption) *Host {
	t.Helper()
	var cfg hostConfig
	for _, o := range opts {
		o(&cfg)
	}
	if !validName.MatchString(name) {
		t.Fatalf("netns: host name %q: want 1-20 of [a-z0-9-], starting with a letter or digit", name)
	}
	if cfg.dropMulticast {
		for _, tool := range []string{"bridge", "tc"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Fatalf("netns: DropMulticast needs the %s(8) command from iproute2: %v", tool, err)
			}
		}
	}
	n.mu.Lock()
	idx := len(n.hosts) + 1
	for _, h := range n.hosts {
		if h.Name == name {
			n.mu.Unlock()
			t.Fatalf("netns: host %q added twice", name)
		}
	}
	if idx > maxHosts {
		n.mu.Unlock()
		t.Fatalf("netns: at most %d hosts per Net", maxHosts)
	}
	h := &Host{
		Name:  name,
		NS:    n.sw + "-" + name,
		IP:    fmt.Sprintf("%s.%d", n.subnet, idx),
		Iface: IfaceName,
		n:     n,
		port:  fmt.Sprintf("p%d", idx),
		drop:  cfg.dropMulticast,
	}
	n.hosts = append(n.hosts, h) // reserve the index; removed again on failure
	n.mu.Unlock()

	if err := n.setupHost(h); err != nil {
		n.mu.Lock()
		n.hosts = slices.DeleteFunc(n.hosts, func(x *Host) bool { return x == h })
		n.mu.Unlock()
		t.Fatalf("netns: adding host %q: %v", name, err)
	}
	return h
}

func (n *Net) setupHost(h *Host) error {
	if err := n.addNamespace(h.NS); err != nil {
		return err
	}
	// The veth pair is created in the switch namespace with its peer placed
	// directly into the host namespace: neither end ever exists in the root
	// namespace.
	steps := [][]string{
		{"ip", "-n", n.sw, "link", "add", h.port, "type", "veth", "peer", "name", h.Iface, "netns", h.NS},
		{"ip", "-n", n.sw, "link", "set", h.port, "master", bridgeName},
	}
	if h.drop {
		steps = append(steps,
			[]string{"bridge", "-n", n.sw, "link", "set", "dev", h.port, "mcast_flood", "off"},
			[]string{"tc", "-n", n.sw, "qdisc", "add", "dev", h.port, "clsact"},
			[]string{"tc", "-n", n.sw, "filter", "add", "dev", h.port, "ingress", "bpf", "da", "bytecode", dropMulticastBPF},
			[]string{"tc", "-n", n.sw, "filter", "add", "dev", h.port, "egress", "bpf", "da", "bytecode", dropMulticastBPF},
		)
	}
	steps = append(steps,
		[]string{"ip", "-n", n.sw, "link", "set", h.port, "up"},
		[]string{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		[]string{"ip", "-n", h.NS, "addr", "add", h.IP + "/24", "dev", h.Iface},
		[]string{"ip", "-n", h.NS, "link", "set", h.Iface, "up"},
	)
	if !h.drop {
		steps = append(steps, []string{"ip", "-n", h.NS, "route", "add", "224.0.0.0/4", "dev", h.Iface})
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return err
		}
	}
	return nil
}

// addNamespace creates a namespace and records it for cleanup.
func (n *Net) addNamespace(name string) error {
	if !strings.HasPrefix(name, "w") {
		return fmt.Errorf("netns: namespace %q does not start with w", name) // cannot happen
	}
	if err := run("ip", "netns", "add", name); err != nil {
		return err
	}
	n.mu.Lock()
	n.namespaces = append(n.namespaces, name)
	n.mu.Unlock()
	return nil
}

// Command returns an exec.Cmd running argv inside the host's namespace
// (ip netns exec NS argv...), in its own process group, so killing the
// group kills its children too. When ctx ends, or the Net is cleaned up,
// the whole group is killed (SIGKILL). The child also gets SIGKILL if the
// test process dies. Env is left nil (inherited); set it as needed.
func (h *Host) Command(ctx context.Context, argv ...string) *exec.Cmd {
	cctx, cancel := context.WithCancel(ctx)
	context.AfterFunc(h.n.ctx, cancel)
	args := append([]string{"netns", "exec", h.NS}, argv...)
	cmd := exec.CommandContext(cctx, "ip", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		// exec calls Cancel only while the process is unwaited, so its
		// PID, which is also its process group ID, is still ours.
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
		return nil
	}
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// SetLink takes the host's link down (up=false) or up again: a network
// partition and its healing. It sets the host's port on the switch, so the
// host sees its eth0 lose carrier, as if its cable were pulled, while its
// own addresses and routes stay as they were.
func (h *Host) SetLink(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return run("ip", "-n", h.n.sw, "link", "set", h.port, state)
}

// SetHostsFile writes /etc/netns/<NS>/hosts, which ip netns exec bind-mounts
// over /etc/hosts for processes started with Command, mapping each name to
// its IPs (several IPs give several lines), plus localhost lines. It affects
// processes started afterwards. The file is removed on cleanup.
func (h *Host) SetHostsFile(entries map[string][]string) error {
	var b strings.Builder
	b.WriteString("# written by warren's internal/netns for a test\n")
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	names := make([]string, 0, len(entries))
	for name := range entries {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if name == "" || strings.ContainsAny(name, " \t\r\n#") {
			return fmt.Errorf("%w: name %q", ErrHostsEntry, name)
		}
		for _, ip := range entries[name] {
			if net.ParseIP(ip) == nil {
				return fmt.Errorf("%w: %q for %q is not an IP address", ErrHostsEntry, ip, name)
			}
			fmt.Fprintf(&b, "%s\t%s\n", ip, name)
		}
	}
	dir := filepath.Join(etcNetns, h.NS)
	h.n.mu.Lock()
	if !slices.Contains(h.n.etcDirs, dir) {
		h.n.etcDirs = append(h.n.etcDirs, dir)
	}
	h.n.mu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("netns: hosts file: %w", err)
	}
	tmp := filepath.Join(dir, ".hosts.tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("netns: hosts file: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "hosts")); err != nil {
		return fmt.Errorf("netns: hosts file: %w", err)
	}
	return nil
}

// cleanup kills the processes, deletes the namespaces (hosts first, then the
// switch) and the /etc/netns files. It reports leftovers as test errors.
func (n *Net) cleanup(t testing.TB) {
	n.cancel() // SIGKILLs the process group of every running Command
	n.mu.Lock()
	namespaces := slices.Clone(n.namespaces)
	dirs := slices.Clone(n.etcDirs)
	n.mu.Unlock()
	slices.Reverse(namespaces)
	for _, ns := range namespaces {
		if err := run("ip", "netns", "delete", ns); err != nil {
			t.Errorf("netns cleanup: %v", err)
		}
	}
	for _, dir := range dirs {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("netns cleanup: %v", err)
		}
	}
	if n.madeEtc {
		_ = os.Remove(etcNetns) // only if empty: another test may be using it
	}
}

// run executes one command with a timeout, wrapping failures in ErrCommand.
func run(argv ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s: %v: %s", ErrCommand, strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// machine is this process's share of the machine-wide lock of New.
var machine struct {
	mu    sync.Mutex
	users int      // Nets of this process that hold the lock
	f     *os.File // the locked file while users > 0
}

// lockWait bounds how long New waits for the other test processes'
// networks; go test's own -timeout (10 minutes by default) is per package.
const lockWait = 8 * time.Minute

// lockMachine takes the machine-wide lock for one Net (this process may
// hold it for several) and releases it at the test's cleanup, after the
// Net's own cleanup (registered later, so run first).
func lockMachine(t testing.TB) {
	t.Helper()
	machine.mu.Lock()
	defer machine.mu.Unlock()
	if machine.users == 0 {
		name := filepath.Join(os.TempDir(), "warren-netns.lock")
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o666)
		if err != nil {
			t.Fatalf("netns: lock file: %v", err)
		}
		start := time.Now()
		logged := false
		for {
			err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if err == nil {
				break
			}
			if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
				f.Close()
				t.Fatalf("netns: locking %s: %v", name, err)
			}
			if time.Since(start) > lockWait {
				f.Close()
				t.Fatalf("netns: another test process has held %s for %v", name, lockWait)
			}
			if !logged && time.Since(start) > time.Second {
				t.Logf("netns: waiting for another test process's network to end (%s)", name)
				logged = true
			}
			time.Sleep(50 * time.Millisecond)
		}
		if logged {
			t.Logf("netns: waited %v for %s", time.Since(start).Round(time.Millisecond), name)
		}
		machine.f = f
	}
	machine.users++
	t.Cleanup(func() {
		machine.mu.Lock()
		defer machine.mu.Unlock()
		if machine.users--; machine.users == 0 {
			machine.f.Close() // releases the lock
			machine.f = nil
		}
	})
}
