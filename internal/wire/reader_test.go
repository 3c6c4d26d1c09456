package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime"
	"testing"
	"testing/iotest"
	"time"
)

// repeatReader serves the same bytes over and over, never ending.
type repeatReader struct {
	b   []byte
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], r.b[r.off:])
		n += k
		r.off = (r.off + k) % len(r.b)
	}
	return n, nil
}

// allocatedBytes returns the bytes f allocates (roughly: other goroutines
// may add some).
func allocatedBytes(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func testStream(t *testing.T) ([]byte, []Frame) {
	t.Helper()
	sizes := []int{0, 1, 1000, readerBufSize - 40, readerBufSize - 30, readerBufSize, 200_000, 10, 1 << 20, 5}
	var stream []byte
	var frames []Frame
	for i, n := range sizes {
		f := Frame{Kind: allKinds[i%len(allKinds)], Header: Header{Seq: uint64(i), Name: "topic", From: uint64(n)}, Payload: pattern(n, byte(i))}
		stream = mustAppend(t, stream, f.Kind, &f.Header, f.Payload, 0)
		frames = append(frames, f)
	}
	return stream, frames
}

func TestReaderSequence(t *testing.T) {
	stream, frames := testStream(t)
	sources := map[string]func() io.Reader{
		"bytes":   func() io.Reader { return bytes.NewReader(stream) },
		"onebyte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half":    func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
		"dataerr": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) },
		"bufio":   func() io.Reader { return bufio.NewReaderSize(bytes.NewReader(stream), 1<<20) },
	}
	for name, src := range sources {
		t.Run(name, func(t *testing.T) {
			r := NewReader(src(), 0)
			for i, w := range frames {
				f, err := r.Next()
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if !equalFrame(f, w.Kind, w.Header, w.Payload) {
					t.Fatalf("frame %d differs", i)
				}
			}
			for range 2 {
				if _, err := r.Next(); err != io.EOF {
					t.Fatalf("at the end: %v, want io.EOF", err)
				}
			}
			largest := 0
			for _, f := range frames {
				largest = max(largest, FrameSize(&f.Header, f.Payload))
			}
			if cap(r.big) > largest {
				t.Fatalf("large-frame buffer grew to %d, largest body is %d", cap(r.big), largest)
			}
		})
	}
}

func TestReaderPayloadValidUntilNext(t *testing.T) {
	var stream []byte
	for i := range 50 {
		stream = mustAppend(t, stream, KindEvent, &Header{Seq: uint64(i)}, pattern(3000, byte(i)), 0)
	}
	r := NewReader(iotest.HalfReader(bytes.NewReader(stream)), 0)
	for i := range 50 {
		f, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f.Payload, pattern(3000, byte(i))) {
			t.Fatalf("frame %d payload corrupted", i)
		}
	}
}

func TestReaderTruncated(t *testing.T) {
	a := mustAppend(t, nil, KindRequest, &Header{Name: "a"}, pattern(100, 1), 0)
	b := mustAppend(t, nil, KindEvent, &Header{Name: "b"}, pattern(300_000, 2), 0)
	stream := append(bytes.Clone(a), b...)
	cuts := []int{0, 1, 3, 4, 5, 10, len(a) - 1, len(a), len(a) + 2, len(a) + 4, len(a) + 20, len(a) + readerBufSize, len(stream) - 1, len(stream)}
	for _, cut := range cuts {
		r := NewReader(bytes.NewReader(stream[:cut]), 0)
		var err error
		got := 0
		for ; got < 3; got++ {
			if _, err = r.Next(); err != nil {
				break
			}
		}
		wantFrames, wantErr := 0, io.ErrUnexpectedEOF
		switch {
		case cut == 0:
			wantErr = io.EOF
		case cut == len(a):
			wantFrames, wantErr = 1, io.EOF
		case cut == len(stream):
			wantFrames, wantErr = 2, io.EOF
		case cut > len(a):
			wantFrames = 1
		}
		if got != wantFrames || err != wantErr {
			t.Errorf("cut at %d: %d frames then %v; want %d then %v", cut, got, err, wantFrames, wantErr)
		}
	}
}

func TestReaderUnderlyingError(t *testing.T) {
	boom := errors.New("boom")
	a := mustAppend(t, nil, KindPing, nil, nil, 0)
	r := NewReader(io.MultiReader(bytes.NewReader(a), iotest.ErrReader(boom)), 0)
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
}

func TestReaderResumesAfterTimeout(t *testing.T) {
	client, server := tcpPair(t)
	frame := mustAppend(t, nil, KindRequest, &Header{Seq: 42, Name: "resumed"}, pattern(5000, 1), 0)
	r := NewReader(server, 0)

	server.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := r.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle: %v, want a deadline error", err)
	}
	// Half a frame, then a timeout, then the rest.
	if _, err := client.Write(frame[:2000]); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := r.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("half a frame: %v, want a deadline error", err)
	}
	if _, err := client.Write(frame[2000:]); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := r.Next()
	if err != nil || !equalFrame(f, KindRequest, Header{Seq: 42, Name: "resumed"}, pattern(5000, 1)) {
		t.Fatalf("after the timeouts: %v", err)
	}
}

// A frame larger than the Reader's buffer, interrupted by a read deadline
// (as the mesh does to stop a caller reading a connection), resumes too.
func TestReaderResumesALargeFrameAfterTimeout(t *testing.T) {
	client, server := tcpPair(t)
	body := pattern(3*readerBufSize+123, 7)
	frame := mustAppend(t, nil, KindResponse, &Header{Seq: 7, Name: "large"}, body, 0)
	next := mustAppend(t, nil, KindPing, &Header{Seq: 8}, nil, 0)
	r := NewReader(server, 0)
	cut := readerBufSize + 1000 // past the buffer: in the large-frame path
	if _, err := client.Write(frame[:cut]); err != nil {
		t.Fatal(err)
	}
	for range 2 { // twice at the same place, then once further on
		server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := r.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("part of a large frame: %v, want a deadline error", err)
		}
	}
	if _, err := client.Write(frame[cut : 2*cut]); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("more of a large frame: %v, want a deadline error", err)
	}
	if _, err := client.Write(append(frame[2*cut:], next...)); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := r.Next()
	if err != nil || !equalFrame(f, KindResponse, Header{Seq: 7, Name: "large"}, body) {
		t.Fatalf("after the timeouts: %v", err)
	}
	if f, err := r.Next(); err != nil || !equalFrame(f, KindPing, Header{Seq: 8}, nil) {
		t.Fatalf("the frame after: %v", err)
	}
}

func TestReaderOversizedPrefixAllocatesNothing(t *testing.T) {
	stream := append([]byte{0xff, 0xff, 0xff, 0xff}, make([]byte, 100)...)
	r := NewReader(bytes.NewReader(stream), 1<<20)
	var err error
	n := allocatedBytes(func() { _, err = r.Next() })
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v, want ErrFrameTooLarge", err)
	}
	if n > 16<<10 {
		t.Fatalf("Next allocated %d bytes for a refused frame", n)
	}
	// Just above the limit.
	over := binary.BigEndian.AppendUint32(nil, MinMaxFrame+1)
	if _, err := NewReader(bytes.NewReader(over), MinMaxFrame).Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("prefix max+1: %v", err)
	}
	if _, _, err := Decode(over, MinMaxFrame); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("Decode prefix max+1: %v", err)
	}
	if n := allocatedBytes(func() {
		for range 100 {
			_, _, _ = Decode(stream, 1<<20)
		}
	}); n > 64<<10 {
		t.Fatalf("100 Decodes of an oversized prefix allocated %d bytes", n)
	}
}

func TestReaderClaimedSizeNotAllocated(t *testing.T) {
	// A peer announces a frame of the maximum size and sends only 10 bytes.
	stream := append(binary.BigEndian.AppendUint32(nil, DefaultMaxFrame), Version, byte(KindEvent), 9, 0x98, 0, 0, 0, 0xa0, 0, 0)
	r := NewReader(bytes.NewReader(stream), DefaultMaxFrame)
	var err error
	n := allocatedBytes(func() { _, err = r.Next() })
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if n > 1<<20 || cap(r.big) > 4*readerBufSize {
		t.Fatalf("allocated %d bytes (buffer %d) for a frame claiming %d and delivering 10", n, cap(r.big), DefaultMaxFrame)
	}
}

func TestReaderSmallFramesZeroAlloc(t *testing.T) {
	var stream []byte
	names := []string{"billing.charge", "billing.refund", "users.get", "orders.created"}
	for i := range 64 {
		h := Header{To: uint64(i), From: 7, Seq: uint64(i) << 20, Name: names[i%len(names)], Deadline: 1_750_000_000_000_000_000 + int64(i)}
		stream = mustAppend(t, stream, KindRequest, &h, pattern(100+i*10, byte(i)), 0)
	}
	r := NewReader(&repeatReader{b: stream}, 0)
	for range 64 { // warm the string table
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Next of small frames: %v allocs, want 0", n)
	}
}

func TestReaderLargeFramesReuseBuffer(t *testing.T) {
	stream := mustAppend(t, nil, KindEvent, &Header{Name: "big"}, pattern(1<<20, 9), 0)
	r := NewReader(&repeatReader{b: stream}, 0)
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(20, func() {
		f, err := r.Next()
		if err != nil || len(f.Payload) != 1<<20 {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Next of 1 MiB frames: %v allocs, want 0", n)
	}
}
