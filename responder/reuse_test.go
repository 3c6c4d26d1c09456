package responder

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Jobs are reused, so what a handler keeps after it returns must not be:
// a request kept by a handler registered with On still holds its own type
// and payload, and a context kept by any handler is still the one of its
// own request (cancelled once the handler returned, with its own
// deadline), however many requests the responder serves afterwards.
func TestKeptRequestsAndContextsOutliveJobReuse(t *testing.T) {
	r, req, ctx := pair(t, "keeper")
	type keptReq struct {
		req  *Request
		ctx  context.Context
		want string
	}
	var (
		mu       sync.Mutex
		keptReqs []keptReq
		keptCtxs []context.Context
		deadline []time.Time
	)
	r.On("keep", func(ctx context.Context, req *Request) (any, error) {
		var s string
		if err := req.Decode(&s); err != nil {
			return nil, err
		}
		mu.Lock()
		keptReqs = append(keptReqs, keptReq{req, ctx, s})
		mu.Unlock()
		return s, nil
	})
	Handle(r, "keep.ctx", func(ctx context.Context, s string) (string, error) {
		d, _ := ctx.Deadline()
		mu.Lock()
		keptCtxs = append(keptCtxs, ctx)
		deadline = append(deadline, d)
		mu.Unlock()
		return s, nil
	})
	for i := range 300 {
		// Small and large payloads (the job keeps both kinds of buffer).
		s := fmt.Sprintf("%d-%s", i, strings.Repeat("x", i%70))
		typ := "keep"
		if i%2 == 1 {
			typ = "keep.ctx"
		}
		var out string
		if err := req.Send(ctx, typ, s, &out); err != nil || out != s {
			t.Fatalf("request %d: %q, %v", i, out, err)
		}
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keptReqs) != 150 || len(keptCtxs) != 150 {
		t.Fatalf("%d requests and %d contexts kept, want 150 each", len(keptReqs), len(keptCtxs))
	}
	for i, k := range keptReqs {
		var s string
		if err := k.req.Decode(&s); err != nil || s != k.want || k.req.Type != "keep" {
			t.Fatalf("kept request %d: type %q, payload %q (%v), want %q", i, k.req.Type, s, err, k.want)
		}
		if k.ctx.Err() != context.Canceled {
			t.Fatalf("kept context %d: Err %v after its handler returned", i, k.ctx.Err())
		}
	}
	for i, c := range keptCtxs {
		select {
		case <-c.Done():
		default:
			t.Fatalf("kept context %d is not done after its handler returned", i)
		}
		if d, _ := c.Deadline(); !d.Equal(deadline[i]) {
			t.Fatalf("kept context %d: deadline %v, was %v", i, d, deadline[i])
		}
	}
}
