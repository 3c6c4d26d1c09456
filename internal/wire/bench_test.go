package wire

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

var benchHeader = Header{To: 12, From: 34, Seq: 123456, Name: "billing.charge", Deadline: 1_750_000_000_000_000_000}

func BenchmarkAppendFrame(b *testing.B) {
	for _, size := range []int{0, 128, 4096} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			p := make([]byte, size)
			buf := make([]byte, 0, 8192)
			b.SetBytes(int64(FrameSize(&benchHeader, p) + 4))
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = AppendFrame(buf[:0], KindRequest, &benchHeader, p, 0)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	buf, _ := AppendFrame(nil, KindRequest, &Header{To: 12, From: 34, Seq: 123456, Deadline: 1}, make([]byte, 128), 0)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Decode(buf, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReaderNext(b *testing.B) {
	for _, size := range []int{128, 4096, 32 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			var stream []byte
			for i := range 16 {
				h := benchHeader
				h.Seq = uint64(i)
				stream, _ = AppendFrame(stream, KindRequest, &h, make([]byte, size), 0)
			}
			r := NewReader(&repeatReader{b: stream}, 0)
			b.SetBytes(int64(len(stream) / 16))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Next(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// countingWriter is an in-memory sink: the benchmark measures the Writer's
// own cost (encoding, locking, batching) without a socket.
type countingWriter struct{ n atomic.Int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}

func BenchmarkWriterParallel(b *testing.B) {
	for _, size := range []int{128, 4096} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			w := NewWriter(&countingWriter{}, 0)
			p := make([]byte, size)
			ctx := context.Background()
			b.SetBytes(int64(FrameSize(&benchHeader, p) + 4))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := w.WriteFrame(ctx, KindEvent, &benchHeader, p); err != nil {
						b.Error(err)
						return
					}
				}
			})
			frames, writes := w.Stats()
			b.ReportMetric(float64(frames)/float64(max(writes, 1)), "frames/write")
		})
	}
}

// BenchmarkWriterParallelTCP writes from parallel goroutines to a real
// loopback connection drained by a Reader.
func BenchmarkWriterParallelTCP(b *testing.B) {
	for _, size := range []int{128, 4096} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			client, server := tcpPair(b)
			done := make(chan struct{})
			go func() {
				defer close(done)
				r := NewReader(server, 0)
				for {
					if _, err := r.Next(); err != nil {
						return
					}
				}
			}()
			w := NewWriter(client, 0)
			p := make([]byte, size)
			ctx := context.Background()
			b.SetBytes(int64(FrameSize(&benchHeader, p) + 4))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := w.WriteFrame(ctx, KindEvent, &benchHeader, p); err != nil {
						b.Error(err)
						return
					}
				}
			})
			if err := w.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			frames, writes := w.Stats()
			b.ReportMetric(float64(frames)/float64(max(writes, 1)), "frames/write")
			client.Close()
			<-done
		})
	}
}
