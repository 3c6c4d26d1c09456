package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// fuzzMax is the frame limit under fuzzing.
const fuzzMax = 100_000

// isCodecError reports whether err is one of the errors decoding may return.
func isCodecError(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrFrameTooLarge) ||
		errors.Is(err, ErrVersion) || errors.Is(err, ErrMalformed)
}

// FuzzDecode runs Decode and a Reader over arbitrary bytes. Its seed corpus
// is in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add(mustAppend(f, nil, KindRequest, &Header{To: 1, Name: "n"}, []byte("p"), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := Decode(b, fuzzMax)
		if err != nil {
			if n != 0 || !isCodecError(err) {
				t.Fatalf("Decode: %d, %v", n, err)
			}
		} else {
			if n < 4 || n > len(b) || n-4 > fuzzMax {
				t.Fatalf("Decode consumed %d of %d bytes", n, len(b))
			}
			if len(fr.Payload) > 0 {
				end := &fr.Payload[len(fr.Payload)-1]
				if end != &b[n-1] {
					t.Fatal("payload does not end the frame in place")
				}
			}
			// Re-encoding uses the smallest encodings, so it fits too and
			// decodes to the same frame.
			enc, err := AppendFrame(nil, fr.Kind, &fr.Header, fr.Payload, fuzzMax)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			if len(enc) > n {
				t.Fatalf("re-encoded frame is %d bytes, the input frame %d", len(enc), n)
			}
			fr2, n2, err := Decode(enc, fuzzMax)
			if err != nil || n2 != len(enc) || !equalFrame(fr2, fr.Kind, fr.Header, fr.Payload) {
				t.Fatalf("re-decode: %v", err)
			}
		}

		// The tiny buffer sends most frames down the large-frame path.
		for _, r := range []*Reader{NewReader(bytes.NewReader(b), fuzzMax), newReaderSize(bytes.NewReader(b), fuzzMax, 16)} {
			checkReader(t, r, b, fr, err)
		}
	})
}

// checkReader reads b to the end with r, checking that the first frame
// agrees with Decode's result (fr, err).
func checkReader(t *testing.T, r *Reader, b []byte, fr Frame, err error) {
	t.Helper()
	for i := 0; ; i++ {
		rf, rerr := r.Next()
		if i == 0 {
			switch {
			case err == nil:
				if rerr != nil || !equalFrame(rf, fr.Kind, fr.Header, fr.Payload) {
					t.Fatalf("Decode succeeded, Reader: %v", rerr)
				}
			case len(b) == 0:
				if rerr != io.EOF {
					t.Fatalf("empty input: %v", rerr)
				}
			case errors.Is(err, io.ErrUnexpectedEOF):
				if rerr != io.ErrUnexpectedEOF {
					t.Fatalf("Decode: %v, Reader: %v", err, rerr)
				}
			default:
				for _, e := range []error{ErrFrameTooLarge, ErrVersion, ErrMalformed} {
					if errors.Is(err, e) != errors.Is(rerr, e) {
						t.Fatalf("Decode: %v, Reader: %v", err, rerr)
					}
				}
			}
		}
		if rerr != nil {
			if rerr != io.EOF && !isCodecError(rerr) {
				t.Fatalf("Next: %v", rerr)
			}
			break
		}
		if i > len(b)/4 {
			t.Fatal("Reader returns frames without consuming input")
		}
	}
	// The buffer follows the bytes that arrive, not the length claimed.
	if cap(r.big) > fuzzMax || cap(r.big) > max(2*len(b), 4*len(r.buf)) {
		t.Fatalf("Reader buffer grew to %d, limit %d, input %d bytes", cap(r.big), fuzzMax, len(b))
	}
}

// FuzzHeader checks that whatever UnmarshalMsgpack accepts survives a round
// trip, and that the re-encoding is genuine msgpack.
// The fast decoder accepts only what the general one decodes, to the same
// header.
func FuzzHeaderFastPath(f *testing.F) {
	for _, h := range testHeaders() {
		if h.msgpackSize() < 1000 {
			f.Add(h.AppendMsgpack(nil))
		}
	}
	f.Add([]byte{0x98, 0xcc, 200, 0xcd, 1, 0, 0xce, 0, 0, 1, 0, 0xd9, 3, 'a', 'b', 'c', 0xff, 0xcc, 255, 0xa0, 0xa1, 'm'})
	f.Add([]byte{0x98, 0, 0, 0, 0xa0, 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0xa0, 0xa0})
	f.Add([]byte{0x98, 0, 0, 0, 0xa0, 0, 0xcd, 1, 0, 0xa0, 0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, general Header
		if !fast.unmarshalFast(b, nil) {
			if fast != (Header{}) {
				t.Fatal("a refused fast decode modified the header")
			}
			return
		}
		if err := general.unmarshalAny(b, nil); err != nil {
			t.Fatalf("fast decode accepted what the general one refuses: %v", err)
		}
		if fast != general {
			t.Fatalf("fast %+v, general %+v", fast, general)
		}
		// Through a table, as a Reader decodes: the same strings.
		var viaTab Header
		tab := newStrTable()
		if !viaTab.unmarshalFast(b, tab) || viaTab != general || !viaTab.unmarshalFast(b, tab) || viaTab != general {
			t.Fatalf("through the string table: %+v, want %+v", viaTab, general)
		}
	})
}

func FuzzHeader(f *testing.F) {
	for _, h := range testHeaders() {
		if h.msgpackSize() < 1000 {
			f.Add(h.AppendMsgpack(nil))
		}
	}
	f.Add([]byte{0x99, 0xd0, 5, 0xc0, 0xcd, 1, 0, 0xc4, 1, 'x', 0xcf, 0, 0, 0, 0, 0, 0, 0, 1, 0xd3, 0, 0, 0, 0, 0, 0, 0, 2, 0xc0, 0xa1, 'm', 0xc3})
	f.Add([]byte{0xdc, 0, 9, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0, 0xc7, 1, 5, 0})
	f.Add([]byte{0xdd, 0, 0, 0, 10, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var h Header
		if err := h.UnmarshalMsgpack(b); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if h != (Header{}) {
				t.Fatal("failed decode modified the header")
			}
			return
		}
		enc := h.AppendMsgpack(nil)
		if len(enc) > len(b) {
			t.Fatalf("re-encoding is %d bytes, input %d: not the smallest encoding", len(enc), len(b))
		}
		var h2 Header
		if err := h2.UnmarshalMsgpack(enc); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if h2 != h {
			t.Fatalf("round trip: %+v != %+v", h2, h)
		}
		var h3 Header
		if err := h3.unmarshal(b, newStrTable()); err != nil || h3 != h {
			t.Fatalf("interning decoder differs: %v", err)
		}
		checkWithLibrary(t, enc, h)
	})
}
