package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/publisher"
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
	"github.com/warrenmesh/warren/subscriber"
)

const (
	reqType = "echo"
	topic   = "bench.event"
	// awaitPeers bounds the wait for the other side to appear.
	awaitPeers = 30 * time.Second
)

// warrenNode makes the process's node: zero configuration on the namespace's
// interface (mDNS), like cote's broadcast discovery, or seeds when asked.
func warrenNode(cfg roleConfig) (*mesh.Node, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := []mesh.Option{
		mesh.WithName(cfg.Role),
		mesh.WithEnvironment(cfg.Env),
		mesh.WithLogger(log),
		mesh.WithInterfaces(cfg.Iface),
	}
	if cfg.Seeds != "" {
		opts = append(opts, mesh.WithMDNS(false), mesh.WithSeeds(strings.Split(cfg.Seeds, ",")...))
	} else {
		opts = append(opts, mesh.WithMDNS(true))
	}
	return mesh.New(opts...)
}

func closeNode(n *mesh.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = n.Close(ctx)
}

// awaitComponents waits until n active components of kind are visible.
func awaitComponents(ctx context.Context, node *mesh.Node, kind mesh.Kind, n int) error {
	ctx, cancel := context.WithTimeout(ctx, awaitPeers)
	defer cancel()
	env := node.Environment()
	err := node.Await(ctx, func(cs []mesh.Component) bool {
		k := 0
		for _, c := range cs {
			if c.Kind == kind && c.Environment == env && c.State == mesh.StateActive {
				k++
			}
		}
		return k >= n
	})
	if err != nil {
		// Say what the node did see, so a discovery problem can be reported.
		k := 0
		var seen []string
		for _, c := range node.Catalogue() {
			if c.Kind == kind {
				k++
			}
			seen = append(seen, fmt.Sprintf("%s/%s@%s env=%q state=%s", c.Kind, c.Name, c.Node, c.Environment, c.State))
		}
		var members []string
		for _, m := range node.Members() {
			members = append(members, m.ID+"@"+m.Addr)
		}
		return fmt.Errorf("waiting for %d %s (saw %d): %w; members %v; catalogue %v", n, kind, k, err, members, seen)
	}
	return nil
}

func warrenResponder(ctx context.Context, cfg roleConfig) error {
	node, err := warrenNode(cfg)
	if err != nil {
		return err
	}
	defer closeNode(node)
	r, err := responder.New("bench", responder.WithMesh(node))
	if err != nil {
		return err
	}
	responder.Handle(r, reqType, func(_ context.Context, b []byte) ([]byte, error) { return b, nil })
	emit(event{Ev: "ready"})
	<-ctx.Done() // the benchmark kills the process
	return nil
}

func warrenRequester(ctx context.Context, cfg roleConfig) error {
	node, err := warrenNode(cfg)
	if err != nil {
		return err
	}
	defer closeNode(node)
	opts := []requester.Option{requester.WithMesh(node)}
	if cfg.Retry > 0 {
		opts = append(opts, requester.WithRetry(cfg.Retry))
	}
	if cfg.MaxPending > 0 {
		opts = append(opts, requester.WithMaxPending(cfg.MaxPending))
	}
	req, err := requester.New("bench", opts...)
	if err != nil {
		return err
	}
	switch cfg.Mode {
	case "load":
		return warrenLoad(ctx, cfg, node, req)
	case "first":
		var out []byte
		if err := req.Send(ctx, reqType, make([]byte, 16), &out); err != nil {
			return err
		}
		emit(event{Ev: "first", T: time.Now().UnixNano()})
		return nil
	case "held":
		return warrenHeld(ctx, cfg, req, false)
	case "hold":
		return warrenHeld(ctx, cfg, req, true)
	case "fail":
		return warrenFail(ctx, cfg, node, req)
	}
	return fmt.Errorf("unknown requester mode %q", cfg.Mode)
}

func warrenLoad(ctx context.Context, cfg roleConfig, node *mesh.Node, req *requester.Requester) error {
	if err := awaitComponents(ctx, node, mesh.KindResponder, max(cfg.Responders, 1)); err != nil {
		return err
	}
	data := make([]byte, cfg.Payload)
	var out []byte
	if err := req.Send(ctx, reqType, data, &out); err != nil {
		return fmt.Errorf("first request: %w", err)
	}
	emit(event{Ev: "first", T: time.Now().UnixNano()})
	outs := make([][]byte, cfg.Conc)
	return runCallers(ctx, cfg, cfg.Conc, func(i int) error {
		return req.Send(ctx, reqType, data, &outs[i])
	})
}

// warrenHeld sends cfg.Count requests while no responder exists and reports
// when they are all held ("held") and, unless hold, when all are answered
// ("done"). With hold it first waits for "go" on stdin, so the benchmark can
// read the process's memory before and after.
func warrenHeld(ctx context.Context, cfg roleConfig, req *requester.Requester, hold bool) error {
	if hold {
		emit(event{Ev: "ready"})
		if err := waitCommand(ctx, "go"); err != nil {
			return err
		}
	}
	// Requests are sent with Go: like cote's callbacks, a held request
	// costs no goroutine of the caller.
	errc := make(chan error, 1)
	done := make(chan struct{})
	data := make([]byte, 16)
	calls := make([]*requester.Pending, cfg.Count)
	for i := range calls {
		calls[i] = req.Go(ctx, reqType, data, nil)
	}
	go func() {
		for _, p := range calls {
			if err := p.Wait(); err != nil {
				errc <- err
				return
			}
		}
		emit(event{Ev: "done", T: time.Now().UnixNano()})
		close(done)
	}()
	deadline := time.Now().Add(awaitPeers)
	for req.Stats().Held < cfg.Count {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d requests held after %v", req.Stats().Held, cfg.Count, awaitPeers)
		}
		select {
		case err := <-errc:
			return fmt.Errorf("held request: %w", err)
		case <-time.After(time.Millisecond):
		}
	}
	held := event{Ev: "held", N: float64(cfg.Count)}
	if hold {
		var ms runtime.MemStats
		runtime.GC() // live heap only
		runtime.ReadMemStats(&ms)
		held.Stack, held.Heap, held.Goroutines = ms.StackInuse, ms.HeapAlloc, runtime.NumGoroutine()
	}
	emit(held)
	select {
	case <-done:
		return nil
	case err := <-errc:
		if hold && errors.Is(err, context.DeadlineExceeded) {
			return nil
		}
		return fmt.Errorf("held request: %w", err)
	case <-ctx.Done():
		if hold {
			return nil
		}
		return ctx.Err()
	}
}

// warrenFail runs a load over the responders while the benchmark kills one,
// and counts the fate of every request. Each payload starts with the
// request's id; a reply that does not echo it, or a second reply for an id,
// counts as answered twice.
func warrenFail(ctx context.Context, cfg roleConfig, node *mesh.Node, req *requester.Requester) error {
	if err := awaitComponents(ctx, node, mesh.KindResponder, max(cfg.Responders, 1)); err != nil {
		return err
	}
	var (
		stop                           atomic.Bool
		issued, answered, failed, dups atomic.Uint64
		mu                             sync.Mutex
		seen                           = make([]uint64, 1<<18) // bitset of answered ids
	)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range cfg.Conc {
		wg.Go(func() {
			data := make([]byte, max(cfg.Payload, 8))
			var out []byte
			for !stop.Load() {
				id := issued.Add(1) - 1
				binary.BigEndian.PutUint64(data, id)
				err := req.Send(lctx, reqType, data, &out)
				switch {
				case lctx.Err() != nil:
					return // past the grace period: counted as lost
				case err != nil:
					failed.Add(1)
					continue
				}
				mu.Lock()
				word, bit := (id/64)%uint64(len(seen)), uint64(1)<<(id%64)
				twice := seen[word]&bit != 0
				seen[word] |= bit
				mu.Unlock()
				if twice || len(out) != len(data) || binary.BigEndian.Uint64(out) != id {
					dups.Add(1)
					continue
				}
				answered.Add(1)
			}
		})
	}
	emit(event{Ev: "measuring"})
	if err := sleepCtx(ctx, time.Duration(cfg.MeasureMS)*time.Millisecond); err != nil {
		return err
	}
	stop.Store(true)
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(time.Duration(cfg.GraceMS) * time.Millisecond):
	}
	is, an, fa, du := issued.Load(), answered.Load(), failed.Load(), dups.Load()
	cancel()
	wg.Wait()
	emit(event{Ev: "result", Issued: is, Answered: an, Failed: fa, Retried: req.Stats().Retried,
		Lost: is - an - fa - du, Dup: du})
	return nil
}

func warrenPublisher(ctx context.Context, cfg roleConfig) error {
	node, err := warrenNode(cfg)
	if err != nil {
		return err
	}
	defer closeNode(node)
	pub, err := publisher.New("bench", publisher.WithMesh(node))
	if err != nil {
		return err
	}
	if err := awaitComponents(ctx, node, mesh.KindSubscriber, max(cfg.Subs, 1)); err != nil {
		return err
	}
	emit(event{Ev: "ready"})
	data := make([]byte, cfg.Payload)
	end := time.Now().Add(time.Duration(cfg.WarmupMS+cfg.MeasureMS+cfg.GraceMS) * time.Millisecond)
	for time.Now().Before(end) {
		for range 256 {
			if err := pub.Publish(ctx, topic, data); err != nil {
				return err
			}
		}
	}
	return nil
}

func warrenSubscriber(ctx context.Context, cfg roleConfig) error {
	node, err := warrenNode(cfg)
	if err != nil {
		return err
	}
	defer closeNode(node)
	sub, err := subscriber.New("bench", subscriber.WithMesh(node))
	if err != nil {
		return err
	}
	var (
		w     window
		count atomic.Int64
		once  sync.Once
	)
	result := make(chan event, 1)
	subscriber.Handle(sub, topic, func(_ context.Context, _ []byte) {
		switch w.get() {
		case 0:
			once.Do(func() {
				go func() {
					d, err := w.run(ctx, cfg)
					if err == nil {
						n := count.Load()
						result <- event{Ev: "result", N: float64(n), Secs: d.Seconds(), Rate: float64(n) / d.Seconds()}
					}
				}()
			})
		case 1:
			count.Add(1)
		}
	})
	emit(event{Ev: "ready"})
	select {
	case e := <-result:
		emit(e)
	case <-ctx.Done():
		return ctx.Err()
	}
	<-ctx.Done() // the benchmark kills the process
	return nil
}
