//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/netns"
	"github.com/warrenmesh/warren/mesh"
)

// driver is a requester child and the pipe that sends it commands.
type driver struct {
	*node
	in io.WriteCloser
}

func startDriver(t *testing.T, h *netns.Host, vars map[string]string) *driver {
	t.Helper()
	r, w := io.Pipe()
	t.Cleanup(func() { w.Close() })
	return &driver{node: startRole(t, h, "requester", vars, r), in: w}
}

// send runs a batch of count requests, conc at a time, and returns its
// report; during the batch, onProgress (if set) sees each progress line.
func (d *driver) send(t *testing.T, count, conc int, timeout time.Duration, onProgress func(batch)) batch {
	t.Helper()
	skip := len(d.proc.Lines())
	if _, err := fmt.Fprintf(d.in, "send %d %d\n", count, conc); err != nil {
		t.Fatal(err)
	}
	seen := skip
	line := d.proc.WaitLine(t, timeout, func(l string) bool {
		lines := d.proc.Lines()
		for ; seen < len(lines); seen++ {
			var b batch
			if json.Unmarshal([]byte(lines[seen]), &b) == nil && b.Event == "progress" && onProgress != nil {
				onProgress(b)
			}
		}
		var b batch
		return json.Unmarshal([]byte(l), &b) == nil && b.Event == "batch" && seen > skip
	})
	var b batch
	json.Unmarshal([]byte(line), &b)
	return b
}

func reqresVars(h *netns.Host, extra ...string) map[string]string {
	v := map[string]string{mesh.EnvInterfaces: h.Iface} // mDNS alone: no seeds
	for i := 0; i+1 < len(extra); i += 2 {
		v[extra[i]] = extra[i+1]
	}
	return v
}

// waitResponders sends single requests until every named responder has
// answered one, so the requester sees them all before a measured batch.
func waitResponders(t *testing.T, d *driver, names []string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b := d.send(t, 3*len(names), 1, 20*time.Second, nil)
		all := true
		for _, n := range names {
			all = all && b.By[n] > 0
		}
		if all {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("requester never saw all of %v", names)
}

// TestRequestResponseAcrossHosts: one requester and three responders on
// four hosts, found by mDNS alone. Requests spread evenly; a responder
// killed with SIGKILL under load loses nothing with retry on; with every
// responder stopped, requests wait and complete when one starts again.
func TestRequestResponseAcrossHosts(t *testing.T) {
	nw := netns.New(t)
	hosts := addHosts(t, nw, 4)
	var resp []*node
	var names []string
	for _, h := range hosts[1:] {
		resp = append(resp, startRole(t, h, "responder", reqresVars(h, envDelay, "1"), nil))
		names = append(names, h.Name)
	}
	d := startDriver(t, hosts[0], reqresVars(hosts[0], envRetry, "3"))
	waitResponders(t, d, names)

	// 1. Round-robin: 300 sequential requests, 100 each (within one).
	b := d.send(t, 300, 1, 60*time.Second, nil)
	if b.Answered != 300 || b.Failed != 0 || b.Wrong != 0 {
		t.Fatalf("even spread batch: %+v", b)
	}
	for _, n := range names {
		if got := b.By[n]; got < 99 || got > 101 {
			t.Fatalf("round-robin over 3 hosts: %v", b.By)
		}
	}
	t.Logf("spread: %v", b.By)

	// 2. SIGKILL one responder mid-load: with retry on, every request is
	// answered exactly once and none is lost.
	killed := false
	b = d.send(t, 1500, 16, 90*time.Second, func(p batch) {
		if !killed && p.Answered >= 300 {
			killed = true
			resp[0].proc.Signal(syscall.SIGKILL)
		}
	})
	if !killed {
		t.Fatal("batch ended before the kill")
	}
	if b.Answered != 1500 || b.Failed != 0 || b.Wrong != 0 {
		t.Fatalf("kill -9 under load with retry: %+v", b)
	}
	t.Logf("kill -9 mid-load: answered %d of %d, %d resent after the loss, by %v", b.Answered, b.Sent, b.Retried, b.By)

	// 3. Stop every responder: requests wait, and complete once one is back.
	stopAll(t, resp[1:]...)
	done := make(chan batch, 1)
	go func() { done <- d.send(t, 5, 5, 60*time.Second, nil) }()
	select {
	case b := <-done:
		t.Fatalf("requests did not wait for a responder: %+v", b)
	case <-time.After(2 * time.Second):
	}
	start := time.Now()
	startRole(t, hosts[1], "responder", reqresVars(hosts[1]), nil)
	b = <-done
	if b.Answered != 5 || b.Failed != 0 {
		t.Fatalf("held requests after a responder returned: %+v", b)
	}
	t.Logf("5 held requests answered %s after a responder started", time.Since(start).Round(time.Millisecond))
	if strings.Contains(strings.Join(b.Errors, " "), "lost") {
		t.Fatalf("errors: %v", b.Errors)
	}
}
