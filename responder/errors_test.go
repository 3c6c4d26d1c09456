package responder

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

type coded struct{}

func (coded) Error() string { return "quota exceeded" }
func (coded) Code() string  { return "quota" }

func TestErrorCode(t *testing.T) {
	for _, tc := range []struct {
		err       error
		code, msg string
	}{
		{Errorf("invalid_card", "card %q", "12"), "invalid_card", `card "12"`},
		{fmt.Errorf("wrapped: %w", &Error{Code: "c", Message: "m"}), "c", "m"},
		{coded{}, "quota", "quota exceeded"},
		{errors.New("plain"), "", "plain"},
	} {
		code, msg := errorCode(tc.err)
		if code != tc.code || msg != tc.msg {
			t.Errorf("errorCode(%v) = %q, %q; want %q, %q", tc.err, code, msg, tc.code, tc.msg)
		}
	}
}

func TestOnRejectsBadPatterns(t *testing.T) {
	r := &Responder{}
	for _, p := range []string{"", "a..b", "**.x", "a*"} {
		func() {
			defer func() {
				if e, ok := recover().(error); !ok || !errors.Is(e, ErrInvalidType) {
					t.Errorf("On(%q) did not panic with ErrInvalidType", p)
				}
			}()
			r.On(p, func(_ context.Context, _ *Request) (any, error) { return nil, nil })
		}()
	}
}
