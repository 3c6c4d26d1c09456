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
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	log   *slog.Logger
}

func newBoundedTransport(nt *memberlist.NetTransport, max int, log *slog.Logger) *boundedTransport {
	t := &boundedTransport{
		NetTransport: nt,
		out:          make(chan net.Conn),
		slots:        make(chan struct{}, max),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
		log:          log,
	}
	go t.admit()
	return t
}

func (t *boundedTransport) admit() {
	defer close(t.done)
	var refused int
	var lastWarn time.Time
	in := t.NetTransport.StreamCh()
	for {
		var c net.Conn
		select {
		case c = <-in:
		case <-t.stop:
			return
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
		select {
		case t.out <- &slotConn{Conn: c, release: func() { <-t.slots }}:
		case <-t.stop:
			c.Close()
			return
		}
	}
}

// StreamCh returns the admitted inbound streams.
func (t *boundedTransport) StreamCh() <-chan net.Conn { return t.out }

// Shutdown stops admitting streams, then shuts memberlist's transport down.
func (t *boundedTransport) Shutdown() error {
	t.once.Do(func() { close(t.stop) })
	<-t.done
	return t.NetTransport.Shutdown()
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
