package codec

import (
	"bytes"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Size bombs: a few bytes that claim billions of elements, or nesting deep
// enough to overflow the stack, fail at once without allocating.
func TestUnmarshalRefusesSizeBombs(t *testing.T) {
	deep := bytes.Repeat([]byte{0x91}, 1<<20) // [[[[...]]]] a million deep
	for _, tc := range []struct {
		name string
		b    []byte
		into func() any
	}{
		{"array32 of 4G into []int", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}, func() any { return new([]int) }},
		{"array32 of 4G into any", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}, func() any { return new(any) }},
		{"map32 of 4G into map", []byte{0xdf, 0xff, 0xff, 0xff, 0xff}, func() any { return new(map[string]any) }},
		{"array16 claiming more than it holds", []byte{0xdc, 0xff, 0xff, 0x01}, func() any { return new([]int) }},
		{"bin32 of 4G", []byte{0xc6, 0xff, 0xff, 0xff, 0xff, 0x00}, func() any { return new([]byte) }},
		{"str32 of 4G", []byte{0xdb, 0xff, 0xff, 0xff, 0xff, 0x00}, func() any { return new(string) }},
		{"array nested a million deep", append(deep, 0xc0), func() any { return new(any) }},
		{"nested map claims", []byte{0x81, 0xa1, 'k', 0xdd, 0x7f, 0xff, 0xff, 0xff}, func() any { return new(map[string][]int) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := Unmarshal(tc.b, tc.into())
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrDecode) || !errors.Is(err, ErrLimits) {
				t.Fatalf("err = %v, want ErrDecode and ErrLimits", err)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
				t.Fatalf("refusing it allocated %d bytes", grew)
			}
		})
	}
}

// What real payloads look like passes the check.
func TestCheckAcceptsRealValues(t *testing.T) {
	type item struct {
		Name string         `json:"name"`
		Tags []string       `json:"tags"`
		Meta map[string]any `json:"meta"`
	}
	nested := any([]any{1})
	for range 200 {
		nested = []any{nested}
	}
	for _, v := range []any{
		nil, true, 42, -7, 3.5, "text", []byte("bytes"), make([]byte, 70000),
		[]int{1, 2, 3}, make([]float64, 100000), map[string]int{"a": 1},
		[]item{{Name: "x", Tags: []string{"a", "b"}, Meta: map[string]any{"k": []any{1, "two", nil}}}},
		nested,
	} {
		b, err := Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			continue // nil: no payload at all
		}
		if err := Check(b, PayloadLimits); err != nil {
			t.Errorf("Check(%T) = %v", v, err)
		}
	}
}

func TestCheckLimits(t *testing.T) {
	b, _ := Marshal([][]int{{1, 2}, {3, 4, 5}})
	if err := Check(b, Limits{MaxDepth: 1}); !errors.Is(err, ErrLimits) {
		t.Fatalf("depth 2 under MaxDepth 1: %v", err)
	}
	if err := Check(b, Limits{MaxDepth: 2, MaxElems: 6}); !errors.Is(err, ErrLimits) {
		t.Fatalf("7 elements under MaxElems 6: %v", err)
	}
	if err := Check(b, Limits{MaxDepth: 2, MaxElems: 7}); err != nil {
		t.Fatalf("within limits: %v", err)
	}
	if err := Check(b[:len(b)-1], Limits{MaxDepth: 2}); !errors.Is(err, ErrLimits) {
		t.Fatalf("truncated: %v", err)
	}
	if err := Check([]byte{0xc1}, Limits{MaxDepth: 2}); !errors.Is(err, ErrLimits) {
		t.Fatalf("invalid type byte: %v", err)
	}
}

// FuzzUnmarshal feeds payloads from the network to the decoder: it must
// never panic nor run out of memory (a size bomb that got past Check would
// make this fuzzer die allocating gigabytes), and its errors wrap
// ErrDecode. (Allocation is not measured here: the fuzzing engine's own
// work shows in the process-wide counters; TestUnmarshalRefusesSizeBombs
// measures it.)
func FuzzUnmarshal(f *testing.F) {
	for _, v := range []any{1, "s", []byte{1, 2}, []any{1, "a", nil}, map[string]any{"a": []int{1}}, 2.5} {
		b, _ := Marshal(v)
		f.Add(b)
	}
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0xdf, 0x00, 0x00, 0x00, 0x02, 0xa1, 'a', 0x90})
	f.Add([]byte{0xc7, 0x02, 0x05, 0x01, 0x02})
	f.Add([]byte("\xd60\x81\xc60000"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var a any
		var m map[string]any
		var s []string
		type doc struct {
			N []int          `json:"n"`
			M map[string]any `json:"m"`
		}
		var d doc
		var tm map[int][]byte
		var ts time.Time
		for _, v := range []any{&a, &m, &s, &d, &tm, &ts} {
			if err := Unmarshal(b, v); len(b) > 0 && err != nil && !errors.Is(err, ErrDecode) {
				t.Fatalf("error %v does not wrap ErrDecode", err)
			}
		}
	})
}

// msgpack's decoder reads what follows an extension header as a map when it
// decodes into a map: an extension whose data starts like a map is refused,
// and Encode writes timestamps so that theirs never do.
func TestExtensionsReadAsMaps(t *testing.T) {
	// A timestamp whose eight data bytes are a map of "k" to an array
	// claiming four billion elements.
	bomb := []byte{0xd7, 0xff, 0x81, 0xa1, 'k', 0xdd, 0xff, 0xff, 0xff, 0xff}
	var m map[string][]int
	if err := Unmarshal(bomb, &m); !errors.Is(err, ErrLimits) {
		t.Fatalf("err = %v, want ErrLimits", err)
	}
	// An empty extension followed by a map claim.
	if err := Unmarshal([]byte{0xc7, 0x00, 0x00, 0xdf, 0xdf, 0x00, 0x02, 0x00}, &m); !errors.Is(err, ErrLimits) {
		t.Fatalf("err = %v, want ErrLimits", err)
	}
	// Timestamps of every form round-trip, including those whose 64-bit
	// form would start with a map or nil header.
	type ev struct {
		At []time.Time `json:"at"`
	}
	var in ev
	for _, ns := range []int{0, 1, 537_000_000, 560_000_000, 805_306_368, 931_135_488, 999_999_999} {
		for _, sec := range []int64{0, 1, 1_800_000_000, 1 << 33, 1 << 40, -5} {
			in.At = append(in.At, time.Unix(sec, int64(ns)).UTC())
		}
	}
	b, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out ev
	if err := Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	for i := range in.At {
		if !out.At[i].Equal(in.At[i]) {
			t.Fatalf("timestamp %d: %v came back as %v", i, in.At[i], out.At[i])
		}
	}
	// Other decoders read them too: msgpack's own, into any.
	var generic map[string]any
	if err := msgpack.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
}

func TestEncodeRefusesWhatReceiversWould(t *testing.T) {
	deep := any(1)
	for range 300 {
		deep = []any{deep}
	}
	if _, err := Encode(deep); !errors.Is(err, ErrLimits) {
		t.Fatalf("err = %v, want ErrLimits", err)
	}
}
