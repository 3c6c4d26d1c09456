package mesh

import (
	"testing"
	"time"
)

// TestGuardLooksLessOftenWhileItFindsNothing checks the guard's period: it
// doubles, up to lendCheckMax, each time the guard finds only fresh lends
// and free periods, and comes back to lendCheck when the guard takes the
// reading back.
func TestGuardLooksLessOftenWhileItFindsNothing(t *testing.T) {
	n := &Node{}
	c := &conn{}
	n.initLend(c)
	defer c.guardT.Stop()
	look := func() time.Duration {
		t.Helper()
		n.guard(c)
		c.guardT.Stop() // the test looks itself
		c.guardOn.Store(false)
		return time.Duration(c.guardEvery.Load())
	}
	if got := time.Duration(c.guardEvery.Load()); got != lendCheck {
		t.Fatalf("first period %v, want %v", got, lendCheck)
	}
	c.lent.Store(lendOut) // a handler runs on the read loop, just started
	want := lendCheck
	for range 8 {
		c.lentAt.Store(monoNow() + int64(time.Hour)) // fresh however slow the test runs
		want = min(2*want, lendCheckMax)
		if got := look(); got != want {
			t.Fatalf("after a look that found a fresh lend: period %v, want %v", got, want)
		}
	}
	if want != lendCheckMax {
		t.Fatalf("the period never reached %v", lendCheckMax)
	}
	// The handler returned; a caller left the connection free and went away.
	c.lent.Store(lendNone)
	c.freeAt.Store(monoNow() - int64(time.Millisecond))
	c.borrow.Store(readFree)
	if got := look(); got != lendCheck {
		t.Fatalf("after taking the reading back: period %v, want %v", got, lendCheck)
	}
	if c.borrow.Load() != readLoop || len(c.resume) != 1 {
		t.Fatalf("the free connection was not given back to its read loop (borrow %d, resume %d)", c.borrow.Load(), len(c.resume))
	}
	// Nothing to watch: the guard is left disarmed.
	if c.guardOn.Load() {
		t.Fatal("guard armed with nothing to watch")
	}
}
