package main

import (
	"slices"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := slices.Clone(c.in)
		if got := median(in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		if !slices.Equal(in, c.in) {
			t.Errorf("median reordered its input: %v", in)
		}
	}
}

func TestCombineRounds(t *testing.T) {
	one := &measure{Value: 7}
	if got := combineRounds([]*measure{one}); got != one {
		t.Fatalf("one round: got %+v, want the round itself", got)
	}
	ms := []*measure{
		{Value: 100, P50US: 1, Detail: "a"},
		{Value: 300, P50US: 3, Detail: "c"},
		{Value: 200, P50US: 2, Detail: "b"},
	}
	got := combineRounds(ms)
	if got.Value != 200 || got.P50US != 2 || !slices.Equal(got.Rounds, []float64{100, 300, 200}) {
		t.Fatalf("got value %v, p50 %v, rounds %v; want the median round (200, p50 2) and every round in order", got.Value, got.P50US, got.Rounds)
	}
	if !strings.Contains(got.Detail, "round 3, nearest the median: b") {
		t.Errorf("detail %q does not name the median round", got.Detail)
	}
	if ms[2].Rounds != nil {
		t.Error("combineRounds changed a round's measure")
	}
	even := combineRounds([]*measure{{Value: 100}, {Value: 210}, {Value: 200}, {Value: 400}})
	if even.Value != 205 {
		t.Errorf("even count: value %v, want 205 (the mean of the middle two)", even.Value)
	}
	bad := &measure{Value: 0, Error: "boom"}
	if got := combineRounds([]*measure{{Value: 1}, bad}); got != bad {
		t.Errorf("a failed round: got %+v, want the failure", got)
	}
}

// A row that ran rounds takes the median of its rounds' ratios, not the
// ratio of its medians, and judges its target by that.
func TestRowFinishRounds(t *testing.T) {
	r := &row{HigherBetter: true, check: ratioAtLeast(1.2, 0.9)}
	r.Warren = &measure{Value: 90, Rounds: []float64{90, 50, 120}}
	r.Raw = &measure{Value: 100, Rounds: []float64{100, 40, 200}}
	r.Cote = &measure{Value: 60, Rounds: []float64{60, 40, 80}}
	r.finish()
	// vs raw by round: 0.9, 1.25, 0.6 -> median 0.9.
	if r.VsRaw == nil || *r.VsRaw != 0.9 || !slices.Equal(r.VsRawRounds, []float64{0.9, 1.25, 0.6}) {
		t.Fatalf("vs raw: %v by round %v, want 0.9 from 0.9, 1.25, 0.6", deref(r.VsRaw), r.VsRawRounds)
	}
	// vs cote by round: 1.5, 1.25, 1.5 -> 1.5.
	if r.VsCote == nil || *r.VsCote != 1.5 {
		t.Fatalf("vs cote: %v, want 1.5", deref(r.VsCote))
	}
	if r.Met == nil || !*r.Met {
		t.Fatalf("target: %v, want met (1.5 >= 1.2, 0.9 >= 0.9)", r.Met)
	}

	// A round-by-round pairing that differs from the ratio of the medians:
	crossed := &row{HigherBetter: true}
	crossed.Warren = &measure{Value: 100, Rounds: []float64{100, 10, 1000}}
	crossed.Raw = &measure{Value: 100, Rounds: []float64{1000, 100, 10}}
	crossed.finish()
	// ratios 0.1, 0.1, 100 -> 0.1, while the medians' ratio is 1.
	if crossed.VsRaw == nil || *crossed.VsRaw != 0.1 {
		t.Fatalf("vs raw: %v, want 0.1, the median of the rounds' ratios", deref(crossed.VsRaw))
	}

	// Without rounds (or with a count that differs) the values' ratio holds.
	plain := &row{HigherBetter: false}
	plain.Warren = &measure{Value: 20}
	plain.Cote = &measure{Value: 60, Rounds: []float64{60, 60}}
	plain.finish()
	if plain.VsCote == nil || *plain.VsCote != 3 || plain.VsCoteRounds != nil {
		t.Fatalf("no rounds: %v (rounds %v), want 3 from the values", deref(plain.VsCote), plain.VsCoteRounds)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// A report of a run with profiles or traces says its figures are not the
// ones to judge the targets by; one without says nothing of the kind.
func TestMarkdownSaysWhenChildrenWereProfiledOrTraced(t *testing.T) {
	for _, c := range []struct {
		profiled, traced bool
		want             []string
	}{
		{false, false, nil},
		{true, false, []string{"CPU profiles (`-profile`)", "not figures to judge the targets by"}},
		{false, true, []string{"execution traces (`-trace`)", "not figures to judge the targets by"}},
		{true, true, []string{"CPU profiles (`-profile`) and execution traces (`-trace`)"}},
	} {
		rep := &report{Plan: plan{Profiled: c.profiled, Traced: c.traced}}
		md := rep.markdown()
		if c.want == nil && strings.Contains(md, "a run to diagnose") {
			t.Errorf("plain run: report calls itself a run to diagnose")
		}
		for _, w := range c.want {
			if !strings.Contains(md, w) {
				t.Errorf("profiled=%v traced=%v: report lacks %q", c.profiled, c.traced, w)
			}
		}
	}
}
