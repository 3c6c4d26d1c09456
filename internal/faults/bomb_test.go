package faults

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/codec"
	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/internal/wire"
	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
	"github.com/warrenmesh/warren/subscriber"
)

// Size bombs: payloads of a few bytes whose msgpack headers claim billions
// of elements, sent by a hostile peer that writes frames itself (warren's
// own encoder refuses to write them). Decoding them must fail with a clear
// error and allocate next to nothing, and the process keeps serving.
var bombs = map[string][]byte{
	"array of 4G":                  {0xdd, 0xff, 0xff, 0xff, 0xff},
	"map of 4G":                    {0xdf, 0xff, 0xff, 0xff, 0xff},
	"map key to 4G array":          {0x81, 0xa1, 'k', 0xdd, 0xff, 0xff, 0xff, 0xff},
	"timestamp read as a map bomb": {0xd7, 0xff, 0x81, 0xa1, 'k', 0xdd, 0xff, 0xff, 0xff, 0xff},
	"empty ext then a map of 4G":   {0xc7, 0x00, 0x00, 0xdf, 0xdf, 0x00, 0x02, 0x00},
}

// rawPeer is a component that writes frames as it likes.
type rawPeer struct {
	onFrame func(from string, f *wire.Frame)
}

func (p *rawPeer) HandleFrame(from string, f *wire.Frame) {
	if p.onFrame != nil {
		p.onFrame(from, f)
	}
}
func (p *rawPeer) PeerDown(string) {}

func findComponent(t *testing.T, n *mesh.Node, kind mesh.Kind, name string) mesh.Component {
	t.Helper()
	var found mesh.Component
	meshtest.Eventually(t, 5*time.Second, func() error {
		for _, c := range n.Catalogue() {
			if c.Kind == kind && c.Name == name && len(c.Handles) > 0 {
				found = c
				return nil
			}
		}
		return errors.New(name + " not visible")
	})
	return found
}

func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestSizeBombsInRequests(t *testing.T) {
	req, resp, n := reqres(t)
	var decodeErrs atomic.Int64
	handle(t, req, n, resp, "bomb", func(ctx context.Context, r *responder.Request) (any, error) {
		var m map[string][]int
		err := r.Decode(&m)
		if errors.Is(err, codec.ErrLimits) {
			decodeErrs.Add(1)
		}
		return nil, err
	})
	target := findComponent(t, n, mesh.KindResponder, "contain")
	hostile := &rawPeer{}
	replies := make(chan *wire.Header, len(bombs))
	hostile.onFrame = func(from string, f *wire.Frame) {
		if f.Kind == wire.KindResponse {
			h := f.Header
			replies <- &h
		}
	}
	port, err := n.Register(mesh.Component{Kind: mesh.KindRequester, Name: "hostile"}, hostile)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	seq := uint64(0)
	grew := allocated(func() {
		for name, b := range bombs {
			seq++
			h := wire.Header{To: target.ID, Seq: seq, Name: "bomb"}
			if err := port.Send(ctxT(t, 5*time.Second), target.Node, wire.KindRequest, &h, b); err != nil {
				t.Fatalf("%s: send: %v", name, err)
			}
			select {
			case rh := <-replies:
				if rh.Status != wire.StatusError {
					t.Fatalf("%s: reply status %d, want an error", name, rh.Status)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: no reply", name)
			}
		}
	})
	if int(decodeErrs.Load()) != len(bombs) {
		t.Fatalf("%d of %d bombs refused with ErrLimits", decodeErrs.Load(), len(bombs))
	}
	if grew > 64<<20 {
		t.Fatalf("the bombs made the processes allocate %d MB", grew>>20)
	}
	stillServes(t, req)
}

func TestSizeBombInAReply(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	hostile := &rawPeer{}
	port, err := nodes[1].Register(mesh.Component{Kind: mesh.KindResponder, Name: "hostile", Handles: []string{"bomb"}}, hostile)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	hostile.onFrame = func(from string, f *wire.Frame) {
		if f.Kind == wire.KindRequest {
			h := wire.Header{To: f.Header.From, Seq: f.Header.Seq, Status: wire.StatusOK}
			port.Post(from, wire.KindResponse, &h, bombs["map of 4G"])
		}
	}
	req, err := requester.New("victim", requester.WithMesh(nodes[0]), requester.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	closeAll(t, req)
	var got error
	grew := allocated(func() {
		_, got = requester.Call[map[string][]int](ctxT(t, 5*time.Second), req, "bomb", "x")
	})
	if !errors.Is(got, requester.ErrDecode) {
		t.Fatalf("err = %v, want ErrDecode", got)
	}
	if grew > 64<<20 {
		t.Fatalf("the reply made the requester allocate %d MB", grew>>20)
	}
}

func TestSizeBombInAnEvent(t *testing.T) {
	nodes := meshtest.Cluster(t, 2)
	sub, err := subscriber.New("victim", subscriber.WithMesh(nodes[1]))
	if err != nil {
		t.Fatal(err)
	}
	closeAll(t, sub)
	errs := make(chan error, len(bombs)+1)
	sub.On("bomb.*", func(ctx context.Context, m *subscriber.Message) {
		var v map[string][]int
		errs <- m.Decode(&v)
	})
	target := findComponent(t, nodes[0], mesh.KindSubscriber, "victim")
	port, err := nodes[0].Register(mesh.Component{Kind: mesh.KindPublisher, Name: "hostile"}, &rawPeer{})
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	grew := allocated(func() {
		for name, b := range bombs {
			h := wire.Header{To: target.ID, Name: "bomb.x"}
			if err := port.Send(ctxT(t, 5*time.Second), target.Node, wire.KindEvent, &h, b); err != nil {
				t.Fatalf("%s: send: %v", name, err)
			}
			select {
			case err := <-errs:
				if !errors.Is(err, codec.ErrLimits) {
					t.Fatalf("%s: Decode = %v, want ErrLimits", name, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: event not delivered", name)
			}
		}
	})
	if grew > 64<<20 {
		t.Fatalf("the events made the subscriber allocate %d MB", grew>>20)
	}
}
