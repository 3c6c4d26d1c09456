//go:build linux

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
)

// Roles for the request/response tests. A responder answers "work" with its
// node name; a requester reads commands on stdin ("send COUNT CONCURRENCY")
// and reports each batch as one JSON line.

const (
	envDelay   = "WARREN_E2E_DELAY"   // responder: handler delay in ms
	envRetry   = "WARREN_E2E_RETRY"   // requester: WithRetry attempts
	envTimeout = "WARREN_E2E_TIMEOUT" // requester: per-request timeout in ms
)

type batch struct {
	Event    string         `json:"event"` // "progress" or "batch"
	Sent     int64          `json:"sent"`
	Answered int64          `json:"answered"`
	Failed   int64          `json:"failed"`
	Wrong    int64          `json:"wrong"` // replies that did not match their request
	By       map[string]int `json:"by,omitempty"`
	Errors   []string       `json:"errors,omitempty"`
	Retried  uint64         `json:"retried"`
}

type workReply struct {
	ID int    `json:"id"`
	By string `json:"by"`
}

func roleNode(emit func(event)) (*mesh.Node, func(), bool) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel(os.Getenv(mesh.EnvLog))}))
	n, err := mesh.New(mesh.WithLogger(log))
	if err != nil {
		emit(event{Event: "error", Err: err.Error()})
		return nil, nil, false
	}
	closeNode := func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		n.Close(ctx)
	}
	return n, closeNode, true
}

func runResponder() int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	enc := json.NewEncoder(os.Stdout)
	var mu sync.Mutex
	emit := func(e event) { mu.Lock(); enc.Encode(e); mu.Unlock() }
	n, closeNode, ok := roleNode(emit)
	if !ok {
		return 1
	}
	delay, _ := strconv.Atoi(os.Getenv(envDelay))
	r, err := responder.New("worker", responder.WithMesh(n))
	if err != nil {
		emit(event{Event: "error", Err: err.Error()})
		return 1
	}
	responder.Handle(r, "work", func(ctx context.Context, id int) (workReply, error) {
		if delay > 0 {
			time.Sleep(time.Duration(delay) * time.Millisecond)
		}
		return workReply{ID: id, By: n.Name()}, nil
	})
	emit(event{Event: "ready", ID: n.ID(), Addr: n.Addr()})
	select {
	case <-sigs:
	case <-time.After(maxLife):
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	r.Close(ctx) // graceful drain
	closeNode()
	emit(event{Event: "closed"})
	return 0
}

func runRequester() int {
	enc := json.NewEncoder(os.Stdout)
	var mu sync.Mutex
	emitAny := func(v any) { mu.Lock(); enc.Encode(v); mu.Unlock() }
	n, closeNode, ok := roleNode(func(e event) { emitAny(e) })
	if !ok {
		return 1
	}
	defer closeNode()
	retry, _ := strconv.Atoi(os.Getenv(envRetry))
	timeout, _ := strconv.Atoi(os.Getenv(envTimeout))
	if timeout == 0 {
		timeout = 30000
	}
	req, err := requester.New("driver", requester.WithMesh(n), requester.WithRetry(retry),
		requester.WithTimeout(time.Duration(timeout)*time.Millisecond))
	if err != nil {
		emitAny(event{Event: "error", Err: err.Error()})
		return 1
	}
	defer req.Close(context.Background())
	emitAny(event{Event: "ready", ID: n.ID(), Addr: n.Addr()})
	life := time.AfterFunc(maxLife, func() { os.Exit(4) })
	defer life.Stop()
	next := 0
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var count, conc int
		if _, err := fmt.Sscanf(in.Text(), "send %d %d", &count, &conc); err != nil || count <= 0 || conc <= 0 {
			emitAny(event{Event: "error", Err: "bad command " + strconv.Quote(in.Text())})
			continue
		}
		var b batch
		var bmu sync.Mutex
		b.By = map[string]int{}
		var sent, answered, failed, wrong atomic.Int64
		ids := make(chan int, count)
		for i := 0; i < count; i++ {
			ids <- next
			next++
		}
		close(ids)
		stop := make(chan struct{})
		go func() { // progress, so the test can act mid-load
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					emitAny(batch{Event: "progress", Sent: sent.Load(), Answered: answered.Load(), Failed: failed.Load()})
				}
			}
		}()
		var wg sync.WaitGroup
		for g := 0; g < conc; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for id := range ids {
					sent.Add(1)
					rep, err := requester.Call[workReply](context.Background(), req, "work", id)
					switch {
					case err != nil:
						failed.Add(1)
						bmu.Lock()
						if len(b.Errors) < 5 {
							b.Errors = append(b.Errors, err.Error())
						}
						bmu.Unlock()
					case rep.ID != id:
						wrong.Add(1)
					default:
						answered.Add(1)
						bmu.Lock()
						b.By[rep.By]++
						bmu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		close(stop)
		b.Event, b.Sent, b.Answered, b.Failed, b.Wrong = "batch", sent.Load(), answered.Load(), failed.Load(), wrong.Load()
		b.Retried = req.Stats().Retried
		emitAny(b)
	}
	return 0
}
