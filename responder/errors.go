package responder

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by calls on a closed responder.
	ErrClosed = errors.New("responder: closed")
	// ErrInvalidConfig wraps configuration errors.
	ErrInvalidConfig = errors.New("responder: invalid configuration")
	// ErrInvalidType reports a malformed request type or pattern given to On.
	ErrInvalidType = errors.New("responder: invalid request type")
	// ErrDecode reports a request payload that does not decode into the
	// value given to Request.Decode.
	ErrDecode = errors.New("responder: cannot decode request")
)

// Error is an error a handler returns to give the caller a machine-readable
// code along with the message. Any other error reaches the caller with its
// message only. The caller sees it as a *requester.RemoteError.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return e.Message
	}
	return e.Code + ": " + e.Message
}

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// errorCode extracts a code from err: an *Error's, or a Code() method's.
func errorCode(err error) (code, msg string) {
	var e *Error
	if errors.As(err, &e) {
		return e.Code, e.Message
	}
	var c interface{ Code() string }
	if errors.As(err, &c) {
		return c.Code(), err.Error()
	}
	return "", err.Error()
}
