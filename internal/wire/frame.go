package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// Version is the protocol version written in every frame.
const Version = 1

// Kind says what a frame is for.
type Kind uint8

// Frame kinds.
const (
	KindHello     Kind = 1  // connection handshake, dialer -> acceptor
	KindHelloAck  Kind = 2  // acceptor -> dialer (Status 0 accepted, StatusRejected rejected)
	KindRequest   Kind = 3  // request to a responder
	KindResponse  Kind = 4  // reply to a request
	KindCancel    Kind = 5  // requester gave up on a request
	KindEvent     Kind = 6  // published event
	KindCredit    Kind = 7  // flow-control credit for events
	KindGoAway    Kind = 8  // sender is closing the connection
	KindGoAwayAck Kind = 9  // reply to KindGoAway: nothing more in flight
	KindPing      Kind = 10 // liveness probe
	KindPong      Kind = 11 // reply to KindPing
)

var kindNames = [...]string{
	KindHello:     "hello",
	KindHelloAck:  "hello-ack",
	KindRequest:   "request",
	KindResponse:  "response",
	KindCancel:    "cancel",
	KindEvent:     "event",
	KindCredit:    "credit",
	KindGoAway:    "goaway",
	KindGoAwayAck: "goaway-ack",
	KindPing:      "ping",
	KindPong:      "pong",
}

// String returns the kind's name, or "Kind(N)" for an unknown kind.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Response statuses (Header.Status).
const (
	StatusOK        uint8 = 0
	StatusError     uint8 = 1 // handler returned an error / panicked
	StatusRejected  uint8 = 2 // not processed (no such component, draining, ...): safe to resend
	StatusNoHandler uint8 = 3 // component exists but has no handler for the type
	StatusTooLarge  uint8 = 4 // reply did not fit the frame limit
)

// DefaultMaxFrame is the default limit on a frame's size in bytes, counting
// everything after the length prefix.
const DefaultMaxFrame = 16 << 20

// MinMaxFrame is the smallest frame limit a node may be configured with.
const MinMaxFrame = 1024

const maxUint32 = 1<<32 - 1

// Errors. Returned errors wrap these (test with errors.Is).
var (
	ErrMalformed     = errors.New("wire: malformed frame")
	ErrFrameTooLarge = errors.New("wire: frame too large")
	ErrVersion       = errors.New("wire: unsupported protocol version")
	ErrClosed        = errors.New("wire: writer closed")
)

// Frame is one decoded frame. Its Header's strings are copies that stay
// valid; its Payload aliases the decoded bytes.
type Frame struct {
	Kind    Kind
	Header  Header
	Payload []byte // aliases the Reader's buffer: valid only until the next call to Next
	// Back is the Writer of the connection the frame came in on, when the
	// reader's owner sets it (the mesh does), so a handler can Hold it.
	Back *Writer
	// Lend, when the reader's owner sets it (the mesh does), lets the
	// handler of a frame run work on the goroutine that read it. If Lend
	// returns true, that goroutine's reading is lent to the handler: should
	// the handler not have returned within a short bound, another goroutine
	// carries on reading the connection, so a slow handler never holds up
	// the frames behind it for longer than that. After a true Lend the
	// handler must not use the Frame again (the next reader may reuse it);
	// it copies what it needs first. Lend returns false when more input is
	// already waiting to be read, or when the reading is lent already.
	Lend func() bool
}

// normMax turns a caller's frame limit into the one in force: DefaultMaxFrame
// for max <= 0, and never more than a length prefix can express.
func normMax(max int) int {
	if max <= 0 {
		return DefaultMaxFrame
	}
	if uint64(max) > maxUint32 {
		return int(min(uint64(maxUint32), uint64(^uint(0)>>1)))
	}
	return max
}

// uvarintLen is the size of binary.AppendUvarint(nil, v).
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// FrameSize returns the encoded size of a frame, counting everything after
// the 4-byte length prefix: the number compared with the frame limit.
func FrameSize(h *Header, payload []byte) int {
	if h == nil {
		h = &zeroHeader
	}
	hs := h.msgpackSize()
	return 2 + uvarintLen(uint64(hs)) + hs + len(payload)
}

var zeroHeader Header

// A header whose strings have shortStrings bytes or fewer in all takes at
// most maxShortHeader bytes: the array's byte, four integers of up to 9
// bytes, the status in 2, and three strings with their 2-byte str8 heads.
const (
	shortStrings   = 80
	maxShortHeader = 1 + 4*9 + 2 + 3*2 + shortStrings // 125, under 128
)

// AppendFrame appends one encoded frame to dst and returns the extended
// buffer. If the frame would exceed max bytes after the length prefix
// (DefaultMaxFrame when max <= 0) it returns dst unchanged and an error
// wrapping ErrFrameTooLarge. A nil h encodes a zero Header.
func AppendFrame(dst []byte, kind Kind, h *Header, payload []byte, max int) ([]byte, error) {
	if h == nil {
		h = &zeroHeader
	}
	max = normMax(max)
	if len(h.Name)+len(h.Code)+len(h.Msg) <= shortStrings && 2+1+maxShortHeader+len(payload) <= max {
		// Nearly every frame: the header is under 128 bytes, so its length
		// takes one byte, and the frame is within the limit whatever the
		// header's exact size. It is written in one pass, and the two
		// lengths are filled in after.
		start := len(dst)
		dst = slices.Grow(dst, 4+2+1+maxShortHeader+len(payload))
		dst = append(dst, 0, 0, 0, 0, Version, byte(kind), 0)
		dst = h.AppendMsgpack(dst)
		hs := len(dst) - start - 7
		dst[start+6] = byte(hs)
		binary.BigEndian.PutUint32(dst[start:], uint32(3+hs+len(payload)))
		return append(dst, payload...), nil
	}
	return appendFrameSized(dst, kind, h, payload, max)
}

// appendFrameSized is AppendFrame for any header: it sizes the header
// first, for its length and the limit.
func appendFrameSized(dst []byte, kind Kind, h *Header, payload []byte, max int) ([]byte, error) {
	hs := h.msgpackSize()
	n := uint64(2+uvarintLen(uint64(hs))) + uint64(hs) + uint64(len(payload))
	if n > uint64(max) {
		return dst, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, max)
	}
	dst = slices.Grow(dst, 4+int(n))
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, Version, byte(kind))
	dst = binary.AppendUvarint(dst, uint64(hs))
	dst = h.AppendMsgpack(dst)
	return append(dst, payload...), nil
}

// Decode parses exactly one frame from the start of b, which holds the whole
// frame including its 4-byte length prefix (bytes after the frame are left
// alone). It copies nothing: the frame's Payload aliases b. It returns the
// frame and the number of bytes it occupies; on error it consumes nothing.
//
// Errors: io.ErrUnexpectedEOF when b is shorter than the frame (or than the
// prefix), ErrFrameTooLarge when the prefix exceeds max (DefaultMaxFrame when
// max <= 0), ErrVersion, ErrMalformed.
func Decode(b []byte, max int) (Frame, int, error) {
	max = normMax(max)
	if len(b) < 4 {
		return Frame{}, 0, io.ErrUnexpectedEOF
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(max) {
		return Frame{}, 0, tooLarge(n, max)
	}
	if uint64(len(b)-4) < uint64(n) {
		return Frame{}, 0, io.ErrUnexpectedEOF
	}
	f, err := parseBody(b[4:4+int(n)], nil)
	if err != nil {
		return Frame{}, 0, err
	}
	return f, 4 + int(n), nil
}

func tooLarge(n uint32, max int) error {
	return fmt.Errorf("%w: length prefix %d, limit %d", ErrFrameTooLarge, n, max)
}

// parseBody decodes the part of a frame after the length prefix. Strings go
// through tab when it is not nil.
func parseBody(body []byte, tab *strTable) (Frame, error) {
	var f Frame
	err := parseBodyInto(&f, body, tab)
	return f, err
}

// parseBodyInto is parseBody into *f, which it overwrites (all of it but
// Back) when it succeeds; on an error f is left unspecified.
func parseBodyInto(f *Frame, body []byte, tab *strTable) error {
	if len(body) == 0 {
		return fmt.Errorf("%w: empty frame", ErrMalformed)
	}
	if body[0] != Version {
		return fmt.Errorf("%w: got %d, want %d", ErrVersion, body[0], Version)
	}
	if len(body) < 3 {
		return fmt.Errorf("%w: frame of %d bytes is too short", ErrMalformed, len(body))
	}
	f.Kind = Kind(body[1])
	var hl uint64
	k := 1
	if c := body[2]; c < 0x80 {
		hl = uint64(c) // a one-byte uvarint: headers under 128 bytes
	} else if hl, k = binary.Uvarint(body[2:]); k <= 0 {
		return fmt.Errorf("%w: bad header length varint", ErrMalformed)
	}
	rest := body[2+k:]
	if hl > uint64(len(rest)) {
		return fmt.Errorf("%w: header length %d beyond the %d bytes left in the frame", ErrMalformed, hl, len(rest))
	}
	if err := f.Header.unmarshal(rest[:hl], tab); err != nil {
		return err
	}
	f.Payload = nil
	if p := rest[hl:]; len(p) > 0 {
		f.Payload = p[:len(p):len(p)]
	}
	return nil
}
