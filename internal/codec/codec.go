// Package codec encodes warren payloads with msgpack. Struct fields use
// their msgpack tags, or their json tags when there is none, so types
// written for encoding/json work unchanged.
package codec

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// ErrDecode wraps every payload decoding error.
var ErrDecode = errors.New("codec: cannot decode payload")

// Buffer is a pooled encoding buffer; call Release when done with Bytes.
type Buffer struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

var encPool = sync.Pool{New: func() any {
	b := &Buffer{}
	b.enc = msgpack.NewEncoder(&b.buf)
	b.enc.SetCustomStructTag("json")
	b.enc.UseCompactInts(true)
	return b
}}

// Encode encodes v into a pooled buffer. A nil v encodes to no bytes. A
// value that Unmarshal would refuse (nested deeper than PayloadLimits
// allows) fails with an error wrapping ErrLimits.
func Encode(v any) (*Buffer, error) {
	b := encPool.Get().(*Buffer)
	b.buf.Reset()
	if v == nil {
		return b, nil
	}
	if err := b.enc.Encode(v); err != nil {
		b.Release()
		return nil, fmt.Errorf("codec: cannot encode %T: %w", v, err)
	}
	// What a receiver would refuse fails here, where the sender learns of
	// it; timestamps are put in a form the receiver's check accepts.
	out, err := canonical(b.buf.Bytes(), PayloadLimits)
	if err != nil {
		b.Release()
		return nil, fmt.Errorf("codec: cannot encode %T: %w", v, err)
	}
	if len(out) != b.buf.Len() {
		b.buf.Reset()
		b.buf.Write(out)
	}
	return b, nil
}

// Bytes returns the encoding; valid until Release.
func (b *Buffer) Bytes() []byte { return b.buf.Bytes() }

// Release returns the buffer to the pool.
func (b *Buffer) Release() {
	if b.buf.Cap() > 1<<20 {
		return // let big buffers go
	}
	encPool.Put(b)
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
