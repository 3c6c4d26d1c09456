// Package hist is a fixed-size latency histogram: log-linear buckets with 32
// sub-buckets per power of two (every value is within about 3% of its bucket's
// midpoint), no allocation when recording, mergeable. bench/cote/roles.js
// implements the same buckets, so Go and Node percentiles are comparable.
package hist

import (
	"math"
	"math/bits"
)

const (
	subBits = 6                  // values below 64 are exact
	half    = 1 << (subBits - 1) // sub-buckets per power of two above 64
	// Buckets covers values up to 2^46 ns (about 19 hours).
	Buckets = (1 << subBits) + 41*half
)

// H counts values (nanoseconds) in buckets. The zero value is ready to use.
type H struct {
	counts [Buckets]uint64
	n      uint64
}

func index(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	shift := bits.Len64(v) - subBits // >= 1
	m := v >> shift                  // in [32, 63]
	i := (1 << subBits) + (shift-1)*half + int(m-half)
	if i >= Buckets {
		return Buckets - 1
	}
	return i
}

// value returns the midpoint of bucket i.
func value(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	k := i - (1 << subBits)
	shift := k/half + 1
	m := uint64(k%half + half)
	return m<<shift + (1<<shift)/2
}

// Record adds one value; negative values count as zero.
func (h *H) Record(ns int64) {
	if ns < 0 {
		ns = 0
	}
	h.counts[index(uint64(ns))]++
	h.n++
}

// Merge adds o's counts to h.
func (h *H) Merge(o *H) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// Count returns how many values were recorded.
func (h *H) Count() uint64 { return h.n }

// Quantile returns the value at quantile q (0 < q <= 1), or 0 when empty.
func (h *H) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n))) // nearest rank
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return int64(value(i))
		}
	}
	return int64(value(Buckets - 1))
}
