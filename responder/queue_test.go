package responder

import "testing"

func TestQueueIsFIFOAndReusesItsArray(t *testing.T) {
	var q queue
	jobs := make([]*job, 100)
	for i := range jobs {
		jobs[i] = &job{key: reqKey{seq: uint64(i)}}
	}
	next := 0 // next job expected out
	in := 0
	// A steady flow that never drains: push two, pop one, then drain.
	for in < len(jobs) {
		q.push(jobs[in])
		in++
		if in%2 == 0 {
			if j := q.pop(); j != jobs[next] {
				t.Fatalf("popped seq %d, want %d", j.key.seq, next)
			}
			next++
		}
		if q.len() != in-next {
			t.Fatalf("len %d, want %d", q.len(), in-next)
		}
		if cap(q.buf) > 4*len(jobs) {
			t.Fatalf("array grew to %d for %d queued", cap(q.buf), q.len())
		}
	}
	for q.len() > 0 {
		if j := q.pop(); j != jobs[next] {
			t.Fatalf("popped seq %d, want %d", j.key.seq, next)
		}
		next++
	}
	if next != len(jobs) {
		t.Fatalf("%d jobs out of %d", next, len(jobs))
	}
	// Drained: the array is reused from its start, without allocating.
	c := cap(q.buf)
	allocs := testing.AllocsPerRun(100, func() {
		q.push(jobs[0])
		q.pop()
	})
	if allocs != 0 || cap(q.buf) != c {
		t.Fatalf("%v allocations per push/pop on a drained queue (cap %d, was %d)", allocs, cap(q.buf), c)
	}
}
