package wire

import (
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
)

// flakyConn hands out data in pieces, as TCP does, and fails the first Read
// at each cut with a timeout (a read deadline passing), as a connection
// with deadlines does when a peer pauses mid-frame.
type flakyConn struct {
	data    []byte
	pos     int
	cuts    []int // ascending positions in data
	timeout bool  // the Read at the current cut has failed already
}

var errPause = fmt.Errorf("read: %w", os.ErrDeadlineExceeded)

func (c *flakyConn) Read(p []byte) (int, error) {
	for len(c.cuts) > 0 && c.cuts[0] < c.pos {
		c.cuts = c.cuts[1:]
	}
	if len(c.cuts) > 0 && c.cuts[0] == c.pos && !c.timeout {
		c.timeout = true
		return 0, errPause
	}
	if c.pos == len(c.data) {
		return 0, io.EOF
	}
	end := len(c.data)
	if len(c.cuts) > 0 {
		if c.cuts[0] == c.pos {
			c.cuts = c.cuts[1:]
		}
		if len(c.cuts) > 0 {
			end = min(end, c.cuts[0])
		}
	}
	c.timeout = false
	k := copy(p, c.data[c.pos:end])
	c.pos += k
	return k, nil
}

// FuzzReaderResume: a stream of frames (each fitting the Reader's 64 KiB
// buffer) that arrives in arbitrary pieces, with a read timeout at every
// piece boundary, reads as the same frames as decoding it in one go: a
// timeout consumes nothing and Next resumes where it stopped, as the
// Reader's contract says.
func FuzzReaderResume(f *testing.F) {
	var stream []byte
	for _, h := range []*Header{{To: 1, Seq: 7, Name: "validate"}, {Status: StatusError, Code: "x", Msg: "boom"}, nil} {
		stream = mustAppend(f, stream, KindRequest, h, []byte("payload"), 0)
	}
	f.Add(stream, []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	f.Add(stream, []byte{3, 30, 1})
	f.Add(stream[:len(stream)-2], []byte{200})
	f.Add([]byte{0, 0, 0, 2, Version}, []byte{1, 1, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, Version, 3}, []byte{2})
	f.Fuzz(func(t *testing.T, b []byte, cutBytes []byte) {
		// A limit that keeps every frame within the Reader's buffer: larger
		// ones take the large-frame path, where errors are final.
		const max = readerBufSize - 4
		// What one-shot decoding finds.
		type want struct {
			f Frame
			n int
		}
		var wants []want
		var wantErr error
		for rest := b; ; {
			fr, n, err := Decode(rest, max)
			if err != nil {
				if len(rest) == 0 {
					err = io.EOF
				}
				wantErr = err
				break
			}
			fr.Payload = append([]byte(nil), fr.Payload...)
			wants = append(wants, want{fr, n})
			rest = rest[n:]
		}
		var cuts []int
		pos := 0
		for _, c := range cutBytes {
			pos += int(c)
			if pos > len(b) {
				break
			}
			if len(cuts) == 0 || cuts[len(cuts)-1] != pos {
				cuts = append(cuts, pos)
			}
		}
		r := NewReader(&flakyConn{data: b, cuts: cuts}, max)
		got := 0
		for pauses := 0; ; {
			fr, err := r.Next()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if pauses++; pauses > len(cuts)+1 {
					t.Fatalf("%d timeouts for %d cuts", pauses, len(cuts))
				}
				continue
			}
			if err != nil {
				if got != len(wants) {
					t.Fatalf("Reader failed after %d of %d frames: %v", got, len(wants), err)
				}
				switch {
				case errors.Is(wantErr, io.EOF) || errors.Is(wantErr, io.ErrUnexpectedEOF):
					if !errors.Is(err, wantErr) {
						t.Fatalf("Reader ended with %v, Decode with %v", err, wantErr)
					}
				default:
					for _, e := range []error{ErrFrameTooLarge, ErrVersion, ErrMalformed} {
						if errors.Is(err, e) != errors.Is(wantErr, e) {
							t.Fatalf("Reader ended with %v, Decode with %v", err, wantErr)
						}
					}
				}
				if _, again := r.Next(); !errors.Is(again, err) {
					t.Fatalf("error not sticky: %v then %v", err, again)
				}
				return
			}
			if got >= len(wants) {
				t.Fatalf("Reader returned frame %d, Decode found %d", got+1, len(wants))
			}
			w := wants[got].f
			if !equalFrame(fr, w.Kind, w.Header, w.Payload) {
				t.Fatalf("frame %d: Reader %+v, Decode %+v", got, fr, w)
			}
			got++
		}
	})
}
