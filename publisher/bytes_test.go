package publisher_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/subscriber"
)

// publishBytes publishes a payload of n bytes on topic "load", filled with
// tag so the handler can tell events apart.
func publishBytes(ctx context.Context, p interface {
	Publish(context.Context, string, any) error
}, n int, tag byte) error {
	return p.Publish(ctx, "load", bytes.Repeat([]byte{tag}, n))
}

func waitHandled(t *testing.T, got *atomic.Int64, want int64) {
	t.Helper()
	meshtest.Eventually(t, waitFor, func() error {
		if n := got.Load(); n != want {
			return fmt.Errorf("handled %d, want %d", n, want)
		}
		return nil
	})
}

// blockedSubscriber starts a subscriber to "load" on n, visible from
// pubNode, whose handler blocks until release is called (at cleanup at the
// latest, before the subscriber closes); got counts the events handled.
func blockedSubscriber(t *testing.T, pubNode, n *mesh.Node, name string, opts ...subscriber.Option) (s *subscriber.Subscriber, got *atomic.Int64, release func()) {
	t.Helper()
	gate := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	got = new(atomic.Int64)
	s = newSub(t, n, name, opts...)
	t.Cleanup(release) // runs before newSub's Close
	s.On("load", func(context.Context, *subscriber.Message) {
		<-gate
		got.Add(1)
	})
	waitSubscribers(t, pubNode, 1)
	return s, got, release
}

// A subscriber bounds what it buffers in bytes as well as in events: with
// a 64 KiB bound and a blocked handler, events of 16 000 bytes stop at
// four (the fifth would exceed it), though the event buffer has room for
// a thousand; Publish then waits until its ctx ends, and everything flows
// once the handler is released.
func TestSubscriberBufferBoundedInBytes(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 2)
	pub := newPub(t, nodes[0])
	slow, got, release := blockedSubscriber(t, nodes[0], nodes[1], "slow", subscriber.WithBuffer(1000), subscriber.WithBufferBytes(64<<10))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for i := range 4 {
		if err := publishBytes(ctx, pub, 16000, byte(i)); err != nil {
			t.Fatalf("Publish #%d: %v", i, err)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	err := publishBytes(short, pub, 16000, 4)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fifth 16 000-byte event to a 64 KiB buffer: Publish = %v, want a deadline error", err)
	}
	meshtest.Eventually(t, waitFor, func() error {
		if st := slow.Stats(); st.Received != 4 {
			return fmt.Errorf("subscriber received %d, want 4", st.Received)
		}
		return nil
	})
	if st := slow.Stats(); st.Overflow != 0 {
		t.Errorf("overflow %d: the publisher exceeded the byte window", st.Overflow)
	}

	release()
	for i := range 40 {
		if err := publishBytes(ctx, pub, 16000, byte(i)); err != nil {
			t.Fatalf("Publish after release #%d: %v", i, err)
		}
	}
	waitHandled(t, got, 44)
}

// An event larger than the whole byte bound is not stuck: it goes when
// nothing else waits, and the next one waits for it to be handled.
func TestEventLargerThanByteBufferGetsThrough(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 2)
	pub := newPub(t, nodes[0])
	_, got, release := blockedSubscriber(t, nodes[0], nodes[1], "small", subscriber.WithBufferBytes(1024))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := publishBytes(ctx, pub, 10<<10, 1); err != nil {
		t.Fatalf("a 10 KiB event to a 1 KiB buffer with nothing waiting: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	err := publishBytes(short, pub, 10<<10, 2)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second 10 KiB event while the first waits: Publish = %v, want a deadline error", err)
	}
	release()
	for i := range 5 {
		if err := publishBytes(ctx, pub, 10<<10, byte(i)); err != nil {
			t.Fatalf("Publish after release #%d: %v", i, err)
		}
	}
	waitHandled(t, got, 6)
}

// Credits held back while the subscriber is idle never starve a publisher
// of a large event: a run of small events then one near the bound, over
// and over, all arrive, in order.
func TestByteWindowNeverStalls(t *testing.T) {
	meshtest.CheckGoroutines(t)
	nodes := cluster(t, 2)
	pub := newPub(t, nodes[0])
	s := newSub(t, nodes[1], "mixed", subscriber.WithBufferBytes(8<<10))
	var mu sync.Mutex
	var tags []byte
	s.On("load", func(_ context.Context, m *subscriber.Message) {
		var b []byte
		if err := m.Decode(&b); err != nil || len(b) == 0 {
			t.Errorf("decode: %v (%d bytes)", err, len(b))
			return
		}
		mu.Lock()
		tags = append(tags, b[0])
		mu.Unlock()
	})
	waitSubscribers(t, nodes[0], 1)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	const n = 400
	for i := range n {
		size := 200
		if i%10 == 9 {
			size = 7000
		}
		if err := publishBytes(ctx, pub, size, byte(i)); err != nil {
			t.Fatalf("Publish #%d (%d bytes): %v; subscriber %+v", i, size, err, s.Stats())
		}
	}
	meshtest.Eventually(t, waitFor, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(tags) != n {
			return fmt.Errorf("handled %d, want %d", len(tags), n)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for i, tag := range tags {
		if tag != byte(i) {
			t.Fatalf("event %d has tag %d: out of order", i, tag)
		}
	}
}
