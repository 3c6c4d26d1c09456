package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
)

// readerBufSize is the size of a Reader's bufio buffer; frames that fit in it
// (prefix included) are decoded in place, larger ones are read into a
// reusable slice.
const readerBufSize = 64 << 10

// Reader reads frames from a byte stream. It is not safe for concurrent use.
type Reader struct {
	br  *bufio.Reader
	max int
	big []byte // reusable body buffer for frames larger than the bufio buffer
	tab *strTable
	err error // sticky: once set, every Next returns it
}

// NewReader returns a Reader of frames of at most max bytes after the length
// prefix (DefaultMaxFrame when max <= 0), reading from r through a 64 KiB
// bufio.Reader (r itself when it already is a large enough one).
func NewReader(r io.Reader, max int) *Reader {
	return newReaderSize(r, max, readerBufSize)
}

// newReaderSize is NewReader with another buffer size (tests use a tiny one
// to reach the large-frame path with small inputs).
func newReaderSize(r io.Reader, max, size int) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, size), max: normMax(max), tab: newStrTable()}
}

// Next reads the next frame. The frame's Payload aliases the Reader's buffer
// and is valid only until the next call to Next.
//
// Errors: io.EOF at a clean frame boundary, io.ErrUnexpectedEOF in the middle
// of a frame, ErrFrameTooLarge when the length prefix exceeds the limit
// (checked before anything is allocated), ErrVersion, ErrMalformed, or the
// underlying reader's error.
//
// A read error (such as a read deadline passing) while the next frame fits
// the 64 KiB buffer consumes nothing, so Next may be called again and
// resumes where it stopped. Any other error is final: every later call
// returns it again.
func (r *Reader) Next() (Frame, error) {
	if r.err != nil {
		return Frame{}, r.err
	}
	f, err, retry := r.next()
	if err != nil {
		if !retry {
			r.err = err
		}
		return Frame{}, err
	}
	return f, nil
}

// next reads one frame; retry reports an error that consumed nothing.
func (r *Reader) next() (f Frame, err error, retry bool) {
	p, err := r.br.Peek(4)
	if err != nil {
		return Frame{}, eofErr(err, len(p) > 0), true
	}
	n := binary.BigEndian.Uint32(p)
	if uint64(n) > uint64(r.max) {
		return Frame{}, tooLarge(n, r.max), false
	}
	if size := 4 + int(n); size <= r.br.Size() {
		p, err := r.br.Peek(size)
		if err != nil {
			return Frame{}, eofErr(err, true), true
		}
		// Discarding buffered bytes only moves the read position: they stay
		// in place until the next Peek refills the buffer.
		r.br.Discard(size)
		f, err = parseBody(p[4:], r.tab)
		return f, err, false
	}
	if _, err := r.br.Discard(4); err != nil {
		return Frame{}, err, false
	}
	body, err := r.readLarge(int(n))
	if err != nil {
		return Frame{}, err, false
	}
	f, err = parseBody(body, r.tab)
	return f, err, false
}

// readLarge reads an n-byte frame body into r.big. The buffer grows with the
// bytes that actually arrive, not with the length the peer claims, so a peer
// that announces a big frame and stalls costs little memory.
func (r *Reader) readLarge(n int) ([]byte, error) {
	buf := r.big[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			c := min(max(2*cap(buf), 4*r.br.Size()), n)
			grown := make([]byte, len(buf), c)
			copy(grown, buf)
			buf = grown
			r.big = grown
		}
		end := min(cap(buf), n)
		k, err := io.ReadFull(r.br, buf[len(buf):end])
		buf = buf[:len(buf)+k]
		if err != nil {
			return nil, eofErr(err, true)
		}
	}
	return buf, nil
}

// eofErr maps io.EOF inside a frame to io.ErrUnexpectedEOF.
func eofErr(err error, midFrame bool) error {
	if midFrame && errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
