package responder

import (
	"context"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/requester"
)

// pair starts two nodes, a responder named name on one (with a short drain
// grace) and a requester on the other, and checks at the end that no
// goroutine is left. The test registers the responder's handlers and
// closes it; the requester is closed for it. ctx bounds its requests.
func pair(t *testing.T, name string) (r *Responder, req *requester.Requester, ctx context.Context) {
	t.Helper()
	meshtest.CheckGoroutines(t)
	nodes := meshtest.Cluster(t, 2)
	r, err := New(name, WithMesh(nodes[1]), WithDrainGrace(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	req, err = requester.New("client", requester.WithMesh(nodes[0]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { req.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return r, req, ctx
}
