// Package wire is warren's data-plane frame codec: every message that crosses
// a connection between two nodes (and between components of one process) is
// one frame.
//
// # Frame format
//
//	uint32 big-endian  N = length of everything after these 4 bytes
//	byte               protocol version (Version = 1)
//	byte               kind (KindHello ... KindPong)
//	uvarint            H = header length
//	H bytes            header, msgpack encoded (see below)
//	N-2-len(uvarint)-H payload bytes (opaque)
//
// N is limited by the max argument of AppendFrame, Decode, NewReader and
// NewWriter (DefaultMaxFrame when max <= 0); a receiver rejects a larger
// length prefix before reading or allocating anything.
//
// # Header
//
// The header is a msgpack array of exactly 8 elements, in the order of the
// fields of Header:
//
//	[To uint, From uint, Seq uint, Name str, Deadline int, Status uint, Code str, Msg str]
//
// Header.AppendMsgpack writes each element in its smallest msgpack encoding
// (positive fixint or uint8..uint64 for unsigned fields and for a
// non-negative Deadline, negative fixint or int8..int64 for a negative one,
// fixstr or str8..str32 for strings). The decoder
// is lenient in what it accepts, for compatibility with other msgpack
// writers and with later versions of this protocol: any integer encoding
// whose value fits the field, str or bin for strings, nil for a zero value,
// and arrays longer than 8 whose extra elements are of simple types (nil,
// bool, numbers, str, bin, ext), which are skipped. Everything else is
// ErrMalformed.
//
// # Performance
//
// Encoding appends to a caller's buffer and never allocates once the buffer
// has grown. Reader serves frames of up to 64 KiB straight from its own
// buffer and larger ones from one reusable slice, so reading allocates only
// for header strings it has not seen recently (short strings are interned
// per Reader). Writer batches concurrent frames into one Write call with
// flat combining: no goroutine hand-off for a lone frame, one syscall for
// many frames under load. Writer.Hold and Release let a goroutine woken to
// answer a frame say that it will write soon, so the answers to a burst go
// out in one write, by a flusher the last Release starts.
package wire
