package requester

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/responder"
)

// A request that finds no responder, while one appears and the dispatcher
// drains the held queue before the request joins it, is still sent at once:
// it must not wait for the next catalogue change (which may never come).
func TestRequestHeldAsResponderAppearsIsSent(t *testing.T) {
	meshtest.CheckGoroutines(t)
	node := meshtest.Node(t)
	req, err := New("client", WithMesh(node))
	if err != nil {
		t.Fatal(err)
	}
	defer req.Close(context.Background())
	var resp *responder.Responder
	var once sync.Once
	testHookBeforeHold = func() {
		once.Do(func() {
			// Between the caller's look at the catalogue and its joining the
			// held queue: a responder appears, and the dispatcher drains the
			// (empty) queue for the new catalogue meanwhile.
			r, err := responder.New("svc", responder.WithMesh(node))
			if err != nil {
				t.Error(err)
				return
			}
			r.On("echo", func(_ context.Context, q *responder.Request) (any, error) {
				var s string
				err := q.Decode(&s)
				return s, err
			})
			resp = r
			deadline := time.Now().Add(5 * time.Second)
			for len(node.View().Components) < 2 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // the dispatcher drains, then waits
		})
	}
	defer func() { testHookBeforeHold = nil }()
	defer func() {
		if resp != nil {
			resp.Close(context.Background())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	got, err := Call[string](ctx, req, "echo", "hi")
	if err != nil || got != "hi" {
		t.Fatalf("Call = %q, %v after %s; want the reply, sent when the responder appeared", got, err, time.Since(start))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("answered after %s", d)
	}
}
