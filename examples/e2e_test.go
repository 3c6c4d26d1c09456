//go:build linux

package examples

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/netns"
)

// TestZeroConfigAcrossHosts runs the example's binaries as separate hosts on
// one network (network namespaces on a bridge) with no configuration but
// the interface: they find each other by mDNS alone. Payments succeed, more
// validators spread the load, and with every validator stopped a payment
// waits, then completes when one comes back.
func TestZeroConfigAcrossHosts(t *testing.T) {
	netns.Require(t) // before the build: skips (or fails in CI) when not root
	bin := buildServices(t)
	deadline := time.Now().Add(60 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	n := netns.New(t)
	payHost := n.AddHost(t, "pay")
	monHost := n.AddHost(t, "mon")
	// The only setting: which interface is the LAN. Nothing else, not even
	// the parent's environment (no WARREN_SEEDS, no ports, no names).
	env := []string{"WARREN_INTERFACES=" + netns.IfaceName}
	start := func(h *netns.Host, service string) *netns.Proc {
		cmd := h.Command(ctx, bin+"/"+service)
		cmd.Env = env
		return netns.StartProc(t, service+"@"+h.Name, cmd)
	}
	start(payHost, "payment-service")
	monitor := start(monHost, "payment-monitor")
	payAddr := net.JoinHostPort(payHost.IP, "8080") // the service's default PORT
	api := &payClient{t: t, base: "http://" + payAddr, client: startProxy(ctx, t, payHost, payAddr)}

	// One validation service.
	var validators []*netns.Proc
	addValidator := func() {
		name := fmt.Sprintf("val%d", len(validators)+1)
		validators = append(validators, start(n.AddHost(t, name), "validation-service"))
	}
	addValidator()
	api.awaitHealth(ctx, "one validator and the monitor", func(h healthz) bool { return h.Validators == 1 && h.Subscribers == 1 })
	first := api.payOK(ctx, "4111111111111111")
	for range 2 {
		if by := api.payOK(ctx, "4111111111111111"); by != first {
			t.Fatalf("with one validator, payments were validated by %s and %s", first, by)
		}
	}

	// Scale to three: the load spreads over all of them.
	addValidator()
	addValidator()
	api.awaitHealth(ctx, "three validators", func(h healthz) bool { return h.Validators == 3 })
	tally := map[string]int{}
	for range 9 {
		tally[api.payOK(ctx, "5500000000000004")]++
	}
	if len(tally) != 3 {
		t.Fatalf("9 payments over 3 validators were validated by %v, want all three", tally)
	}
	for by, k := range tally {
		if k != 3 {
			t.Errorf("round-robin: %s validated %d of 9 payments, want 3 (tally %v)", by, k, tally)
		}
	}

	// A bad card is rejected with the reason.
	if res := api.pay(ctx, "12ab34"); res.status != http.StatusUnprocessableEntity || res.p.Code != "invalid_card" || res.p.Error == "" {
		t.Errorf("GET /pay/12ab34 = %d %s, want 422 with code invalid_card and a reason", res.status, res.body)
	}

	// Stop every validator: a payment waits...
	for _, v := range validators {
		if err := v.Stop(10 * time.Second); err != nil {
			t.Errorf("%s did not stop cleanly: %v", v.Name(), err)
		}
	}
	api.awaitHealth(ctx, "no validator", func(h healthz) bool { return h.Validators == 0 })
	held := make(chan payResult, 1)
	sent := time.Now()
	go func() { held <- api.pay(ctx, "6011000000000004") }()
	select {
	case r := <-held:
		t.Fatalf("with no validator, the payment answered at once: %d %s", r.status, r.body)
	case <-time.After(1500 * time.Millisecond):
	}
	// ...until a validator appears on a new host.
	addValidator()
	restarted := time.Now()
	var r payResult
	select {
	case r = <-held:
	case <-ctx.Done():
		t.Fatal("the held payment did not complete after a validator started")
	}
	if r.err != nil || r.status != http.StatusOK || r.p.Status != "validated" {
		t.Fatalf("held payment: %d %s %v, want 200 validated", r.status, r.body, r.err)
	}
	if _, ok := tally[r.p.By]; ok {
		t.Errorf("held payment validated by %s, a validator that was stopped", r.p.By)
	}
	t.Logf("held payment: waited %s in all, answered %s after the new validator started",
		time.Since(sent).Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))

	// The monitor, on its own host, received every event.
	wantEvents := map[string]int{"payment.completed": 3 + 9 + 1, "payment.rejected": 1}
	got := map[string]int{}
	for got["payment.completed"] < wantEvents["payment.completed"] || got["payment.rejected"] < wantEvents["payment.rejected"] {
		line := monitor.WaitLine(t, time.Until(deadline), func(l string) bool { return strings.Contains(l, " payment.") })
		got[strings.Fields(line)[1]]++
	}
	if got["payment.completed"] != wantEvents["payment.completed"] || got["payment.rejected"] != wantEvents["payment.rejected"] {
		t.Errorf("monitor saw %v, want %v", got, wantEvents)
	}
}

// The test process lives in the host namespace, which has no route to the
// test network (by design). A tiny proxy, this test binary started inside
// the payment host's namespace (ip netns exec), carries the test's HTTP
// connections there: it accepts them on a Unix socket, which is a file
// reachable from every namespace, and dials the payment service over TCP
// from inside.
const (
	envProxySocket = "WARREN_EXAMPLES_PROXY_SOCKET"
	envProxyTarget = "WARREN_EXAMPLES_PROXY_TARGET"
)

func init() { helperMain = proxyMain }

// proxyMain runs the proxy when the test binary is started as one.
func proxyMain() (code int, isHelper bool) {
	sock := os.Getenv(envProxySocket)
	if sock == "" {
		return 0, false
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		return 1, true
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	go func() { <-stop; ln.Close() }()
	fmt.Println("proxy ready")
	target := os.Getenv(envProxyTarget)
	for {
		c, err := ln.Accept()
		if err != nil {
			return 0, true
		}
		go func() {
			defer c.Close()
			u, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				return
			}
			defer u.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(u, c); done <- struct{}{} }()
			go func() { io.Copy(c, u); done <- struct{}{} }()
			<-done // either side ended: close both (deferred)
		}()
	}
}

// startProxy starts the proxy on host h to target and returns an HTTP
// client whose connections go through it.
func startProxy(ctx context.Context, t *testing.T, h *netns.Host, target string) *http.Client {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "proxy.sock")
	cmd := h.Command(ctx, exe)
	cmd.Env = append(os.Environ(), envProxySocket+"="+sock, envProxyTarget+"="+target)
	p := netns.StartProc(t, "proxy@"+h.Name, cmd)
	p.WaitLine(t, 10*time.Second, func(l string) bool { return l == "proxy ready" })
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

type payClient struct {
	t      *testing.T
	base   string
	client *http.Client
}

type payment struct {
	Card   string `json:"card"`
	Status string `json:"status"`
	By     string `json:"by"`
	Error  string `json:"error"`
	Code   string `json:"code"`
}

type healthz struct {
	Members     int `json:"members"`
	Validators  int `json:"validators"`
	Subscribers int `json:"subscribers"`
}

type payResult struct {
	status int
	body   []byte
	p      payment
	err    error
}

func (c *payClient) get(ctx context.Context, path string, v any) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	res, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(body, v)
	}
	return res.StatusCode, body, err
}

// pay calls GET /pay/{card}; safe from any goroutine.
func (c *payClient) pay(ctx context.Context, card string) payResult {
	var r payResult
	r.status, r.body, r.err = c.get(ctx, "/pay/"+card, &r.p)
	return r
}

// payOK pays and fails the test unless the card is validated; it returns
// the validator that answered.
func (c *payClient) payOK(ctx context.Context, card string) string {
	c.t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r := c.pay(cctx, card)
	if r.err != nil || r.status != http.StatusOK || r.p.Status != "validated" || r.p.By == "" {
		c.t.Fatalf("GET /pay/%s = %d %s %v, want 200 validated", card, r.status, r.body, r.err)
	}
	return r.p.By
}

// awaitHealth polls /healthz until cond holds (the payment service's view
// of the mesh), failing the test after 20 s.
func (c *payClient) awaitHealth(ctx context.Context, what string, cond func(healthz) bool) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	began := time.Now()
	var (
		h   healthz
		err error
	)
	for {
		h = healthz{}
		if _, _, err = c.get(ctx, "/healthz", &h); err == nil && cond(h) {
			c.t.Logf("payment service sees %s after %s: %+v", what, time.Since(began).Round(time.Millisecond), h)
			return
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("payment service did not see %s: last /healthz %+v, %v", what, h, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
