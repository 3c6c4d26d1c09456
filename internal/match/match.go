// Package match implements warren's dot-separated name patterns, shared by
// request types and pub/sub topics.
//
// A name is a non-empty sequence of non-empty segments separated by dots,
// such as "payment.completed". In a pattern, the segment "*" matches exactly
// one segment and a final "**" matches one or more trailing segments. So
// "payment.*" matches "payment.completed" but not "payment" or
// "payment.card.declined", while "payment.**" matches both of the latter two
// kinds of names with at least one segment after "payment". The pattern "**"
// alone matches every name.
package match

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid reports a malformed name or pattern.
var ErrInvalid = errors.New("match: invalid pattern")

// MaxLen bounds names and patterns, in bytes.
const MaxLen = 1024

// ValidPattern reports whether p is a well-formed pattern: non-empty segments,
// "**" only as the last segment, and no wildcard characters inside a segment.
func ValidPattern(p string) error {
	return check(p, true)
}

// ValidName reports whether s is a well-formed concrete name (no wildcards).
func ValidName(s string) error {
	// One pass for the common, valid case (it runs on every request); the
	// general check gives the precise error.
	if n := len(s); n > 0 && n <= MaxLen && s[0] != '.' && s[n-1] != '.' {
		i := 0
		for ; i < n; i++ {
			// s[n-1] is not a dot, so a dot has a byte after it.
			if c := s[i]; c == '*' || c == '.' && s[i+1] == '.' {
				break
			}
		}
		if i == n {
			return nil
		}
	}
	return check(s, false)
}

func check(p string, wild bool) error {
	if p == "" {
		return fmt.Errorf("%w: empty", ErrInvalid)
	}
	if len(p) > MaxLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxLen)
	}
	rest := p
	for {
		seg, tail, more := strings.Cut(rest, ".")
		switch {
		case seg == "":
			return fmt.Errorf("%w: %q has an empty segment", ErrInvalid, p)
		case seg == "*" || seg == "**":
			if !wild {
				return fmt.Errorf("%w: %q: wildcards are not allowed in a name", ErrInvalid, p)
			}
			if seg == "**" && more {
				return fmt.Errorf("%w: %q: \"**\" must be the last segment", ErrInvalid, p)
			}
		case strings.ContainsRune(seg, '*'):
			return fmt.Errorf("%w: %q: '*' must be a whole segment", ErrInvalid, p)
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// IsWild reports whether p contains a wildcard segment.
func IsWild(p string) bool { return strings.Contains(p, "*") }

// Match reports whether name matches pattern. Both are assumed valid; Match
// never allocates.
func Match(pattern, name string) bool {
	if !IsWild(pattern) {
		return pattern == name
	}
	p, n := pattern, name
	for {
		pseg, prest, pmore := strings.Cut(p, ".")
		if pseg == "**" {
			return n != ""
		}
		if n == "" {
			return false
		}
		nseg, nrest, nmore := strings.Cut(n, ".")
		if pseg != "*" && pseg != nseg {
			return false
		}
		if !pmore || !nmore {
			return pmore == nmore
		}
		p, n = prest, nrest
	}
}

// Any reports whether name matches at least one of patterns.
func Any(patterns []string, name string) bool {
	for _, p := range patterns {
		if Match(p, name) {
			return true
		}
	}
	return false
}
