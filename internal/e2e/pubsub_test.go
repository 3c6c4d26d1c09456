//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/netns"
)

func lastCount(p *netns.Proc) subCount {
	lines := p.Lines()
	for i := len(lines) - 1; i >= 0; i-- {
		var c subCount
		if json.Unmarshal([]byte(lines[i]), &c) == nil && c.Event == "count" {
			return c
		}
	}
	return subCount{}
}

// TestPubSubAcrossHosts: one publisher and three subscribers (two in a
// queue group) on four hosts, found by mDNS alone. Every event reaches the
// lone subscriber once and exactly one member of the group; events nobody
// subscribes to are dropped and counted.
func TestPubSubAcrossHosts(t *testing.T) {
	nw := netns.New(t)
	hosts := addHosts(t, nw, 4)
	var subs []*node
	for i, h := range hosts[1:] {
		v := reqresVars(h)
		if i > 0 {
			v[envGroup] = "workers"
		}
		subs = append(subs, startRole(t, h, "subscriber", v, nil))
	}
	r, w := io.Pipe()
	t.Cleanup(func() { w.Close() })
	pub := startRole(t, hosts[0], "publisher", reqresVars(hosts[0]), r)
	command := func(cmd, want string) pubReport {
		t.Helper()
		skip := len(pub.proc.Lines())
		fmt.Fprintln(w, cmd)
		var rep pubReport
		pub.proc.WaitLine(t, 40*time.Second, func(l string) bool {
			return len(pub.proc.Lines()) > skip && json.Unmarshal([]byte(l), &rep) == nil && rep.Event == want
		})
		if rep.Err != "" {
			t.Fatalf("%s: %s", cmd, rep.Err)
		}
		return rep
	}
	command("wait 3", "waited")
	rep := command("publish 300 orders.created", "published")
	if rep.Published != 300 || rep.Delivered != 600 {
		t.Fatalf("publisher stats %+v: want 300 published, 600 frames (lone subscriber + one group member each)", rep)
	}
	deadline := time.Now().Add(10 * time.Second)
	var counts []subCount
	for {
		counts = counts[:0]
		total := 0
		for _, s := range subs {
			c := lastCount(s.proc)
			counts = append(counts, c)
			total += c.N
		}
		if total == 600 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("lone subscriber %d, group members %d and %d", counts[0].N, counts[1].N, counts[2].N)
	if counts[0].N != 300 || counts[1].N+counts[2].N != 300 {
		t.Fatalf("counts %+v: want 300 for the lone subscriber and 300 split over the group", counts)
	}
	if d := counts[1].N - counts[2].N; d < -1 || d > 1 {
		t.Fatalf("group split %d / %d is not round-robin", counts[1].N, counts[2].N)
	}
	for i, c := range counts {
		if c.Dups != 0 {
			t.Fatalf("subscriber %d got %d duplicates", i, c.Dups)
		}
	}
	rep = command("publish 10 invoices.paid", "published")
	if rep.NoSubscriber != 10 {
		t.Fatalf("events with no subscriber: %+v", rep)
	}
}
