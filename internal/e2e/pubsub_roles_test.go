//go:build linux

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/publisher"
	"github.com/warrenmesh/warren/subscriber"
)

// Roles for the pub/sub tests. A subscriber counts the events matching its
// pattern (and whether any id came twice); a publisher reads commands on
// stdin: "wait K" (until K subscribers are visible) and "publish N TOPIC".

const (
	envPattern = "WARREN_E2E_PATTERN"
	envGroup   = "WARREN_E2E_GROUP"
)

type subCount struct {
	Event string `json:"event"` // "count"
	N     int    `json:"n"`
	Dups  int    `json:"dups"`
}

type pubReport struct {
	Event        string `json:"event"` // "waited" or "published"
	Published    uint64 `json:"published"`
	Delivered    uint64 `json:"delivered"`
	NoSubscriber uint64 `json:"no_subscriber"`
	Err          string `json:"error,omitempty"`
}

func runSubscriber() int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	enc := json.NewEncoder(os.Stdout)
	var mu sync.Mutex
	emit := func(v any) { mu.Lock(); enc.Encode(v); mu.Unlock() }
	n, closeNode, ok := roleNode(func(e event) { emit(e) })
	if !ok {
		return 1
	}
	defer closeNode()
	var opts []subscriber.Option
	if g := os.Getenv(envGroup); g != "" {
		opts = append(opts, subscriber.WithGroup(g))
	}
	s, err := subscriber.New("counter", append(opts, subscriber.WithMesh(n))...)
	if err != nil {
		emit(event{Event: "error", Err: err.Error()})
		return 1
	}
	seen := map[int]bool{}
	var count subCount
	pattern := os.Getenv(envPattern)
	if pattern == "" {
		pattern = "orders.*"
	}
	subscriber.Handle(s, pattern, func(_ context.Context, id int) {
		mu.Lock()
		if seen[id] {
			count.Dups++
		}
		seen[id] = true
		count.N++
		mu.Unlock()
	})
	emit(event{Event: "ready", ID: n.ID(), Addr: n.Addr()})
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	life := time.NewTimer(maxLife)
	defer life.Stop()
	for {
		select {
		case <-sigs:
			ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
			s.Close(ctx)
			cancel()
			return 0
		case <-life.C:
			return 0
		case <-t.C:
			mu.Lock()
			c := count
			mu.Unlock()
			c.Event = "count"
			emit(c)
		}
	}
}

func runPublisher() int {
	enc := json.NewEncoder(os.Stdout)
	emit := func(v any) { enc.Encode(v) }
	n, closeNode, ok := roleNode(func(e event) { emit(e) })
	if !ok {
		return 1
	}
	defer closeNode()
	p, err := publisher.New("orders", publisher.WithMesh(n))
	if err != nil {
		emit(event{Event: "error", Err: err.Error()})
		return 1
	}
	defer p.Close(context.Background())
	emit(event{Event: "ready", ID: n.ID(), Addr: n.Addr()})
	life := time.AfterFunc(maxLife, func() { os.Exit(4) })
	defer life.Stop()
	next := 0
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var k, count int
		var topic string
		rep := pubReport{}
		switch {
		case func() bool { _, err := fmt.Sscanf(in.Text(), "wait %d", &k); return err == nil }():
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := n.Await(ctx, func(cs []mesh.Component) bool {
				got := 0
				for _, c := range cs {
					if c.Kind == mesh.KindSubscriber && len(c.Handles) > 0 {
						got++
					}
				}
				return got >= k
			})
			cancel()
			rep.Event = "waited"
			if err != nil {
				rep.Err = err.Error()
			}
		case func() bool { _, err := fmt.Sscanf(in.Text(), "publish %d %s", &count, &topic); return err == nil }():
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			for i := 0; i < count && rep.Err == ""; i++ {
				if err := p.Publish(ctx, topic, next); err != nil {
					rep.Err = err.Error()
				}
				next++
			}
			cancel()
			rep.Event = "published"
		default:
			rep.Event, rep.Err = "error", "bad command "+strconv.Quote(in.Text())
		}
		st := p.Stats()
		rep.Published, rep.Delivered, rep.NoSubscriber = st.Published, st.Delivered, st.NoSubscriber
		emit(rep)
	}
	return 0
}
