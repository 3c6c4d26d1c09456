package requester

import "cmp"

// inflight is the table of the calls sent and not answered yet, by
// sequence number. A sequence number names its call's slot in its low
// slotBits bits and a counter in the others, so finding, adding and
// removing a call is an index and no hashing; a late reply, to a call
// abandoned since, finds another call (or none) in that slot, with another
// number, and is ignored. Slots are reused last freed first. r.mu guards it.
type inflight struct {
	slots []*call
	free  []uint32 // empty slots, the last freed last
	n     int      // calls in the table
	count uint64   // the counter of the last number given
	max   int      // slots at most; 0 is 1<<slotBits
}

const (
	slotBits = 24 // at most 16 M calls in flight at once
	slotMask = 1<<slotBits - 1
	// maxCount bounds the counter, so that numbers stay below 2^64 and
	// never 0 (0 is a call that was never sent).
	maxCount = 1<<(64-slotBits) - 1
	// shrinkAbove is the table size that is dropped when the table empties,
	// so a past burst does not keep its memory.
	shrinkAbove = 4096
)

// add puts c in the table and returns its sequence number; false when
// every slot is taken.
func (t *inflight) add(c *call) (uint64, bool) {
	var i uint32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		if len(t.slots) == cmp.Or(t.max, 1<<slotBits) {
			return 0, false
		}
		i = uint32(len(t.slots))
		t.slots = append(t.slots, nil)
	}
	if t.count++; t.count > maxCount {
		t.count = 1
	}
	t.slots[i] = c
	t.n++
	return t.count<<slotBits | uint64(i), true
}

// get returns the call numbered seq, or nil.
func (t *inflight) get(seq uint64) *call {
	i := seq & slotMask
	if i >= uint64(len(t.slots)) {
		return nil
	}
	if c := t.slots[i]; c != nil && c.seq == seq {
		return c
	}
	return nil
}

// remove takes out the call numbered seq, which get found.
func (t *inflight) remove(seq uint64) {
	i := uint32(seq & slotMask)
	t.slots[i] = nil
	t.n--
	if t.n == 0 && len(t.slots) > shrinkAbove {
		t.slots, t.free = nil, nil
		return
	}
	t.free = append(t.free, i)
}

// len is the number of calls in the table.
func (t *inflight) len() int { return t.n }

// each calls fn for every call in the table; fn may remove it.
func (t *inflight) each(fn func(*call)) {
	for i := 0; i < len(t.slots); i++ {
		if c := t.slots[i]; c != nil {
			fn(c)
		}
	}
}
