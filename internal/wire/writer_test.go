package wire

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns both ends of a 127.0.0.1 TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		client.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWriterConcurrentTCP(t *testing.T) {
	const goroutines, perG = 16, 1000
	client, server := tcpPair(t)
	w := NewWriter(client, 0)

	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		r := NewReader(server, 0)
		next := make([]uint64, goroutines)
		n := 0
		for n < goroutines*perG {
			f, err := r.Next()
			if err != nil {
				done <- result{n, err}
				return
			}
			g, seq := f.Header.From, f.Header.Seq
			if f.Kind != KindEvent || g >= goroutines || seq != next[g] || f.Header.Name != "topic.x" {
				done <- result{n, errors.New("frame out of order or corrupted")}
				return
			}
			if want := pattern(int(seq%300), byte(g)); !bytes.Equal(f.Payload, want) {
				done <- result{n, errors.New("payload corrupted")}
				return
			}
			next[g]++
			n++
		}
		done <- result{n, nil}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range perG {
				h := Header{From: uint64(g), Seq: uint64(seq), Name: "topic.x"}
				if err := w.WriteFrame(ctx, KindEvent, &h, pattern(seq%300, byte(g))); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// No Flush: every frame must reach the reader anyway.
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("reader after %d frames: %v", r.n, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("reader did not see every frame")
	}
	frames, writes := w.Stats()
	t.Logf("%d frames in %d writes (%.1f frames/write)", frames, writes, float64(frames)/float64(writes))
	if frames != goroutines*perG {
		t.Fatalf("Stats frames = %d", frames)
	}
	if writes >= frames {
		t.Fatalf("no batching: %d writes for %d frames", writes, frames)
	}
}

// recWriter records each Write.
type recWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	err    error
}

func (r *recWriter) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	if r.err != nil {
		return 0, r.err
	}
	return r.buf.Write(p)
}

func (r *recWriter) frames(t *testing.T) []Frame {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var fs []Frame
	b := r.buf.Bytes()
	for len(b) > 0 {
		f, n, err := Decode(b, 0)
		if err != nil {
			t.Fatalf("written stream: %v", err)
		}
		fs = append(fs, f)
		b = b[n:]
	}
	return fs
}

func TestWriterLoneFrameWrittenAtOnce(t *testing.T) {
	rw := &recWriter{}
	w := NewWriter(rw, 0)
	for i := range 3 {
		if err := w.WriteFrame(context.Background(), KindPing, &Header{Seq: uint64(i)}, nil); err != nil {
			t.Fatal(err)
		}
		if fs := rw.frames(t); len(fs) != i+1 || fs[i].Header.Seq != uint64(i) {
			t.Fatalf("after WriteFrame %d the writer holds %d frames", i, len(fs))
		}
	}
	if frames, writes := w.Stats(); frames != 3 || writes != 3 {
		t.Fatalf("Stats = %d, %d", frames, writes)
	}
}

func TestWriterFrameTooLargeKeepsWriter(t *testing.T) {
	rw := &recWriter{}
	w := NewWriter(rw, MinMaxFrame)
	err := w.WriteFrame(context.Background(), KindEvent, &Header{}, make([]byte, MinMaxFrame))
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v, want ErrFrameTooLarge", err)
	}
	if err := w.WriteFrame(context.Background(), KindEvent, &Header{Seq: 1}, []byte("ok")); err != nil {
		t.Fatalf("after a too-large frame: %v", err)
	}
	if fs := rw.frames(t); len(fs) != 1 || string(fs[0].Payload) != "ok" {
		t.Fatalf("written: %+v", fs)
	}
	if w.Err() != nil {
		t.Fatal(w.Err())
	}
}

func TestWriterBrokenAfterWriteError(t *testing.T) {
	boom := errors.New("boom")
	rw := &recWriter{err: boom}
	w := NewWriter(rw, 0)
	err := w.WriteFrame(context.Background(), KindPing, nil, nil)
	if !errors.Is(err, boom) || !errors.Is(err, ErrClosed) {
		t.Fatalf("first write: %v, want boom wrapped in ErrClosed", err)
	}
	for range 3 {
		err := w.WriteFrame(context.Background(), KindPing, nil, nil)
		if !errors.Is(err, boom) || !errors.Is(err, ErrClosed) {
			t.Fatalf("later write: %v", err)
		}
	}
	if !errors.Is(w.Err(), boom) || !errors.Is(w.Flush(context.Background()), boom) {
		t.Fatalf("Err = %v", w.Err())
	}
	if _, writes := w.Stats(); writes != 1 {
		t.Fatalf("a broken writer kept writing: %d writes", writes)
	}
}

func TestWriterBrokenConn(t *testing.T) {
	client, _ := tcpPair(t)
	w := NewWriter(client, 0)
	if err := w.WriteFrame(context.Background(), KindPing, nil, nil); err != nil {
		t.Fatal(err)
	}
	client.Close()
	err := w.WriteFrame(context.Background(), KindPing, nil, nil)
	if !errors.Is(err, net.ErrClosed) || !errors.Is(err, ErrClosed) {
		t.Fatalf("write on a closed conn: %v", err)
	}
	if err := w.WriteFrame(context.Background(), KindPing, nil, nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("later write: %v", err)
	}
}

func TestWriterShortWrite(t *testing.T) {
	w := NewWriter(writerFunc(func(p []byte) (int, error) { return len(p) - 1, nil }), 0)
	if err := w.WriteFrame(context.Background(), KindPing, nil, nil); !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("got %v, want io.ErrShortWrite", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestWriterClose(t *testing.T) {
	client, server := tcpPair(t)
	w := NewWriter(client, 0)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(context.Background(), KindPing, nil, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if !errors.Is(w.Err(), ErrClosed) {
		t.Fatalf("Err = %v", w.Err())
	}
	// The connection itself is still usable.
	if _, err := client.Write(rawFrame(Version, byte(KindPing), 9, 0x98, 0, 0, 0, 0xa0, 0, 0, 0xa0, 0xa0)); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if f, err := NewReader(server, 0).Next(); err != nil || f.Kind != KindPing {
		t.Fatalf("read after Close: %v %v", f.Kind, err)
	}
}

// TestWriterBackPressure: over net.Pipe nothing is buffered, so with no
// reader the first frame's flusher blocks in Write and the pending buffer
// fills up to the threshold.
func TestWriterBackPressure(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	const maxPending = 10_000
	w := NewWriter(client, 0, WithMaxPending(maxPending))
	payload := make([]byte, 1000)

	first := make(chan error, 1)
	go func() { first <- w.WriteFrame(context.Background(), KindEvent, &Header{Seq: 0}, payload) }()
	// Not merely queued: while the first frame's goroutine still yields, the
	// tenth frame below would make this goroutine the flusher (DefaultBatch),
	// blocked in Write until the write timeout.
	waitWriting(t, w)

	sent := 1
	for ; sent < 100; sent++ {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start := time.Now()
		err := w.WriteFrame(ctx, KindEvent, &Header{Seq: uint64(sent)}, payload)
		cancel()
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("frame %d: %v, want context.DeadlineExceeded", sent, err)
			}
			if time.Since(start) > 5*time.Second {
				t.Fatal("WriteFrame ignored its context")
			}
			break
		}
	}
	if sent*1000 < maxPending || sent*1000 > maxPending+3000 {
		t.Fatalf("back-pressure after %d frames of 1000 bytes, threshold %d", sent, maxPending)
	}
	if w.Err() != nil {
		t.Fatalf("back-pressure broke the writer: %v", w.Err())
	}

	// A waiting writer proceeds once the peer reads.
	late := make(chan error, 1)
	go func() { late <- w.WriteFrame(context.Background(), KindEvent, &Header{Seq: uint64(sent)}, payload) }()
	r := NewReader(server, 0)
	for i := 0; i <= sent; i++ {
		server.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := r.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.Header.Seq != uint64(i) {
			t.Fatalf("frame %d has seq %d", i, f.Header.Seq)
		}
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-late; err != nil {
		t.Fatal(err)
	}
}

// TestWriterBackPressureTCP: a TCP peer that never reads. Once the kernel
// buffers are full the flusher blocks in Write and the other writers hit the
// threshold and their contexts; closing the connection then frees the
// flusher.
func TestWriterBackPressureTCP(t *testing.T) {
	client, _ := tcpPair(t)
	w := NewWriter(client, 0, WithMaxPending(64<<10))
	payload := make([]byte, 16<<10)
	const writers = 4
	errs := make(chan error, writers)
	for g := range writers {
		go func() {
			for i := range 5000 { // bounded: ~80 MB per goroutine at most
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				err := w.WriteFrame(ctx, KindEvent, &Header{From: uint64(g), Seq: uint64(i)}, payload)
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	var sawCtx bool
	for range writers {
		select {
		case err := <-errs:
			switch {
			case errors.Is(err, context.DeadlineExceeded):
				if !sawCtx {
					sawCtx = true
					client.Close()
				}
			case errors.Is(err, net.ErrClosed) || errors.Is(err, ErrClosed):
				// The flusher, released by Close, or a writer after it.
			default:
				t.Fatalf("unexpected result %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("writers still blocked: back-pressure not working")
		}
	}
	if !sawCtx {
		t.Fatal("no writer was stopped by its context")
	}
}

func TestWriterWriteTimeout(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	defer client.Close()
	w := NewWriter(client, 0, WithWriteTimeout(50*time.Millisecond))
	start := time.Now()
	err := w.WriteFrame(context.Background(), KindPing, nil, nil)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("write timeout not applied")
	}
}

// deadlineWriter records each Write's time and the write deadline in force.
type deadlineWriter struct {
	dl     time.Time
	sets   int
	writes []time.Time // when each Write began
	dls    []time.Time // the deadline in force at each Write
}

func (d *deadlineWriter) SetWriteDeadline(t time.Time) error {
	d.dl = t
	d.sets++
	return nil
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.writes = append(d.writes, time.Now())
	d.dls = append(d.dls, d.dl)
	return len(p), nil
}

// The write deadline is moved only when less than the timeout is left, and
// every Write has at least the timeout before it.
func TestWriterWriteDeadlineMovedWhenNeeded(t *testing.T) {
	const timeout = 40 * time.Millisecond
	d := &deadlineWriter{}
	w := NewWriter(d, 0, WithWriteTimeout(timeout))
	write := func() {
		t.Helper()
		if err := w.WriteFrame(context.Background(), KindPing, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	write()
	if d.sets != 1 {
		t.Fatalf("%d deadlines set for the first write, want 1", d.sets)
	}
	// More than the timeout is left (1.5 times it was set) while writes
	// follow closely; after timeout/2 or more, less than it is.
	time.Sleep(timeout/2 + 5*time.Millisecond)
	write()
	if d.sets != 2 {
		t.Fatalf("%d deadlines set after a pause of more than half the timeout, want 2", d.sets)
	}
	for i, at := range d.writes {
		if left := d.dls[i].Sub(at); left < timeout {
			t.Errorf("write %d had %v before its deadline, want at least %v", i, left, timeout)
		}
	}

	// Writes in a quick succession share one deadline.
	d2 := &deadlineWriter{}
	w2 := NewWriter(d2, 0, WithWriteTimeout(time.Hour))
	for range 100 {
		if err := w2.WriteFrame(context.Background(), KindPing, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if len(d2.writes) != 100 || d2.sets != 1 {
		t.Fatalf("100 writes set %d deadlines in %d writes, want 1 in 100", d2.sets, len(d2.writes))
	}
	if left := d2.dls[99].Sub(d2.writes[99]); left < time.Hour {
		t.Fatalf("the last write had %v before its deadline, want at least an hour", left)
	}
}

// gateWriter blocks every Write until released.
type gateWriter struct {
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
	writes  atomic.Int64
	by      []string // the goroutine that made each Write ("goroutine N")
}

func newGateWriter() *gateWriter {
	return &gateWriter{entered: make(chan struct{}, 100), release: make(chan struct{})}
}

func (g *gateWriter) Write(p []byte) (int, error) {
	g.entered <- struct{}{}
	<-g.release
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writes.Add(1)
	g.by = append(g.by, goroutineName())
	return g.buf.Write(p)
}

// goroutineName returns "goroutine N" for the calling goroutine.
func goroutineName() string {
	var b [64]byte
	s := string(b[:runtime.Stack(b[:], false)])
	if i := strings.Index(s, " ["); i >= 0 {
		return s[:i]
	}
	return s
}

func recv(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestWriterFlusherHandsOff(t *testing.T) {
	g := newGateWriter()
	w := NewWriter(g, 0)
	ctx := context.Background()
	firstDone := make(chan struct{})
	go func() {
		if err := w.WriteFrame(ctx, KindEvent, &Header{Seq: 0}, nil); err != nil {
			t.Error(err)
		}
		close(firstDone)
	}()
	recv(t, g.entered, "write 1")
	const total = 3 * flushRounds
	for i := 1; i < total; i++ {
		if err := w.WriteFrame(ctx, KindEvent, &Header{Seq: uint64(i)}, nil); err != nil {
			t.Fatal(err)
		}
		g.release <- struct{}{}
		recv(t, g.entered, "the next write")
	}
	close(g.release)
	select {
	case <-firstDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the first caller never returned")
	}
	// Counted by goroutine, not by when the first caller runs again after
	// it returns (the scheduler may run it only after every write).
	g.mu.Lock()
	first, n := g.by[0], 0
	for _, by := range g.by {
		if by == first {
			n++
		}
	}
	g.mu.Unlock()
	if n > flushRounds {
		t.Fatalf("the first caller stayed flusher for %d writes", n)
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := w.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	b := bytes.Clone(g.buf.Bytes())
	g.mu.Unlock()
	for i := range total {
		f, n, err := Decode(b, 0)
		if err != nil || f.Header.Seq != uint64(i) {
			t.Fatalf("frame %d: seq %d, %v", i, f.Header.Seq, err)
		}
		b = b[n:]
	}
	if len(b) != 0 {
		t.Fatal("extra bytes written")
	}
}

func TestWriterFlush(t *testing.T) {
	g := newGateWriter()
	w := NewWriter(g, 0)
	ctx := context.Background()
	go w.WriteFrame(ctx, KindPing, &Header{Seq: 1}, nil)
	recv(t, g.entered, "write 1")
	if err := w.WriteFrame(ctx, KindPing, &Header{Seq: 2}, nil); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := w.Flush(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush with writes blocked: %v", err)
	}
	flushed := make(chan error, 1)
	go func() { flushed <- w.Flush(ctx) }()
	g.release <- struct{}{}
	recv(t, g.entered, "write 2")
	select {
	case err := <-flushed:
		t.Fatalf("Flush returned (%v) before the second frame was written", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(g.release)
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Flush never returned")
	}
	if n := g.writes.Load(); n != 2 {
		t.Fatalf("%d writes", n)
	}
	// Nothing pending: Flush returns at once, also after Close.
	w.Close()
	if err := w.Flush(short); err != nil {
		t.Fatal(err)
	}
}

// waitWriting waits until w's flusher has taken its first batch and is in
// the underlying Write (which, in the tests that use it, blocks).
func waitWriting(t *testing.T, w *Writer) {
	t.Helper()
	waitFor(t, "the flusher to be writing", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.swaps == 1 && !w.yielding
	})
}

func TestWriterCloseWakesWaiters(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	w := NewWriter(client, 0, WithMaxPending(1))
	go w.WriteFrame(context.Background(), KindPing, nil, nil)
	waitWriting(t, w)
	if err := w.WriteFrame(context.Background(), KindPing, nil, nil); err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- w.WriteFrame(context.Background(), KindPing, nil, nil) }()
	waitFor(t, "WriteFrame to wait for space", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.wake != nil
	})
	w.Close()
	select {
	case err := <-blocked:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("got %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a waiting writer")
	}
}

func TestWriterSteadyStateZeroAlloc(t *testing.T) {
	w := NewWriter(io.Discard, 0)
	h := Header{To: 1, From: 2, Seq: 3, Name: "svc.method"}
	p := make([]byte, 200)
	ctx := context.Background()
	w.WriteFrame(ctx, KindRequest, &h, p)
	if n := testing.AllocsPerRun(1000, func() { _ = w.WriteFrame(ctx, KindRequest, &h, p) }); n != 0 {
		t.Fatalf("WriteFrame: %v allocs, want 0", n)
	}
}

func TestWriterLargeFrames(t *testing.T) {
	client, server := tcpPair(t)
	w := NewWriter(client, 0)
	payload := pattern(3<<20, 5)
	errc := make(chan error, 1)
	go func() {
		for i := range 3 {
			if err := w.WriteFrame(context.Background(), KindEvent, &Header{Seq: uint64(i)}, payload); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	r := NewReader(server, 0)
	for i := range 3 {
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := r.Next()
		if err != nil || f.Header.Seq != uint64(i) || !bytes.Equal(f.Payload, payload) {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestWriterReleasesBigBuffers(t *testing.T) {
	w := NewWriter(io.Discard, 0)
	ctx := context.Background()
	caps := func() (int, int) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return cap(w.pending), cap(w.spare)
	}
	if err := w.WriteFrame(ctx, KindEvent, nil, make([]byte, 2<<20)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(ctx, KindEvent, nil, nil); err != nil {
		t.Fatal(err)
	}
	if p, s := caps(); max(p, s) < 2<<20 {
		t.Fatalf("big buffer not kept while recently used: caps %d, %d", p, s)
	}
	w.mu.Lock()
	w.retainFor = 0
	w.mu.Unlock()
	if err := w.WriteFrame(ctx, KindEvent, nil, nil); err != nil {
		t.Fatal(err)
	}
	if p, s := caps(); max(p, s) > retainLimit {
		t.Fatalf("big buffers kept after the traffic calmed down: caps %d, %d", p, s)
	}
}

func TestPostNeverBlocksAndIsWritten(t *testing.T) {
	a, b := net.Pipe() // synchronous: a Write blocks until the other end reads
	defer a.Close()
	defer b.Close()
	w := NewWriter(a, 0)
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 100; i++ {
			if err := w.Post(KindPong, &Header{Seq: uint64(i)}, nil); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Post blocked on a peer that does not read")
	}
	r := NewReader(b, 0)
	for i := 0; i < 100; i++ {
		f, err := r.Next()
		if err != nil || f.Kind != KindPong || f.Header.Seq != uint64(i) {
			t.Fatalf("frame %d: %v %+v", i, err, f)
		}
	}
}

func TestWriterHoldDefersToLastRelease(t *testing.T) {
	rw := &recWriter{}
	w := NewWriter(rw, 0)
	ctx := context.Background()
	w.Hold()
	w.Hold()
	for i := range 5 {
		if err := w.WriteFrame(ctx, KindPing, &Header{Seq: uint64(i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if fs := rw.frames(t); len(fs) != 0 {
		t.Fatalf("%d frames written while held", len(fs))
	}
	w.Release()
	if fs := rw.frames(t); len(fs) != 0 {
		t.Fatalf("%d frames written with one hold left", len(fs))
	}
	w.Release() // the write is left to a new goroutine
	flush(t, w)
	fs := rw.frames(t)
	if len(fs) != 5 {
		t.Fatalf("last Release wrote %d frames, want 5", len(fs))
	}
	for i, f := range fs {
		if f.Header.Seq != uint64(i) {
			t.Fatalf("frame %d has seq %d: order lost", i, f.Header.Seq)
		}
	}
	if _, writes := w.Stats(); writes != 1 {
		t.Fatalf("%d writes, want the held frames in one", writes)
	}
	// Unheld again: a lone frame goes out at once.
	if err := w.WriteFrame(ctx, KindPing, &Header{Seq: 9}, nil); err != nil {
		t.Fatal(err)
	}
	if fs := rw.frames(t); len(fs) != 6 {
		t.Fatalf("%d frames after an unheld write", len(fs))
	}
	// A Release with nothing pending writes nothing.
	w.Hold()
	w.Release()
	if _, writes := w.Stats(); writes != 2 {
		t.Fatalf("%d writes after an empty hold", writes)
	}
}

// The last Release leaves the write to a new goroutine, which runs once its
// caller blocks: a reply the caller appends right after releasing (a
// responder's worker releases its hold as it starts the burst's last
// request) joins the held ones in one write instead of going out alone.
func TestWriterLastReleaseLetsItsCallerJoinTheWrite(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // the flusher runs only once this goroutine blocks
	rw := &recWriter{}
	w := NewWriter(rw, 0)
	ctx := context.Background()
	w.Hold()
	if err := w.WriteFrame(ctx, KindPing, &Header{Seq: 1}, nil); err != nil {
		t.Fatal(err)
	}
	w.Release()
	if err := w.WriteFrame(ctx, KindPing, &Header{Seq: 2}, nil); err != nil {
		t.Fatal(err)
	}
	flush(t, w)
	if fs := rw.frames(t); len(fs) != 2 {
		t.Fatalf("%d frames written, want 2", len(fs))
	}
	if _, writes := w.Stats(); writes != 1 {
		t.Fatalf("%d writes, want the released frame and the next one in one", writes)
	}
}

// Holds are counted without the lock: goroutines that hold, write and
// release at once, as a responder's read loop and workers do, never leave
// a frame behind, and every one is written once once the last hold ends.
func TestWriterConcurrentHoldsLoseNoFrame(t *testing.T) {
	rw := &recWriter{}
	w := NewWriter(rw, 0)
	ctx := context.Background()
	const workers, each = 8, 500
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				held := i%2 == 0 || i == each-1 // the last frames wait for a Release
				if held {
					w.Hold()
				}
				if i%3 == 0 {
					runtime.Gosched() // let Releases and writes cross this hold
				}
				if err := w.WriteFrame(ctx, KindPing, &Header{Seq: uint64(g*each + i)}, nil); err != nil {
					t.Error(err)
					return
				}
				if held {
					w.Release()
				}
			}
		}()
	}
	wg.Wait()
	// No Flush: it would write what a lost wake-up left behind.
	var fs []Frame
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if fs = rw.frames(t); len(fs) >= workers*each || time.Now().After(deadline) {
			break
		}
	}
	seen := make(map[uint64]bool, len(fs))
	for _, f := range fs {
		if seen[f.Header.Seq] {
			t.Fatalf("frame %d written twice", f.Header.Seq)
		}
		seen[f.Header.Seq] = true
	}
	if len(seen) != workers*each {
		t.Fatalf("%d frames written, want %d", len(seen), workers*each)
	}
}

func TestWriterHoldIsBoundedInBytes(t *testing.T) {
	rw := &recWriter{}
	w := NewWriter(rw, 0)
	w.Hold()
	defer w.Release()
	payload := make([]byte, 1024)
	n := 0
	for len(rw.frames(t)) == 0 {
		if n > holdLimit/len(payload)+1 {
			t.Fatalf("%d KiB held back, the limit is %d KiB", n, holdLimit>>10)
		}
		if err := w.WriteFrame(context.Background(), KindEvent, &Header{Seq: uint64(n)}, payload); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if got := len(rw.frames(t)); got != n {
		t.Fatalf("%d of %d frames written past the limit", got, n)
	}
}

func TestWriterHeldFramesOutliveCloseAndFlush(t *testing.T) {
	for _, how := range []string{"Flush", "Close"} {
		t.Run(how, func(t *testing.T) {
			rw := &recWriter{}
			w := NewWriter(rw, 0)
			w.Hold() // never released: a bug elsewhere must not lose frames
			if err := w.WriteFrame(context.Background(), KindPing, &Header{Seq: 1}, nil); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if how == "Close" {
				w.Close()
			}
			if err := w.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if fs := rw.frames(t); len(fs) != 1 {
				t.Fatalf("%d frames written", len(fs))
			}
		})
	}
}

func TestWriterReleaseWithoutHoldPanics(t *testing.T) {
	w := NewWriter(&recWriter{}, 0)
	defer func() {
		if recover() == nil {
			t.Fatal("Release without Hold did not panic")
		}
	}()
	w.Release()
}

func TestWriterHoldConcurrent(t *testing.T) {
	c, s := tcpPair(t)
	w := NewWriter(c, 0)
	const writers, each = 8, 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := NewReader(s, 0)
		for range writers * each {
			if _, err := r.Next(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				w.Hold()
				err := w.WriteFrame(context.Background(), KindPing, &Header{Seq: uint64(g*each + i)}, nil)
				w.Release()
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("held frames were never all written")
	}
}

func TestWriterReleaseNeverBlocks(t *testing.T) {
	g := newGateWriter()
	w := NewWriter(g, 0)
	w.Hold()
	if err := w.WriteFrame(context.Background(), KindPing, &Header{Seq: 1}, nil); err != nil {
		t.Fatal(err)
	}
	w.Release() // the write blocks in the gate, not here
	recv(t, g.entered, "background write")
	close(g.release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestWriterHoldWithSmallBackPressureThreshold(t *testing.T) {
	rw := &recWriter{}
	w := NewWriter(rw, 0, WithMaxPending(64)) // far below holdLimit
	w.Hold()
	defer w.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 20 {
		if err := w.WriteFrame(ctx, KindEvent, &Header{Seq: uint64(i)}, make([]byte, 16)); err != nil {
			t.Fatalf("frame %d: %v (held frames must not block writers)", i, err)
		}
	}
	if fs := rw.frames(t); len(fs) == 0 {
		t.Fatal("nothing written past the back-pressure threshold")
	}
}

// flush waits until everything queued on w so far has been written.
func flush(t *testing.T, w *Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// A flusher yields so that goroutines on its core append first; with a
// batch limit, the goroutine appending the batch's last frame writes the
// batch at once (goroutines on other cores fill it meanwhile), and the
// yielding flusher, when it resumes, leaves. With no limit, the flusher
// writes everything once it resumes.
func TestWriterBatchTakesOverFromAYieldingFlusher(t *testing.T) {
	ctx := context.Background()
	yield := func(w *Writer) uint64 { // as WriteFrame leaves a flusher that yields
		w.mu.Lock()
		defer w.mu.Unlock()
		w.flushing, w.yielding = true, true
		return w.turn
	}
	resume := func(w *Writer, turn uint64) error {
		w.mu.Lock()
		return w.endYieldLocked(turn)
	}

	rw := &recWriter{}
	w := NewWriter(rw, 0, WithBatch(3))
	turn := yield(w)
	for i := range 3 {
		if err := w.WriteFrame(ctx, KindPing, &Header{Seq: uint64(i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, writes := w.Stats(); writes != 1 || len(rw.frames(t)) != 3 {
		t.Fatalf("%d writes, %d frames after a full batch; want 1 write of 3", writes, len(rw.frames(t)))
	}
	if err := resume(w, turn); err != nil {
		t.Fatal(err)
	}
	if _, writes := w.Stats(); writes != 1 {
		t.Fatalf("the flusher that was taken over wrote (%d writes)", writes)
	}
	// The writer is free again: a frame goes out with its own flush.
	if err := w.WriteFrame(ctx, KindPing, &Header{Seq: 3}, nil); err != nil {
		t.Fatal(err)
	}
	if _, writes := w.Stats(); writes != 2 || len(rw.frames(t)) != 4 {
		t.Fatalf("%d writes, %d frames; want 2 writes of 4 frames in all", writes, len(rw.frames(t)))
	}

	rw = &recWriter{}
	w = NewWriter(rw, 0, WithBatch(0))
	turn = yield(w)
	for i := range 20 {
		if err := w.WriteFrame(ctx, KindPing, &Header{Seq: uint64(i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, writes := w.Stats(); writes != 0 {
		t.Fatalf("%d writes while the flusher yields with no batch limit", writes)
	}
	if err := resume(w, turn); err != nil {
		t.Fatal(err)
	}
	if _, writes := w.Stats(); writes != 1 || len(rw.frames(t)) != 20 {
		t.Fatalf("%d writes, %d frames; want the flusher to write all 20 at once", writes, len(rw.frames(t)))
	}
}

// The batch limit is on by default only with more than one P.
func TestWriterDefaultBatch(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	if w := NewWriter(&recWriter{}, 0); w.batch != 0 {
		t.Fatalf("batch %d with GOMAXPROCS=1, want none", w.batch)
	}
	runtime.GOMAXPROCS(2)
	if w := NewWriter(&recWriter{}, 0); w.batch != DefaultBatch {
		t.Fatalf("batch %d with GOMAXPROCS=2, want %d", w.batch, DefaultBatch)
	}
}

// WriteFrameNow writes at once when it becomes the flusher, without the
// yield WriteFrame makes first.
func TestWriterWriteFrameNowDoesNotYield(t *testing.T) {
	rw := &recWriter{}
	w := NewWriter(rw, 0)
	ctx := context.Background()
	yields := func() uint64 {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.yields
	}
	if err := w.WriteFrame(ctx, KindPing, &Header{Seq: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if yields() != 1 || len(rw.frames(t)) != 1 {
		t.Fatalf("WriteFrame: %d yields, %d frames written; want 1 and 1", yields(), len(rw.frames(t)))
	}
	if err := w.WriteFrameNow(ctx, KindPing, &Header{Seq: 2}, nil); err != nil {
		t.Fatal(err)
	}
	if yields() != 1 || len(rw.frames(t)) != 2 {
		t.Fatalf("WriteFrameNow: %d yields in all, %d frames written; want 1 and 2", yields(), len(rw.frames(t)))
	}
}
