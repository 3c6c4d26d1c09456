package discovery

// The mDNS tests run only inside network namespaces that the test creates:
// mDNS must never multicast on the host's real network. TestMDNSInNamespaces
// builds two namespaces joined directly by a veth pair and re-executes this
// test binary in each with TestMDNSHelper, which refuses to run unless told
// its role by environment variables and unless it is outside the host's
// network namespace.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	envHelperRole  = "WARREN_DISCOVERY_MDNS_HELPER" // "a" or "b"; unset: TestMDNSHelper skips
	envHelperIface = "WARREN_DISCOVERY_MDNS_IFACE"
	envHelperSelf  = "WARREN_DISCOVERY_MDNS_SELF"
	envHelperID    = "WARREN_DISCOVERY_MDNS_ID"
	envHelperPeer  = "WARREN_DISCOVERY_MDNS_PEER"
	envHelperFast  = "WARREN_DISCOVERY_MDNS_FAST"   // "1": WithBrowseInterval(500ms)
	envHelperHost  = "WARREN_DISCOVERY_MDNS_HOSTNS" // identity of the parent's (host) network namespace

	helperMinRun = 4 * time.Second // long enough for the peer to see us and for zeroconf's probe goroutine to end
	helperMaxRun = 9 * time.Second
)

// requireRootForNetns skips (or fails when CI=true) unless the test can
// create network namespaces.
func requireRootForNetns(t *testing.T) {
	t.Helper()
	skip := func(msg string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (CI=true: namespace tests must run)", msg)
		}
		t.Skip(msg)
	}
	if os.Geteuid() != 0 {
		skip("mDNS test needs root to create network namespaces; skipping")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skip("mDNS test needs the ip(8) command (iproute2); skipping")
	}
}

func TestMDNSInNamespaces(t *testing.T) {
	requireRootForNetns(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	hostNS, err := netnsID()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()

	tag := fmt.Sprintf("%06x", rand.N(1<<24))
	nsA, nsB := "wd"+tag+"a", "wd"+tag+"b"
	vethA, vethB := "wd"+tag+"va", "wd"+tag+"vb" // 10 bytes, within IFNAMSIZ
	subnet := fmt.Sprintf("10.241.%d", 1+rand.N(254))
	addrA, addrB := subnet+".1", subnet+".2"

	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{nsA, nsB} {
		ip("netns", "add", ns)
		t.Cleanup(func() {
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer ccancel()
			if out, err := exec.CommandContext(cctx, "ip", "netns", "delete", ns).CombinedOutput(); err != nil {
				t.Errorf("deleting namespace %s: %v\n%s", ns, err, out)
			}
		})
	}
	// The veth pair is created inside nsA with its peer end placed directly
	// in nsB: nothing ever appears in the host namespace.
	ip("-n", nsA, "link", "add", vethA, "type", "veth", "peer", "name", vethB, "netns", nsB)
	for _, side := range []struct{ ns, dev, addr string }{{nsA, vethA, addrA}, {nsB, vethB, addrB}} {
		ip("-n", side.ns, "addr", "add", side.addr+"/24", "dev", side.dev)
		ip("-n", side.ns, "link", "set", "lo", "up")
		ip("-n", side.ns, "link", "set", side.dev, "up")
		ip("-n", side.ns, "route", "add", "224.0.0.0/4", "dev", side.dev)
	}

	// a advertises its exact address; b listens on 0.0.0.0 (so its veth's
	// IPv4 is advertised) and has a long NodeID that needs sanitising and
	// truncation.
	selfA, advA := addrA+":7946", addrA+":7946"
	selfB, advB := "0.0.0.0:7947", addrB+":7947"
	idB := "node.b " + strings.Repeat("x", 80)
	type result struct {
		stdout, stderr string
		err            error
	}
	run := func(ns, role, dev, self, id, peer, fast string) result {
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, exe, "-test.run=^TestMDNSHelper$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(),
			envHelperRole+"="+role, envHelperIface+"="+dev, envHelperSelf+"="+self,
			envHelperID+"="+id, envHelperPeer+"="+peer, envHelperFast+"="+fast, envHelperHost+"="+hostNS)
		cmd.WaitDelay = 2 * time.Second
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return result{stdout.String(), stderr.String(), err}
	}
	var wg sync.WaitGroup
	var resA, resB result
	wg.Go(func() { resA = run(nsA, "a", vethA, selfA, "node-a", advB, "") })
	wg.Go(func() { resB = run(nsB, "b", vethB, selfB, idB, advA, "1") })
	wg.Wait()

	check := func(name string, r result, want string) {
		t.Helper()
		dump := fmt.Sprintf("--- %s stdout:\n%s\n--- %s stderr:\n%s", name, r.stdout, name, r.stderr)
		if os.Getenv("WARREN_DISCOVERY_DUMP") != "" { // debugging aid: show the helpers' output
			t.Log(dump)
		}
		if r.err != nil {
			t.Errorf("helper %s failed: %v\n%s", name, r.err, dump)
			return
		}
		var found []string
		done := false
		sc := bufio.NewScanner(strings.NewReader(r.stdout))
		for sc.Scan() {
			line := sc.Text()
			if addr, ok := strings.CutPrefix(line, "WARREN-FOUND "); ok {
				found = append(found, addr)
			}
			done = done || line == "WARREN-DONE"
		}
		if !done {
			t.Errorf("helper %s did not complete (skipped?)\n%s", name, dump)
			return
		}
		if !slices.Equal(found, []string{want}) {
			t.Errorf("helper %s found %q, want exactly [%s]\n%s", name, found, want, dump)
		}
	}
	check("a", resA, advB)
	check("b", resB, advA)
}

// netnsID identifies the network namespace of the calling process (the
// target of /proc/self/ns/net, e.g. "net:[4026531840]").
func netnsID() (string, error) {
	id, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return "", err
	}
	if id == "" {
		return "", errors.New("empty network namespace id")
	}
	return id, nil
}

// TestMDNSHelper is run by TestMDNSInNamespaces inside a namespace.
func TestMDNSHelper(t *testing.T) {
	role := os.Getenv(envHelperRole)
	if role == "" {
		t.Skip("helper for TestMDNSInNamespaces; runs only inside a test network namespace")
	}
	// Defence in depth: never run mDNS in the parent's (host) network namespace.
	if ns, err := netnsID(); err != nil || ns == os.Getenv(envHelperHost) || os.Getenv(envHelperHost) == "" {
		t.Fatalf("refusing to run mDNS: not inside a separate network namespace (%s, %v)", ns, err)
	}
	iface, selfAddr, id, peer := os.Getenv(envHelperIface), os.Getenv(envHelperSelf), os.Getenv(envHelperID), os.Getenv(envHelperPeer)
	me := Self{NodeID: id, Addr: selfAddr, Environment: "test"}
	quiet := WithLogger(slog.New(slog.DiscardHandler))
	never := func([]string) { t.Error("found called by a failing Run") }

	// Setup errors (all detected before any packet is sent).
	bg, bgCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer bgCancel()
	if err := MDNS(WithInterfaces("wd-no-such"), quiet).Run(bg, me, never); !errors.Is(err, ErrInterface) {
		t.Errorf("unknown interface: Run = %v, want ErrInterface", err)
	}
	if err := MDNS(WithInterfaces(iface), quiet).Run(bg, Self{NodeID: id, Addr: "peer.example:1"}, never); !errors.Is(err, ErrInvalidSelf) {
		t.Errorf("name as address: Run = %v, want ErrInvalidSelf", err)
	}
	if err := MDNS(WithInterfaces(iface), quiet).Run(bg, Self{Addr: selfAddr}, never); !errors.Is(err, ErrInvalidSelf) {
		t.Errorf("empty NodeID: Run = %v, want ErrInvalidSelf", err)
	}
	if err := MDNS(WithInterfaces(iface), WithService("bad"), quiet).Run(bg, me, never); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("bad service: Run = %v, want ErrInvalidConfig", err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := MDNS(WithInterfaces(iface), quiet).Run(cancelled, me, never); err != nil {
		t.Errorf("cancelled context: Run = %v, want nil", err)
	}

	before := runtime.NumGoroutine()

	// A short run: Run must return promptly once ctx ends.
	short, shortCancel := context.WithCancel(context.Background())
	shortDone := make(chan error, 1)
	go func() { shortDone <- MDNS(WithInterfaces(iface), quiet).Run(short, me, func([]string) {}) }()
	time.Sleep(300 * time.Millisecond)
	shortCancel()
	cancelledAt := time.Now()
	select {
	case err := <-shortDone:
		if err != nil {
			t.Errorf("short run: Run = %v", err)
		}
		if d := time.Since(cancelledAt); d > time.Second {
			t.Errorf("short run: Run took %v to return after cancel", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("short run: Run did not return after cancel")
	}

	opts := []MDNSOption{
		WithInterfaces(iface),
		WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}
	if os.Getenv(envHelperFast) == "1" {
		opts = append(opts, WithBrowseInterval(500*time.Millisecond))
	}
	ctx, stop := context.WithTimeout(context.Background(), helperMaxRun)
	defer stop()
	var (
		mu       sync.Mutex
		found    []string
		returned bool
	)
	report := func(addrs []string) {
		mu.Lock()
		defer mu.Unlock()
		if returned {
			t.Error("found called after Run returned")
		}
		for _, a := range addrs {
			if !slices.Contains(found, a) {
				found = append(found, a)
			}
		}
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- MDNS(opts...).Run(ctx, me, report) }()

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		case <-ctx.Done():
			break wait
		case <-tick.C:
			mu.Lock()
			seen := slices.Contains(found, peer)
			mu.Unlock()
			if seen && time.Since(start) >= helperMinRun {
				break wait
			}
		}
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	mu.Lock()
	returned = true
	got := slices.Clone(found)
	mu.Unlock()

	deadline := time.Now().Add(4 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutine leak: %d > %d\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, a := range got {
		fmt.Printf("WARREN-FOUND %s\n", a)
	}
	if !t.Failed() {
		fmt.Println("WARREN-DONE")
	}
}
