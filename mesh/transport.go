package mesh

import (
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// maxGossipStreams bounds the gossip TCP streams (push/pull, joins) a node
// serves at once. memberlist starts a goroutine per accepted stream and
// keeps it up to its TCP timeout, so a client opening connections by the
// thousand would otherwise exhaust the node's file descriptors. Real
// push/pulls are short and few: one per peer per push/pull interval.
const maxGossipStreams = 64

// boundedTransport is memberlist's own TCP/UDP transport with a cap on the
// inbound streams being served: beyond it, new ones are closed at once (a
// peer retries at its next push/pull or join).
type boundedTransport struct {
	*memberlist.NetTransport
	out   chan net.Conn
	slots chan struct{}
	stop  chan struct{} // closed by Shutdown: refuse everything from now on
	inner chan struct{} // closed once memberlist's transport is shut down
	done  chan struct{} // closed when admit has returned
	once  sync.Once
	log   *slog.Logger
}

func newBoundedTransport(nt *memberlist.NetTransport, max int, log *slog.Logger) *boundedTransport {
	t := &boundedTransport{
		NetTransport: nt,
		out:          make(chan net.Conn),
		slots:        make(chan struct{}, max),
		stop:         make(chan struct{}),
		inner:        make(chan struct{}),
		done:         make(chan struct{}),
		log:          log,
	}
	go t.admit()
	return t
}

// admit hands inbound streams to memberlist while there are free slots.
// It reads the inner transport's streams until that transport has shut
// down: the transport's accept loop blocks on handing a stream over, and
// its Shutdown waits for that loop.
func (t *boundedTransport) admit() {
	defer close(t.done)
	var refused int
	var lastWarn time.Time
	in := t.NetTransport.StreamCh()
	for {
		var c net.Conn
		select {
		case c = <-in:
		case <-t.inner:
			return
		}
		select {
		case <-t.stop:
			c.Close()
			continue
		default:
		}
		select {
		case t.slots <- struct{}{}:
		default:
			c.Close()
			refused++
			if time.Since(lastWarn) >= time.Second {
				t.log.Warn("gossip listener: too many streams at once; refusing new ones",
					"limit", cap(t.slots), "refused", refused)
				lastWarn, refused = time.Now(), 0
			}
			continue
		}
		sc := &slotConn{Conn: c, release: func() { <-t.slots }}
		select {
		case t.out <- sc:
		case <-t.stop:
			sc.Close()
		}
	}
}

// StreamCh returns the admitted inbound streams.
func (t *boundedTransport) StreamCh() <-chan net.Conn { return t.out }

// Shutdown refuses new streams and shuts memberlist's transport down, then
// waits for admit to return.
func (t *boundedTransport) Shutdown() error {
	var err error
	t.once.Do(func() {
		close(t.stop)
		err = t.NetTransport.Shutdown()
		close(t.inner)
	})
	<-t.done
	return err
}

// slotConn frees its slot when memberlist closes it (it always does, at the
// end of the stream or at its timeout).
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
