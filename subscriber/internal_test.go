package subscriber

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/internal/wire"
)

// These tests drive the read-loop side directly, as a misbehaving or
// disconnected publisher would, without a real one.

func eventFrame(pubID uint64, topic string, payload []byte) *wire.Frame {
	return &wire.Frame{Kind: wire.KindEvent, Header: wire.Header{From: pubID, Name: topic}, Payload: payload}
}

func blockedSubscriber(t *testing.T, buffer int) (*Subscriber, chan struct{}) {
	t.Helper()
	meshtest.CheckGoroutines(t)
	n := meshtest.Node(t)
	s, err := New("unit", WithMesh(n), WithBuffer(buffer))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	s.On("t", func(context.Context, *Message) { <-release })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s, release
}

func waitQueued(t *testing.T, s *Subscriber, n int) {
	t.Helper()
	meshtest.Eventually(t, 5*time.Second, func() error {
		if st := s.Stats(); st.Queued != n {
			return fmt.Errorf("queued %d, want %d", st.Queued, n)
		}
		return nil
	})
}

// TestOverflowBeyondHardLimit: a publisher that ignores its window cannot
// make the buffer grow past twice its size.
func TestOverflowBeyondHardLimit(t *testing.T) {
	s, release := blockedSubscriber(t, 2)
	h := (*handler)(s)
	payload := []byte{0xa1, 'x'}
	for range 10 {
		h.HandleFrame("rogue-node", eventFrame(9, "t", payload))
	}
	st := s.Stats()
	if st.Received != 4 || st.Overflow != 6 {
		t.Errorf("stats %+v, want 4 received (twice the buffer) and 6 overflowed", st)
	}
	// Another publisher has a window of its own.
	h.HandleFrame("rogue-node", eventFrame(10, "t", payload))
	if st := s.Stats(); st.Received != 5 {
		t.Errorf("second publisher's event refused: %+v", st)
	}
	close(release)
	waitQueued(t, s, 0)
}

// TestPeerDownForgivesCredits: events held from a publisher whose
// connection dropped are not credited again (the publisher has reset its
// window), so its window stays exact.
func TestPeerDownForgivesCredits(t *testing.T) {
	s, release := blockedSubscriber(t, 8)
	h := (*handler)(s)
	for range 3 {
		h.HandleFrame("lost-node", eventFrame(5, "t", nil))
	}
	waitQueued(t, s, 3)
	h.PeerDown("lost-node")
	h.HandleFrame("lost-node", eventFrame(5, "t", nil)) // on the new connection
	s.qmu.Lock()
	ps := s.pubs[pubKey{"lost-node", 5}]
	var queued, forgive int
	if ps != nil {
		queued, forgive = ps.queued, ps.forgive
	}
	s.qmu.Unlock()
	if queued != 4 || forgive != 3 {
		t.Fatalf("queued %d forgive %d, want 4 and 3", queued, forgive)
	}
	close(release)
	waitQueued(t, s, 0)
	meshtest.Eventually(t, 5*time.Second, func() error {
		s.qmu.Lock()
		defer s.qmu.Unlock()
		if ps.queued != 0 || ps.forgive != 0 {
			return fmt.Errorf("queued %d forgive %d, want 0 and 0", ps.queued, ps.forgive)
		}
		return nil
	})
	// A peer that went away with nothing outstanding is forgotten.
	h.PeerDown("lost-node")
	s.qmu.Lock()
	left := len(s.pubs)
	s.qmu.Unlock()
	if left != 0 {
		t.Errorf("%d publisher states kept after PeerDown", left)
	}
}

func TestInvalidTopicFromNetworkIsUnmatched(t *testing.T) {
	meshtest.CheckGoroutines(t)
	n := meshtest.Node(t)
	s, err := New("unit", WithMesh(n))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	s.On("**", func(context.Context, *Message) {})
	h := (*handler)(s)
	for _, topic := range []string{"a..b", "*", "", "a.**"} {
		h.HandleFrame("rogue", eventFrame(1, topic, nil))
	}
	h.HandleFrame("rogue", eventFrame(1, "ok", nil))
	h.HandleFrame("rogue", &wire.Frame{Kind: wire.KindCredit}) // ignored
	meshtest.Eventually(t, 5*time.Second, func() error {
		if st := s.Stats(); st.Unmatched != 4 || st.Delivered != 1 {
			return fmt.Errorf("stats %+v, want 4 unmatched, 1 delivered", st)
		}
		return nil
	})
}
