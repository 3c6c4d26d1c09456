package requester

import "testing"

func TestInflightTable(t *testing.T) {
	var tab inflight
	calls := make([]*call, 5)
	seqs := map[uint64]bool{}
	for i := range calls {
		calls[i] = &call{}
		seq, ok := tab.add(calls[i])
		if !ok || seq == 0 || seqs[seq] {
			t.Fatalf("add %d: seq %d, ok %v (seen: %v)", i, seq, ok, seqs[seq])
		}
		seqs[seq] = true
		calls[i].seq = seq
	}
	if tab.len() != 5 {
		t.Fatalf("len %d, want 5", tab.len())
	}
	for i, c := range calls {
		if got := tab.get(c.seq); got != c {
			t.Fatalf("get(call %d) = %p, want %p", i, got, c)
		}
	}
	// A late reply: the slot is reused by a new call, under a new number.
	old := calls[2].seq
	tab.remove(old)
	if tab.get(old) != nil {
		t.Fatal("a removed call is still found")
	}
	nc := &call{}
	seq, _ := tab.add(nc)
	nc.seq = seq
	if seq&slotMask != old&slotMask || seq == old {
		t.Fatalf("new call: seq %#x, old %#x: want the freed slot under another number", seq, old)
	}
	if tab.get(old) != nil || tab.get(seq) != nc {
		t.Fatal("the old number finds the slot's new call, or the new number does not")
	}
	if tab.get(1<<slotBits|12345) != nil || tab.get(0) != nil {
		t.Fatal("numbers of slots never used find a call")
	}
	// each sees every call once, and may remove them.
	seen := 0
	tab.each(func(c *call) {
		seen++
		tab.remove(c.seq)
	})
	if seen != 5 || tab.len() != 0 {
		t.Fatalf("each saw %d calls, %d left; want 5 and 0", seen, tab.len())
	}
}

func TestInflightCounterWrapsAboveZero(t *testing.T) {
	tab := inflight{count: maxCount - 1}
	for i := 0; i < 3; i++ {
		c := &call{}
		seq, ok := tab.add(c)
		if !ok || seq == 0 || seq>>slotBits == 0 {
			t.Fatalf("add at counter %d: seq %#x, ok %v", tab.count, seq, ok)
		}
		c.seq = seq
		tab.remove(seq)
	}
}

func TestInflightFullAndShrink(t *testing.T) {
	tab := inflight{max: 3}
	var cs []*call
	for i := 0; i < 3; i++ {
		c := &call{}
		seq, ok := tab.add(c)
		if !ok {
			t.Fatalf("add %d refused below the bound", i)
		}
		c.seq = seq
		cs = append(cs, c)
	}
	if _, ok := tab.add(&call{}); ok {
		t.Fatal("add past the bound accepted")
	}
	tab.remove(cs[0].seq)
	if _, ok := tab.add(&call{}); !ok {
		t.Fatal("add refused with a slot free")
	}

	big := inflight{}
	for i := 0; i <= shrinkAbove; i++ {
		c := &call{}
		c.seq, _ = big.add(c)
		cs = append(cs, c)
	}
	big.each(func(c *call) { big.remove(c.seq) })
	if big.slots != nil || big.free != nil {
		t.Fatalf("emptied table keeps %d slots", len(big.slots))
	}
}
