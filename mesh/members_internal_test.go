package mesh

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestJoinedMemberReachableOnceVisible: a node that joins is recorded as a
// peer before Members (and the catalogue) show it, so a caller that waits
// for a member and then sends to it never meets ErrUnknownPeer. The test
// holds the peer table's lock while a join is notified: the member must not
// become visible before its peer is recorded.
func TestJoinedMemberReachableOnceVisible(t *testing.T) {
	a, err := New(WithName("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.Close(ctx)
	}()
	ghost := &memberlist.Node{Name: "ghost-0123abcd", Addr: net.ParseIP("127.0.0.1"), Port: 9, Meta: []byte(metaV1 + "127.0.0.1:9")}
	visible := func() bool {
		for _, m := range a.Members() {
			if m.ID == ghost.Name {
				return true
			}
		}
		return false
	}
	a.peerMu.Lock()
	joined := make(chan struct{})
	go func() {
		defer close(joined)
		(*events)(a).NotifyJoin(ghost)
	}()
	early := false
	for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline) && !early; {
		early = visible()
		time.Sleep(5 * time.Millisecond)
	}
	a.peerMu.Unlock()
	<-joined
	if early {
		t.Fatal("the member was visible before its peer was recorded")
	}
	if !visible() || a.peerNow(ghost.Name) == nil {
		t.Fatal("after the join, the member is not both visible and a peer")
	}
	(*events)(a).NotifyLeave(ghost)
}
