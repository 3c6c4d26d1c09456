// Package codec encodes warren payloads with msgpack. Struct fields use
// their msgpack tags, or their json tags when there is none, so types
// written for encoding/json work unchanged.
package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// ErrDecode wraps every payload decoding error.
var ErrDecode = errors.New("codec: cannot decode payload")

// Buffer is an encoding buffer: a pooled one from Encode (call Release
// when done with Bytes), or one of its owner's from NewBuffer, for a
// goroutine or object that encodes again and again (call Trim instead).
type Buffer struct {
	buf sink
	enc *msgpack.Encoder
}

// sink is the Buffer's bytes, and the io.Writer (with the byte and string
// writers msgpack looks for) its encoder writes to. The []byte paths
// append to it directly, with none of bytes.Buffer's bookkeeping.
type sink struct{ b []byte }

func (s *sink) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *sink) WriteByte(c byte) error {
	s.b = append(s.b, c)
	return nil
}

func (s *sink) WriteString(v string) (int, error) {
	s.b = append(s.b, v...)
	return len(v), nil
}

// bigBuffer is the capacity past which a pooled buffer is not put back,
// and keepBuffer the one past which Trim lets an owned buffer's memory go
// (an owner may keep its buffer for long: a responder's idle worker).
const (
	bigBuffer  = 1 << 20
	keepBuffer = 256 << 10
)

var encPool = sync.Pool{New: func() any { return NewBuffer() }}

// NewBuffer returns an encoding buffer that is not pooled.
func NewBuffer() *Buffer {
	b := &Buffer{}
	b.enc = msgpack.NewEncoder(&b.buf)
	b.enc.SetCustomStructTag("json")
	b.enc.UseCompactInts(true)
	return b
}

// Encode encodes v into a pooled buffer. A nil v encodes to no bytes. A
// value that Unmarshal would refuse (nested deeper than PayloadLimits
// allows) fails with an error wrapping ErrLimits.
func Encode(v any) (*Buffer, error) {
	b := encPool.Get().(*Buffer)
	if err := b.Encode(v); err != nil {
		b.Release()
		return nil, err
	}
	return b, nil
}

// Encode encodes v into b, in place of what b held, as the package's
// Encode does.
func (b *Buffer) Encode(v any) error {
	b.buf.b = b.buf.b[:0]
	if v == nil {
		return nil
	}
	if p, ok := v.([]byte); ok && p != nil {
		// Raw bytes (an encoding of the caller's own, often) are written as
		// msgpack's encoder writes them, without its reflection and with
		// nothing for canonical to rewrite or refuse.
		b.buf.b = appendBin(b.buf.b, p)
		return nil
	}
	if err := b.enc.Encode(v); err != nil {
		b.buf.b = b.buf.b[:0]
		return fmt.Errorf("codec: cannot encode %T: %w", v, err)
	}
	// What a receiver would refuse fails here, where the sender learns of
	// it; timestamps are put in a form the receiver's check accepts.
	out, err := canonical(b.buf.b, PayloadLimits)
	if err != nil {
		b.buf.b = b.buf.b[:0]
		return fmt.Errorf("codec: cannot encode %T: %w", v, err)
	}
	if len(out) != len(b.buf.b) {
		b.buf.b = append(b.buf.b[:0], out...)
	}
	return nil
}

// EncodeBytes is Encode of a non-nil []byte, which it writes with no
// interface (and so no allocation) in the way.
func (b *Buffer) EncodeBytes(p []byte) {
	b.buf.b = appendBin(b.buf.b[:0], p)
}

// Bytes returns the encoding; valid until Release, Trim or the next Encode.
func (b *Buffer) Bytes() []byte { return b.buf.b }

// Release returns a buffer from Encode to the pool.
func (b *Buffer) Release() {
	if cap(b.buf.b) > bigBuffer {
		return // let big buffers go
	}
	encPool.Put(b)
}

// Trim empties a buffer from NewBuffer, and lets its memory go if a value
// made it grow past 256 KiB.
func (b *Buffer) Trim() {
	if cap(b.buf.b) > keepBuffer {
		b.buf.b = nil
		return
	}
	b.buf.b = b.buf.b[:0]
}

// Marshal encodes v into a new slice owned by the caller.
func Marshal(v any) ([]byte, error) {
	b, err := Encode(v)
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(b.Bytes())
	b.Release()
	return out, nil
}

type decoder struct {
	r   bytes.Reader
	dec *msgpack.Decoder
}

var decPool = sync.Pool{New: func() any {
	d := &decoder{}
	d.dec = msgpack.NewDecoder(&d.r)
	d.dec.SetCustomStructTag("json")
	return d
}}

// Unmarshal decodes data into v, which must be a non-nil pointer. Empty
// data leaves v unchanged. data is checked first (see Check, with
// PayloadLimits): bytes that claim more than they hold fail with an error
// wrapping both ErrDecode and ErrLimits, without allocating.
func Unmarshal(data []byte, v any) error {
	if len(data) == 0 {
		return nil
	}
	if p, ok := v.(*[]byte); ok && p != nil && decodeBin(data, p) {
		return nil
	}
	// Payloads come from the network: refuse, before the decoder sees
	// them, those whose claimed sizes would make it allocate without bound.
	if err := Check(data, PayloadLimits); err != nil {
		return fmt.Errorf("%w into %T: %w", ErrDecode, v, err)
	}
	d := decPool.Get().(*decoder)
	d.r.Reset(data)
	d.dec.Reset(&d.r)
	d.dec.SetCustomStructTag("json")
	err := d.dec.Decode(v)
	d.r.Reset(nil)
	decPool.Put(d)
	if err != nil {
		return fmt.Errorf("%w into %T: %w", ErrDecode, v, err)
	}
	return nil
}

// UnmarshalBytes is Unmarshal into a []byte, and does not keep p (it does
// not escape): a payload that is one msgpack bin is decoded in place, any
// other goes msgpack's way through a copy of *p.
func UnmarshalBytes(data []byte, p *[]byte) error {
	if len(data) == 0 || decodeBin(data, p) {
		return nil
	}
	v := new([]byte)
	*v = *p
	err := Unmarshal(data, v)
	*p = *v
	return err
}

// appendBin appends p as a msgpack bin, byte for byte as msgpack's encoder
// writes it (bin 8, 16 or 32, whichever is shortest).
func appendBin(dst, p []byte) []byte {
	n := len(p)
	switch {
	case n < 1<<8:
		dst = append(dst, 0xc4, byte(n))
	case n < 1<<16:
		dst = append(dst, 0xc5, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0xc6, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, p...)
}

// decodeBin decodes data into *p, as msgpack's decoder would, when data is
// exactly one msgpack bin; it reports false (leaving *p alone) for anything
// else, which then goes the general way.
func decodeBin(data []byte, p *[]byte) bool {
	var h, n int
	switch {
	case data[0] == 0xc4 && len(data) >= 2:
		h, n = 2, int(data[1])
	case data[0] == 0xc5 && len(data) >= 3:
		h, n = 3, int(binary.BigEndian.Uint16(data[1:]))
	case data[0] == 0xc6 && len(data) >= 5:
		h, n = 5, int(binary.BigEndian.Uint32(data[1:]))
	default:
		return false
	}
	if len(data)-h != n {
		return false // truncated, or more than one value: as the decoder says
	}
	// Like msgpack's decoder: the slice's own array is reused when it is
	// large enough, and a nil slice gets a new one (empty, not nil, for
	// no bytes).
	switch {
	case *p != nil && n <= cap(*p):
		*p = (*p)[:n]
	case n == 0:
		*p = []byte{}
	default:
		*p = make([]byte, n)
	}
	copy(*p, data[h:])
	return true
}
