package requester

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by calls on a closed requester.
	ErrClosed = errors.New("requester: closed")
	// ErrInvalidConfig wraps configuration errors.
	ErrInvalidConfig = errors.New("requester: invalid configuration")
	// ErrInvalidType reports an empty or malformed request type.
	ErrInvalidType = errors.New("requester: invalid request type")
	// ErrTimeout reports a request that got no reply in time: its context's
	// deadline or the requester's timeout passed, while it was held waiting
	// for a responder or in flight. The error also matches
	// context.DeadlineExceeded.
	ErrTimeout = errors.New("requester: timed out")
	// ErrQueueFull reports a request refused because the held-request queue
	// is at its bound (WithMaxPending).
	ErrQueueFull = errors.New("requester: too many held requests")
	// ErrNoHandler reports a request type that no responder handles, while
	// responders (with this requester's environment, key and namespace) exist.
	ErrNoHandler = errors.New("requester: no responder handles this type")
	// ErrResponderLost reports a request whose responder died or whose
	// connection dropped before it answered. The request may or may not have
	// run; it is safe to retry only if it is idempotent (see Idempotent and
	// WithRetry, which do that automatically).
	ErrResponderLost = errors.New("requester: responder lost before replying")
	// ErrReplyTooLarge reports a reply that did not fit the frame limit.
	ErrReplyTooLarge = errors.New("requester: reply too large")
	// ErrDecode reports a reply that does not decode into the reply value.
	ErrDecode = errors.New("requester: cannot decode reply")
)

// RemoteError is an error returned or raised (panic) by a responder's handler.
type RemoteError struct {
	Type      string // the request type
	Responder string // the node that ran the handler
	Code      string // the handler's error code, if it gave one ("panic" for a panic)
	Message   string
}

func (e *RemoteError) Error() string {
	msg := e.Message
	if e.Code != "" {
		msg = e.Code + ": " + msg
	}
	return fmt.Sprintf("requester: %q failed on %s: %s", e.Type, e.Responder, msg)
}

// Retryable reports whether err is worth retrying: the responder was lost
// mid-request, or no reply came in time.
func Retryable(err error) bool {
	return errors.Is(err, ErrResponderLost) || errors.Is(err, ErrTimeout)
}
