package mesh

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// Shutdown must not wait forever for memberlist's accept loop, which
// blocks handing over a stream that arrived while nobody reads them.
func TestBoundedTransportShutdownWithStreamsArriving(t *testing.T) {
	port, err := pickPort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{"127.0.0.1"}, BindPort: port, Logger: log.New(io.Discard, "", 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	bt := newBoundedTransport(nt, 2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// Nobody reads StreamCh (memberlist has stopped): the first stream
	// waits in admit, the next ones in memberlist's accept loop.
	var conns []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(100 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- bt.Shutdown() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown hangs while streams are arriving")
	}
	if err := bt.Shutdown(); err != nil { // idempotent
		t.Fatal(err)
	}
}

// A free port that another process takes between the pick and the bind
// (services starting at once) makes the node pick another, not fail.
func TestPickedPortTakenBeforeBindIsReplaced(t *testing.T) {
	var taken net.Listener
	testHookPortPicked = func(host string, port int) {
		if taken != nil {
			return // only the first pick is stolen
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			t.Errorf("taking the picked port: %v", err)
			return
		}
		taken = l
	}
	defer func() { testHookPortPicked = nil }()
	n, err := New(WithName("racer"))
	if err != nil {
		t.Fatalf("New with its picked port taken before bind: %v", err)
	}
	defer n.Close(context.Background())
	if taken == nil {
		t.Fatal("the hook did not run: no port was picked")
	}
	defer taken.Close()
	if n.Addr() == taken.Addr().String() {
		t.Fatalf("node bound %s, the port taken by someone else", n.Addr())
	}
}
