//go:build linux

package netns

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests re-execute this test binary inside the namespaces as small
// network helpers, selected by envRole. TestMain runs the role instead of
// the tests. A helper refuses to run in the namespace the tests were started
// from (envHostNS), so it can never touch the real network.
const (
	envRole   = "WARREN_NETNS_TEST_ROLE"
	envArg    = "WARREN_NETNS_TEST_ARG"
	envHostNS = "WARREN_NETNS_TEST_HOSTNS"

	mdnsGroup = "224.0.0.251"
	mdnsPort  = 5353
)

func TestMain(m *testing.M) {
	if role := os.Getenv(envRole); role != "" {
		os.Exit(runHelper(role, os.Getenv(envArg)))
	}
	os.Exit(m.Run())
}

func netnsInode() (string, error) { return os.Readlink("/proc/self/ns/net") }

func runHelper(role, arg string) int {
	if self, err := netnsInode(); err != nil || self == os.Getenv(envHostNS) || os.Getenv(envHostNS) == "" {
		fmt.Fprintf(os.Stderr, "helper %s: refusing to run outside a test namespace (%s, %v)\n", role, self, err)
		return 3
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second) // every helper is bounded
	defer cancel()
	var err error
	switch role {
	case "tcp-serve":
		err = tcpServe(ctx, arg)
	case "tcp-dial":
		err = tcpDial(ctx, arg)
	case "mcast-listen":
		err = mcastListen(ctx)
	case "mcast-send":
		err = mcastSend(ctx, arg)
	case "silent":
		<-ctx.Done() // prints nothing: a process stuck before its ready line
	case "resolve":
		var addrs []string
		addrs, err = net.DefaultResolver.LookupHost(ctx, arg)
		slices.Sort(addrs)
		fmt.Println("resolved", strings.Join(addrs, ","))
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", role, err)
		return 1
	}
	return 0
}

// tcpServe accepts connections on addr and answers each with one line.
func tcpServe(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fmt.Fprintf(c, "pong %s\n", c.LocalAddr())
		c.Close()
	}
}

// tcpDial dials addr once and prints "ok <answer>" or "fail <error>".
func tcpDial(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp4", addr)
	if err != nil {
		fmt.Println("fail", err)
		return nil
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Println("fail", err)
		return nil
	}
	fmt.Println("ok", strings.TrimSpace(line))
	return nil
}

// mcastListen joins the mDNS group on eth0 and prints every datagram.
func mcastListen(ctx context.Context) error {
	ifi, err := net.InterfaceByName(IfaceName)
	if err != nil {
		return err
	}
	c, err := net.ListenMulticastUDP("udp4", ifi, &net.UDPAddr{IP: net.ParseIP(mdnsGroup), Port: mdnsPort})
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { c.Close() })
	fmt.Println("ready")
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fmt.Printf("got %s from %s\n", buf[:n], from)
	}
}

// mcastSend sends payload to the mDNS group 20 times, 100 ms apart, out of
// eth0 chosen with IP_MULTICAST_IF (which needs no multicast route), with
// loopback off so a listener on the same host sees only the network.
func mcastSend(ctx context.Context, payload string) error {
	ifi, err := net.InterfaceByName(IfaceName)
	if err != nil {
		return err
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		return err
	}
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var sockErr error
	if err := rc.Control(func(fd uintptr) {
		sockErr = syscall.SetsockoptIPMreqn(int(fd), syscall.IPPROTO_IP, syscall.IP_MULTICAST_IF, &syscall.IPMreqn{Ifindex: int32(ifi.Index)})
		if sockErr == nil {
			sockErr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MULTICAST_LOOP, 0)
		}
	}); err != nil {
		return err
	}
	if sockErr != nil {
		return sockErr
	}
	dst := &net.UDPAddr{IP: net.ParseIP(mdnsGroup), Port: mdnsPort}
	sent := 0
	for range 20 {
		if _, err := c.WriteToUDP([]byte(payload), dst); err != nil {
			fmt.Println("send error", err)
		} else {
			sent++
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
	fmt.Println("sent", sent)
	return nil
}

// helper starts role on h and returns its Proc.
func helper(t *testing.T, h *Host, role, arg string) *Proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	hostNS, err := netnsInode()
	if err != nil {
		t.Fatal(err)
	}
	cmd := h.Command(context.Background(), exe) // not t.Context: cleanup stops it gracefully
	cmd.Env = append(os.Environ(), envRole+"="+role, envArg+"="+arg, envHostNS+"="+hostNS)
	return StartProc(t, h.Name+"/"+role, cmd)
}

// TestDiagnoseSilentProcess checks what a test gets when a child never
// prints the line it waits for: its threads as the kernel sees them, and
// the Go program's goroutine dump (SIGQUIT), which shows where it is stuck.
func TestDiagnoseSilentProcess(t *testing.T) {
	n := New(t)
	h := n.AddHost(t, "a")
	p := helper(t, h, "silent", "")
	if _, err := p.Await(500*time.Millisecond, isLine("ready")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Await on a silent process: %v, want ErrTimeout", err)
	}
	d := p.Diagnose()
	if !strings.Contains(d, fmt.Sprintf("(pid %d)", p.Pid())) || !strings.Contains(d, "state=") {
		t.Errorf("Diagnose did not describe the threads:\n%s", d)
	}
	if !strings.Contains(d, "goroutine dump is in its stderr") {
		t.Errorf("process still running after SIGQUIT:\n%s", d)
	}
	if e := p.Stderr(); !strings.Contains(e, "SIGQUIT") || !strings.Contains(e, "goroutine 1 ") || !strings.Contains(e, "runHelper") {
		t.Errorf("no goroutine dump in stderr:\n%s", e)
	}
	if d := p.Diagnose(); d != "" {
		t.Errorf("Diagnose on an exited process = %q, want nothing", d)
	}
}

func isLine(want string) func(string) bool { return func(l string) bool { return l == want } }

func hasPrefix(p string) func(string) bool {
	return func(l string) bool { return strings.HasPrefix(l, p) }
}

// dial runs tcp-dial from h to addr and returns its answer line.
func dial(t *testing.T, h *Host, addr string) string {
	t.Helper()
	p := helper(t, h, "tcp-dial", addr)
	return p.WaitLine(t, 10*time.Second, func(l string) bool { return hasPrefix("ok ")(l) || hasPrefix("fail ")(l) })
}

func serve(t *testing.T, h *Host) string {
	t.Helper()
	addr := h.IP + ":7000"
	helper(t, h, "tcp-serve", addr).WaitLine(t, 10*time.Second, isLine("ready"))
	return addr
}

func TestTwoHostsReachEachOther(t *testing.T) {
	n := New(t)
	a, b := n.AddHost(t, "a"), n.AddHost(t, "b")
	if got := n.Hosts(); len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("Hosts() = %v", got)
	}
	for _, h := range []*Host{a, b} {
		if !strings.HasPrefix(h.NS, "w") || !strings.HasSuffix(h.NS, "-"+h.Name) || h.Iface != "eth0" {
			t.Errorf("host %+v: bad namespace or interface name", h)
		}
	}
	if a.IP == b.IP || !strings.HasPrefix(a.IP, "10.") {
		t.Fatalf("addresses %s, %s", a.IP, b.IP)
	}
	if _, err := exec.LookPath("ping"); err == nil {
		for _, pair := range [][2]*Host{{a, b}, {b, a}} {
			out, err := pair[0].Command(t.Context(), "ping", "-c1", "-W1", pair[1].IP).CombinedOutput()
			if err != nil {
				t.Errorf("ping %s -> %s: %v\n%s", pair[0].Name, pair[1].Name, err, out)
			}
		}
	}
	addrA, addrB := serve(t, a), serve(t, b)
	if got := dial(t, b, addrA); got != "ok pong "+addrA {
		t.Errorf("b -> a: %q", got)
	}
	if got := dial(t, a, addrB); got != "ok pong "+addrB {
		t.Errorf("a -> b: %q", got)
	}
}

func TestSetLinkPartitions(t *testing.T) {
	n := New(t)
	a, b := n.AddHost(t, "a"), n.AddHost(t, "b")
	addr := serve(t, a)
	if got := dial(t, b, addr); !strings.HasPrefix(got, "ok ") {
		t.Fatalf("before partition: %q", got)
	}
	if err := b.SetLink(false); err != nil {
		t.Fatal(err)
	}
	if got := dial(t, b, addr); !strings.HasPrefix(got, "fail ") {
		t.Fatalf("partitioned b still reaches a: %q", got)
	}
	if err := b.SetLink(true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := dial(t, b, addr)
		if strings.HasPrefix(got, "ok ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after healing: %q", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestDropMulticast(t *testing.T) {
	n := New(t)
	a, b := n.AddHost(t, "a"), n.AddHost(t, "b")
	d := n.AddHost(t, "d", DropMulticast())
	listeners := map[string]*Proc{}
	for _, h := range []*Host{a, b, d} {
		listeners[h.Name] = helper(t, h, "mcast-listen", "")
		listeners[h.Name].WaitLine(t, 10*time.Second, isLine("ready"))
	}
	sendB := helper(t, b, "mcast-send", "from-b")
	sendD := helper(t, d, "mcast-send", "from-d")

	// Control: multicast from b reaches a, so the test can see multicast.
	listeners["a"].WaitLine(t, 5*time.Second, hasPrefix("got from-b "))
	// d's sends succeed locally (no route is needed with IP_MULTICAST_IF):
	// the drop happens on the wire, not in d's socket.
	sendB.WaitLine(t, 10*time.Second, hasPrefix("sent "))
	if got := sendD.WaitLine(t, 10*time.Second, hasPrefix("sent ")); got == "sent 0" {
		t.Fatalf("d could not send at all: %q\n%s", got, sendD.Report(nil))
	}
	// Let the last datagrams arrive, then stop the listeners and look.
	time.Sleep(300 * time.Millisecond)
	for name, p := range listeners {
		if err := p.Stop(3 * time.Second); err != nil {
			t.Errorf("listener %s: %v\n%s", name, err, p.Report(err))
		}
	}
	for _, c := range []struct {
		host, banned string
	}{{"a", "got from-d "}, {"b", "got from-d "}, {"d", "got from-b "}, {"d", "got from-d "}} {
		for _, l := range listeners[c.host].Lines() {
			if strings.HasPrefix(l, c.banned) {
				t.Errorf("%s received multicast it must not: %q", c.host, l)
				break
			}
		}
	}
	// Unicast still works both ways for the multicast-blocked host (ARP is
	// broadcast, which passes).
	addrA, addrD := serve(t, a), serve(t, d)
	if got := dial(t, d, addrA); !strings.HasPrefix(got, "ok ") {
		t.Errorf("d -> a unicast: %q", got)
	}
	if got := dial(t, a, addrD); !strings.HasPrefix(got, "ok ") {
		t.Errorf("a -> d unicast: %q", got)
	}
}

func TestHostsFile(t *testing.T) {
	n := New(t)
	a, b, c := n.AddHost(t, "a"), n.AddHost(t, "b"), n.AddHost(t, "c")
	ips := []string{a.IP, b.IP, c.IP}
	if err := a.SetHostsFile(map[string][]string{"seeds.warren.test": ips, "b.warren.test": {b.IP}}); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(ips)
	slices.Sort(want)
	if got := helper(t, a, "resolve", "seeds.warren.test").WaitLine(t, 10*time.Second, hasPrefix("resolved ")); got != "resolved "+strings.Join(want, ",") {
		t.Errorf("seeds.warren.test: %q, want %v", got, want)
	}
	if got := helper(t, a, "resolve", "b.warren.test").WaitLine(t, 10*time.Second, hasPrefix("resolved ")); got != "resolved "+b.IP {
		t.Errorf("b.warren.test: %q", got)
	}
	if got := helper(t, a, "resolve", "localhost").WaitLine(t, 10*time.Second, hasPrefix("resolved ")); !strings.Contains(got, "127.0.0.1") {
		t.Errorf("localhost: %q", got)
	}
	for _, bad := range []map[string][]string{{"x": {"not-an-ip"}}, {"two words": {a.IP}}, {"": {a.IP}}} {
		if err := a.SetHostsFile(bad); !errors.Is(err, ErrHostsEntry) {
			t.Errorf("SetHostsFile(%v) = %v, want ErrHostsEntry", bad, err)
		}
	}
}

func TestCleanupRemovesEverything(t *testing.T) {
	var names []string
	var orphan *exec.Cmd
	t.Run("net", func(t *testing.T) {
		n := New(t)
		a, b := n.AddHost(t, "a"), n.AddHost(t, "b", DropMulticast())
		if err := a.SetHostsFile(map[string][]string{"x.test": {b.IP}}); err != nil {
			t.Fatal(err)
		}
		names = []string{n.sw, a.NS, b.NS}
		// A process the test never stops: the Net's cleanup must kill it.
		orphan = a.Command(context.Background(), "sleep", "60")
		if err := orphan.Start(); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("ip", "netns", "list").CombinedOutput()
		if err != nil {
			t.Fatal(err, string(out))
		}
		for _, ns := range names {
			if !strings.Contains(string(out), ns) {
				t.Errorf("namespace %s missing while the Net is alive:\n%s", ns, out)
			}
		}
		if _, err := os.Stat("/etc/netns/" + a.NS + "/hosts"); err != nil {
			t.Errorf("hosts file: %v", err)
		}
	})
	if orphan == nil {
		t.Fatal("subtest did not start the process")
	}
	waited := make(chan error, 1)
	go func() { waited <- orphan.Wait() }()
	select {
	case err := <-waited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("orphan process ended with %v, want SIGKILL", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("orphan process still running after cleanup")
		_ = orphan.Process.Kill()
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err, string(out))
	}
	for _, ns := range names {
		if strings.Contains(string(out), ns) {
			t.Errorf("namespace %s left behind:\n%s", ns, out)
		}
		if _, err := os.Stat("/etc/netns/" + ns); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("/etc/netns/%s left behind (%v)", ns, err)
		}
	}
}

// TestRaceReportKept checks that a race detector report in a child's stderr
// is found even when it arrives split across writes and is followed by
// more output than the stderr tail keeps (StartProc's cleanup fails the
// test on it).
func TestRaceReportKept(t *testing.T) {
	p := &Proc{name: "x", changed: make(chan struct{}), done: make(chan struct{})}
	w := (*procStderr)(p)
	report := "==================\nWARNING: DATA RACE\nWrite at 0x00c000 by goroutine 7:\n  main.f()\n"
	for _, chunk := range []string{"log line\n=====", report[5:25], report[25:], "more\n"} {
		w.Write([]byte(chunk))
	}
	if got := p.Race(); !strings.HasPrefix(got, "WARNING: DATA RACE\nWrite at") || !strings.Contains(got, "main.f()") {
		t.Fatalf("Race() = %q", got)
	}
	w.Write(bytes.Repeat([]byte("x"), 2*maxStderr))
	if got := p.Race(); !strings.Contains(got, "main.f()") || len(got) != maxRace {
		t.Fatalf("after a flood, Race() has %d bytes, want the report and %d", len(got), maxRace)
	}
	if q := (&Proc{}); q.Race() != "" {
		t.Fatal("Race() of a clean process is not empty")
	}
	clean := &Proc{}
	(*procStderr)(clean).Write([]byte("WARNING: DATA"))
	(*procStderr)(clean).Write([]byte(" RAC"))
	if clean.Race() != "" {
		t.Fatal("a partial marker counted as a race")
	}
}
