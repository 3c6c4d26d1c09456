package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
)

var allKinds = []Kind{KindHello, KindHelloAck, KindRequest, KindResponse, KindCancel, KindEvent, KindCredit, KindGoAway, KindGoAwayAck, KindPing, KindPong}

func TestKindString(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range allKinds {
		s := k.String()
		if s == "" || strings.HasPrefix(s, "Kind(") || seen[s] {
			t.Errorf("kind %d: name %q", k, s)
		}
		seen[s] = true
	}
	if KindHelloAck.String() != "hello-ack" {
		t.Errorf("KindHelloAck = %q", KindHelloAck.String())
	}
	for _, k := range []Kind{0, 12, 255} {
		if got, want := k.String(), "Kind("+strconv.Itoa(int(k))+")"; got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, got, want)
		}
	}
}

// pattern returns n bytes that are unlikely to line up by accident.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i>>8) ^ seed
	}
	return b
}

func mustAppend(t testing.TB, dst []byte, kind Kind, h *Header, payload []byte, max int) []byte {
	t.Helper()
	b, err := AppendFrame(dst, kind, h, payload, max)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func equalFrame(f Frame, kind Kind, h Header, payload []byte) bool {
	return f.Kind == kind && f.Header == h && bytes.Equal(f.Payload, payload)
}

func TestFrameRoundTripAllKinds(t *testing.T) {
	payloads := [][]byte{nil, {}, {0}, pattern(100, 1), pattern(readerBufSize-64, 2), pattern(readerBufSize, 3), pattern(3<<20, 4)}
	headers := []Header{{}, {To: 1, From: 2, Seq: 3, Name: "svc.op", Deadline: 1_750_000_000_123_456_789, Status: StatusError, Code: "E", Msg: "boom"},
		{Name: strings.Repeat("long name ", 1000), Msg: strings.Repeat("m", 70000), Code: strings.Repeat("c", 300)}}
	var stream []byte
	type want struct {
		kind    Kind
		h       Header
		payload []byte
	}
	var wants []want
	for i, k := range allKinds {
		for j, p := range payloads {
			h := headers[(i+j)%len(headers)]
			h.Seq = uint64(i*100 + j)
			b := mustAppend(t, nil, k, &h, p, DefaultMaxFrame)
			if got := binary.BigEndian.Uint32(b); int(got) != len(b)-4 || int(got) != FrameSize(&h, p) {
				t.Fatalf("prefix %d, frame is %d bytes after it, FrameSize %d", got, len(b)-4, FrameSize(&h, p))
			}
			f, n, err := Decode(b, DefaultMaxFrame)
			if err != nil || n != len(b) || !equalFrame(f, k, h, p) {
				t.Fatalf("%s/%d: Decode = %v, %d, %v", k, len(p), f.Kind, n, err)
			}
			if len(p) > 0 && &f.Payload[0] != &b[len(b)-len(p)] {
				t.Fatal("Decode copied the payload")
			}
			if cap(f.Payload) != len(f.Payload) {
				t.Fatal("payload capacity reaches beyond the frame")
			}
			stream = append(stream, b...)
			wants = append(wants, want{k, h, p})
		}
	}
	r := NewReader(bytes.NewReader(stream), DefaultMaxFrame)
	for i, w := range wants {
		f, err := r.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !equalFrame(f, w.kind, w.h, w.payload) {
			t.Fatalf("frame %d (%s, %d byte payload) differs", i, w.kind, len(w.payload))
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestAppendFrameNilHeader(t *testing.T) {
	b := mustAppend(t, nil, KindPing, nil, []byte("x"), 0)
	f, _, err := Decode(b, 0)
	if err != nil || !equalFrame(f, KindPing, Header{}, []byte("x")) {
		t.Fatalf("%+v %v", f, err)
	}
}

func TestMaxFrameBoundary(t *testing.T) {
	h := Header{Name: "n", Seq: 9}
	for _, max := range []int{MinMaxFrame, 100_000, DefaultMaxFrame} {
		p := make([]byte, max-FrameSize(&h, nil))
		if FrameSize(&h, p) != max {
			t.Fatalf("setup: size %d", FrameSize(&h, p))
		}
		dst := []byte("prefix")
		b, err := AppendFrame(dst, KindEvent, &h, p, max)
		if err != nil {
			t.Fatalf("max %d: frame of exactly max bytes: %v", max, err)
		}
		if len(b) != len(dst)+4+max {
			t.Fatalf("len %d", len(b))
		}
		b = b[len(dst):]
		if _, _, err := Decode(b, max); err != nil {
			t.Fatalf("max %d: Decode: %v", max, err)
		}
		if _, err := NewReader(bytes.NewReader(b), max).Next(); err != nil {
			t.Fatalf("max %d: Next: %v", max, err)
		}
		if _, _, err := Decode(b, max-1); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("max %d: Decode with max-1: %v", max, err)
		}
		if _, err := NewReader(bytes.NewReader(b), max-1).Next(); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("max %d: Next with max-1: %v", max, err)
		}
		out, err := AppendFrame(dst, KindEvent, &h, append(p, 0), max)
		if !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("max %d: one byte over: %v", max, err)
		}
		if string(out) != "prefix" {
			t.Fatalf("failed AppendFrame changed dst to %q", out)
		}
	}
	// Header strings count against the limit too.
	big := Header{Msg: strings.Repeat("m", MinMaxFrame)}
	if _, err := AppendFrame(nil, KindResponse, &big, nil, MinMaxFrame); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized header: %v", err)
	}
}

// rawFrame builds a frame from parts, with a correct length prefix.
func rawFrame(body ...byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func TestDecodeMalformed(t *testing.T) {
	hdr := (&Header{Name: "x"}).AppendMsgpack(nil)
	good := append([]byte{Version, byte(KindEvent), byte(len(hdr))}, hdr...)
	withHeader := func(h ...byte) []byte {
		return rawFrame(append([]byte{Version, byte(KindEvent), byte(len(h))}, h...)...)
	}
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty input", nil, io.ErrUnexpectedEOF},
		{"short prefix", []byte{0, 0, 1}, io.ErrUnexpectedEOF},
		{"truncated body", rawFrame(good...)[:10], io.ErrUnexpectedEOF},
		{"prefix over max", []byte{0xff, 0xff, 0xff, 0xff, Version}, ErrFrameTooLarge},
		{"empty body", rawFrame(), ErrMalformed},
		{"version 0", rawFrame(append([]byte{0}, good[1:]...)...), ErrVersion},
		{"version 2", rawFrame(append([]byte{2}, good[1:]...)...), ErrVersion},
		{"version only", rawFrame(Version), ErrMalformed},
		{"no header length", rawFrame(Version, byte(KindPing)), ErrMalformed},
		{"unterminated uvarint", rawFrame(Version, byte(KindPing), 0x80, 0x80), ErrMalformed},
		{"overflowing uvarint", rawFrame(Version, byte(KindPing), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), ErrMalformed},
		{"header length beyond frame", rawFrame(append([]byte{Version, byte(KindEvent), byte(len(hdr) + 1)}, hdr...)...), ErrMalformed},
		{"huge header length", rawFrame(append([]byte{Version, byte(KindEvent), 0xff, 0xff, 0xff, 0xff, 0x0f}, hdr...)...), ErrMalformed},
		{"zero header length", rawFrame(Version, byte(KindEvent), 0, 0x98), ErrMalformed},
		{"short header", withHeader(0x97, 0, 0, 0, 0xa0, 0, 0, 0xa0), ErrMalformed},
		{"header is a map", withHeader(0x80), ErrMalformed},
		{"bool in header", withHeader(0x98, 0xc2, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0), ErrMalformed},
		{"garbage after header", withHeader(append(bytes.Clone(hdr), 0xc0)...), ErrMalformed},
	}
	for _, tt := range cases {
		_, n, err := Decode(tt.b, MinMaxFrame)
		if !errors.Is(err, tt.want) || n != 0 {
			t.Errorf("Decode %s: %d, %v; want %v", tt.name, n, err, tt.want)
		}
		want := tt.want
		if len(tt.b) == 0 {
			want = io.EOF
		}
		r := NewReader(bytes.NewReader(tt.b), MinMaxFrame)
		if _, err := r.Next(); !errors.Is(err, want) {
			t.Errorf("Next %s: %v; want %v", tt.name, err, want)
		}
		if _, err2 := r.Next(); !errors.Is(err2, want) {
			t.Errorf("Next %s: second call: %v, want the same error again", tt.name, err2)
		}
	}
	// The unknown kind is the dispatcher's business, not the codec's.
	if f, _, err := Decode(rawFrame(append([]byte{Version, 200}, good[2:]...)...), 0); err != nil || f.Kind != 200 {
		t.Errorf("unknown kind: %v %v", f.Kind, err)
	}
}

func TestDecodeLeavesTrailingBytes(t *testing.T) {
	a := mustAppend(t, nil, KindRequest, &Header{Seq: 1}, []byte("first"), 0)
	b := mustAppend(t, bytes.Clone(a), KindResponse, &Header{Seq: 2}, []byte("second"), 0)
	f, n, err := Decode(b, 0)
	if err != nil || n != len(a) || string(f.Payload) != "first" {
		t.Fatalf("first: %q %d %v", f.Payload, n, err)
	}
	f, m, err := Decode(b[n:], 0)
	if err != nil || n+m != len(b) || string(f.Payload) != "second" || f.Header.Seq != 2 {
		t.Fatalf("second: %q %d %v", f.Payload, m, err)
	}
}

func TestNormMax(t *testing.T) {
	for in, want := range map[int]int{0: DefaultMaxFrame, -5: DefaultMaxFrame, 1: 1, 5000: 5000, 1 << 40: maxUint32} {
		if got := normMax(in); got != want {
			t.Errorf("normMax(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestAppendFrameAllocs(t *testing.T) {
	h := Header{To: 3, From: 4, Seq: 5, Name: "svc.method", Deadline: 1_750_000_000_000_000_000}
	p := pattern(200, 0)
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() {
		buf, _ = AppendFrame(buf[:0], KindRequest, &h, p, 0)
	}); n != 0 {
		t.Fatalf("AppendFrame: %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _, _ = Decode(buf, 0) }); n != 1 {
		t.Fatalf("Decode: %v allocs, want 1 (the name)", n)
	}
}

// AppendFrame's one-pass form (short strings, a frame well within the
// limit) writes the same bytes as the sizing one, and the limit is checked
// the same at its edges.
func TestAppendFrameOnePassMatchesSized(t *testing.T) {
	hs := testHeaders()
	hs = append(hs,
		Header{Name: strings.Repeat("n", 31), Code: strings.Repeat("c", 31), Msg: strings.Repeat("m", 18)}, // 80: one pass
		Header{Name: strings.Repeat("n", 31), Code: strings.Repeat("c", 31), Msg: strings.Repeat("m", 19)}, // 81: sized
		Header{To: math.MaxUint64, From: math.MaxUint64, Seq: math.MaxUint64, Deadline: math.MinInt64, Status: 255, Name: strings.Repeat("n", 80)},
	)
	for _, h := range hs {
		for _, n := range []int{0, 1, 16, 200, 5000} {
			payload := bytes.Repeat([]byte{0xab}, n)
			size := FrameSize(&h, payload)
			for _, max := range []int{0, size - 1, size, size + 1, 2 + 1 + maxShortHeader + n, 2 + maxShortHeader + n} {
				if max < 0 {
					continue
				}
				got, gerr := AppendFrame([]byte{0xee}, KindRequest, &h, payload, max)
				want, werr := appendFrameSized([]byte{0xee}, KindRequest, &h, payload, normMax(max))
				if (gerr == nil) != (werr == nil) || !bytes.Equal(got, want) {
					t.Fatalf("%+.40v, %d-byte payload, limit %d: %x (%v), want %x (%v)", h, n, max, got, gerr, want, werr)
				}
			}
		}
	}
}
