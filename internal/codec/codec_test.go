package codec

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

type card struct {
	Number string `json:"number"`
	Amount int    `json:"amount,omitempty"`
}

func TestRoundTripJSONTags(t *testing.T) {
	b, err := Marshal(card{Number: "123456", Amount: 5})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["number"] != "123456" {
		t.Fatalf("json tag not used: %v", m)
	}
	var c card
	if err := Unmarshal(b, &c); err != nil || c.Number != "123456" || c.Amount != 5 {
		t.Fatalf("got %+v, %v", c, err)
	}
}

func TestDecodeError(t *testing.T) {
	b, _ := Marshal("text")
	var n int
	if err := Unmarshal(b, &n); !errors.Is(err, ErrDecode) {
		t.Fatalf("err = %v, want ErrDecode", err)
	}
	if err := Unmarshal([]byte{0xc1}, &n); !errors.Is(err, ErrDecode) {
		t.Fatalf("err = %v, want ErrDecode", err)
	}
}

func TestNil(t *testing.T) {
	b, err := Encode(nil)
	if err != nil || len(b.Bytes()) != 0 {
		t.Fatalf("nil encodes to %v, %v", b.Bytes(), err)
	}
	b.Release()
	var s string
	if err := Unmarshal(nil, &s); err != nil {
		t.Fatal(err)
	}
}

// []byte payloads skip msgpack's reflection both ways: the bytes written
// and the slice decoded must be exactly msgpack's, for every length class
// and every state of the destination slice, and whatever is not exactly
// one bin must still go msgpack's way.
func TestBytesFastPathMatchesMsgpack(t *testing.T) {
	for _, n := range []int{0, 1, 31, 32, 255, 256, 65535, 65536, 70000} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i * 7)
		}
		got, err := Encode(p)
		if err != nil {
			t.Fatal(err)
		}
		want, err := msgpack.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("Encode of %d bytes: % x..., msgpack writes % x...", n, got.Bytes()[:min(8, len(got.Bytes()))], want[:min(8, len(want))])
		}
		got.Release()

		for _, dst := range [][]byte{nil, {}, make([]byte, 3, 4), make([]byte, 1, n+1)} {
			fast, slow := slices.Clone(dst), slices.Clone(dst)
			if dst != nil && fast == nil {
				fast, slow = []byte{}, []byte{}
			}
			if !decodeBin(want, &fast) {
				t.Fatalf("decodeBin refused a bin of %d bytes", n)
			}
			if err := msgpack.Unmarshal(want, &slow); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(fast, slow) || (fast == nil) != (slow == nil) || len(fast) != len(slow) {
				t.Fatalf("%d bytes into %v: fast path %d bytes (nil %v), msgpack %d (nil %v)",
					n, dst, len(fast), fast == nil, len(slow), slow == nil)
			}
		}
	}
	// A destination large enough is reused, as msgpack does.
	buf := make([]byte, 0, 64)
	if err := Unmarshal([]byte{0xc4, 2, 'h', 'i'}, &buf); err != nil || string(buf) != "hi" || &buf[:1][0] != &buf[:cap(buf)][0] || cap(buf) != 64 {
		t.Fatalf("decoded %q (cap %d), %v; want \"hi\" in the same array", buf, cap(buf), err)
	}
	// Not exactly one bin: the general way decides, as before.
	var out []byte
	if err := Unmarshal([]byte{0xc4, 5, 'a'}, &out); !errors.Is(err, ErrDecode) || !errors.Is(err, ErrLimits) {
		t.Fatalf("truncated bin: %v, want ErrDecode and ErrLimits", err)
	}
	if err := Unmarshal([]byte{0xa2, 'h', 'i'}, &out); err != nil || string(out) != "hi" {
		t.Fatalf("str into []byte: %q, %v", out, err)
	}
	out = []byte("x")
	if err := Unmarshal([]byte{0xc0}, &out); err != nil || out != nil {
		t.Fatalf("nil into []byte: %q, %v; want nil", out, err)
	}
	if err := Unmarshal([]byte{0xc4, 1, 'a', 0xc0}, &out); err != nil || string(out) != "a" {
		t.Fatalf("bin then more bytes: %q, %v; want what msgpack decodes", out, err)
	}
	if b, err := Encode([]byte(nil)); err != nil || !bytes.Equal(b.Bytes(), []byte{0xc0}) {
		t.Fatalf("nil []byte encodes to % x, %v; want msgpack's nil", b.Bytes(), err)
	}
}

// An owned buffer encodes like Encode, again and again, and lets go of
// what a big value made it grow to.
func TestOwnedBufferEncodesAndTrims(t *testing.T) {
	b := NewBuffer()
	for i, v := range []any{map[string]int{"a": 1}, []byte("xyz"), nil, struct{ N int }{7}, "s"} {
		if err := b.Encode(v); err != nil {
			t.Fatalf("value %d: %v", i, err)
		}
		want, err := Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.Bytes(), want.Bytes()) {
			t.Fatalf("value %d: owned %x, pooled %x", i, b.Bytes(), want.Bytes())
		}
		want.Release()
		b.Trim()
		if len(b.Bytes()) != 0 {
			t.Fatalf("value %d: %d bytes left after Trim", i, len(b.Bytes()))
		}
	}
	if err := b.Encode(make([]byte, 300<<10)); err != nil {
		t.Fatal(err)
	}
	b.Trim()
	if c := cap(b.buf.b); c > keepBuffer {
		t.Fatalf("Trim kept %d bytes", c)
	}
	if err := b.Encode([]byte("again")); err != nil || len(b.Bytes()) != 7 {
		t.Fatalf("after a trim: %v, %d bytes", err, len(b.Bytes()))
	}
	// A failed encoding leaves the buffer empty and usable.
	if err := b.Encode(make(chan int)); err == nil {
		t.Fatal("a channel encoded")
	}
	if len(b.Bytes()) != 0 {
		t.Fatalf("%d bytes left by a failed encoding", len(b.Bytes()))
	}
}
