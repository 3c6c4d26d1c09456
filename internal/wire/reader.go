package wire

import (
	"encoding/binary"
	"errors"
	"io"
)

// readerBufSize is the size of a Reader's buffer; frames that fit in it
// (prefix included) are decoded in place, larger ones are read into a
// reusable slice.
const readerBufSize = 64 << 10

// maxEmptyReads is how many reads in a row may return no bytes and no
// error before Next gives up with io.ErrNoProgress, as bufio does.
const maxEmptyReads = 100

// Reader reads frames from a byte stream. It is not safe for concurrent use.
//
// It keeps its own buffer rather than a bufio.Reader's: a frame is found
// and sliced out of buf[off:end] with two comparisons, where bufio's Peek
// and Discard took a few hundred instructions a frame.
type Reader struct {
	src io.Reader
	buf []byte // buf[off:end] are read and not yet consumed
	off int
	end int
	max int
	big []byte // reusable body buffer for frames larger than buf
	// large is the body length of a frame larger than buf whose reading
	// a read error interrupted: big holds its first got bytes, and the
	// next call resumes it.
	large, got int
	tab        *strTable
	err        error // sticky: once set, every Next returns it
}

// NewReader returns a Reader of frames of at most max bytes after the length
// prefix (DefaultMaxFrame when max <= 0), reading from r through a 64 KiB
// buffer.
func NewReader(r io.Reader, max int) *Reader {
	return newReaderSize(r, max, readerBufSize)
}

// newReaderSize is NewReader with another buffer size (tests use a tiny one
// to reach the large-frame path with small inputs).
func newReaderSize(r io.Reader, maxFrame, size int) *Reader {
	return &Reader{src: r, buf: make([]byte, max(size, 16)), max: normMax(maxFrame), tab: newStrTable()}
}

// Buffered returns how many bytes have been read from the source and not
// yet consumed: more than zero means part or all of another frame is here.
func (r *Reader) Buffered() int { return r.end - r.off }

// Next reads the next frame. The frame's Payload aliases the Reader's buffer
// and is valid only until the next call to Next.
//
// Errors: io.EOF at a clean frame boundary, io.ErrUnexpectedEOF in the middle
// of a frame, ErrFrameTooLarge when the length prefix exceeds the limit
// (checked before anything is allocated), ErrVersion, ErrMalformed, or the
// underlying reader's error.
//
// A read error (such as a read deadline passing) loses nothing: what was
// read stays buffered, so Next may be called again and resumes where it
// stopped. Any other error is final: every later call returns it again.
func (r *Reader) Next() (Frame, error) {
	var f Frame
	if err := r.ReadFrame(&f); err != nil {
		return Frame{}, err
	}
	return f, nil
}

// ReadFrame is Next into *f: it overwrites all of f but Back, and saves a
// read loop copying each frame (well over 100 bytes) out of Next and into
// its own. On an error, f is left unspecified.
func (r *Reader) ReadFrame(f *Frame) error {
	if r.err != nil {
		return r.err
	}
	if err, retry := r.next(f); err != nil {
		if !retry {
			r.err = err
		}
		return err
	}
	return nil
}

// next reads one frame into f; retry reports an error that consumed
// nothing.
func (r *Reader) next(f *Frame) (err error, retry bool) {
	if r.large > 0 {
		return r.nextLarge(f)
	}
	if r.end-r.off < 4 {
		if err := r.fill(4); err != nil {
			return eofErr(err, r.end > r.off), true
		}
	}
	n := binary.BigEndian.Uint32(r.buf[r.off:])
	if uint64(n) > uint64(r.max) {
		return tooLarge(n, r.max), false
	}
	if size := 4 + int(n); size <= len(r.buf) {
		if r.end-r.off < size {
			if err := r.fill(size); err != nil {
				return eofErr(err, true), true
			}
		}
		// Consuming a frame only moves off: its bytes stay in place until
		// the next fill moves or overwrites them.
		p := r.buf[r.off+4 : r.off+size]
		r.off += size
		return parseBodyInto(f, p, r.tab), false
	}
	r.off += 4
	r.large, r.got = int(n), 0
	return r.nextLarge(f)
}

// nextLarge reads the rest of the large frame under way into f; after a
// read error it stays under way, to be resumed.
func (r *Reader) nextLarge(f *Frame) (err error, retry bool) {
	body, err := r.readLarge(r.large)
	if err != nil {
		return err, true
	}
	r.large, r.got = 0, 0
	return parseBodyInto(f, body, r.tab), false
}

// fill reads until at least need (<= len(r.buf)) bytes are buffered. On an
// error, what was read stays buffered.
func (r *Reader) fill(need int) error {
	if r.off == r.end {
		r.off, r.end = 0, 0
	} else if len(r.buf)-r.off < need {
		r.end = copy(r.buf, r.buf[r.off:r.end])
		r.off = 0
	}
	for empty := 0; r.end-r.off < need; {
		k, err := r.src.Read(r.buf[r.end:])
		if k < 0 || k > len(r.buf)-r.end {
			return errors.New("wire: reader returned an invalid count")
		}
		r.end += k
		if err != nil {
			if r.end-r.off >= need {
				return nil
			}
			return err
		}
		if k > 0 {
			empty = 0
		} else if empty++; empty >= maxEmptyReads {
			return io.ErrNoProgress
		}
	}
	return nil
}

// readLarge reads an n-byte frame body into r.big: first what the buffer
// holds, then straight from the source. The buffer grows with the bytes
// that actually arrive, not with the length the peer claims, so a peer that
// announces a big frame and stalls costs little memory.
func (r *Reader) readLarge(n int) ([]byte, error) {
	buf := r.big[:r.got]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			c := min(max(2*cap(buf), 4*len(r.buf)), n)
			grown := make([]byte, len(buf), c)
			copy(grown, buf)
			buf = grown
			r.big = grown
		}
		end := min(cap(buf), n)
		if r.off < r.end {
			k := copy(buf[len(buf):end], r.buf[r.off:r.end])
			r.off += k
			buf = buf[:len(buf)+k]
			continue
		}
		k, err := io.ReadFull(r.src, buf[len(buf):end])
		buf = buf[:len(buf)+k]
		if err != nil {
			r.got = len(buf)
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
