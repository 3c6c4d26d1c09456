package hist

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestQuantileAccuracy compares the histogram's quantiles with exact ones
// over values spanning nanoseconds to seconds.
func TestQuantileAccuracy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h H
	vals := make([]int64, 0, 100_000)
	for range 100_000 {
		v := int64(r.ExpFloat64() * 50_000) // ~50 µs mean
		if r.IntN(100) == 0 {
			v *= 1000
		}
		vals = append(vals, v)
		h.Record(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		exact := vals[max(int(q*float64(len(vals)))-1, 0)]
		got := h.Quantile(q)
		if diff := float64(got-exact) / float64(max(exact, 1)); exact > 64 && (diff > 0.035 || diff < -0.035) {
			t.Errorf("q%.3f = %d, exact %d (%.1f%% off)", q, got, exact, 100*diff)
		}
	}
	if h.Count() != 100_000 {
		t.Errorf("Count = %d", h.Count())
	}
}

// TestBuckets checks that bucket indexes are monotonic and that every value
// lands in the bucket whose midpoint is nearest below the next one.
func TestBuckets(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<22; v += 1 + v/97 {
		i := index(v)
		if i < prev {
			t.Fatalf("index(%d) = %d < %d", v, i, prev)
		}
		prev = i
		if mid := value(i); v >= 64 && (float64(mid) < float64(v)*0.96 || float64(mid) > float64(v)*1.04) {
			t.Fatalf("value(index(%d)) = %d, more than 4%% off", v, mid)
		}
	}
	if i := index(1 << 62); i != Buckets-1 {
		t.Errorf("huge value in bucket %d, want the last (%d)", i, Buckets-1)
	}
	var h H
	h.Record(-5)
	if h.Quantile(0.5) != 0 {
		t.Errorf("negative value not counted as zero")
	}
	var empty H
	if empty.Quantile(0.5) != 0 {
		t.Errorf("empty histogram quantile not zero")
	}
}

func TestMerge(t *testing.T) {
	var a, b H
	a.Record(100)
	b.Record(1_000_000)
	b.Record(1_000_000)
	a.Merge(&b)
	if a.Count() != 3 || a.Quantile(0.5) < 900_000 {
		t.Errorf("after Merge: count %d, median %d", a.Count(), a.Quantile(0.5))
	}
}
