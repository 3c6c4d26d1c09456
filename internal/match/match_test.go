package match

import (
	"errors"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"validate", "validate", true},
		{"validate", "validate.card", false},
		{"*", "validate", true},
		{"*", "a.b", false},
		{"**", "a", true},
		{"**", "a.b.c", true},
		{"payment.*", "payment.completed", true},
		{"payment.*", "payment", false},
		{"payment.*", "payment.card.declined", false},
		{"payment.**", "payment.card.declined", true},
		{"payment.**", "payment.completed", true},
		{"payment.**", "payment", false},
		{"payment.**", "paymentx.a", false},
		{"*.completed", "payment.completed", true},
		{"*.completed", "payment.failed", false},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
		{"a.*.**", "a.b.c.d", true},
		{"a.*.**", "a.b", false},
		{"user.*", "users.x", false},
	}
	for _, c := range cases {
		if got := Match(c.pattern, c.name); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func TestValid(t *testing.T) {
	for _, p := range []string{"a", "a.b", "*", "**", "a.*", "a.**", "*.b.**"} {
		if err := ValidPattern(p); err != nil {
			t.Errorf("ValidPattern(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", ".", "a.", ".a", "a..b", "**.a", "a*", "a.b*", "a.**.b"} {
		if err := ValidPattern(p); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidPattern(%q) = %v, want ErrInvalid", p, err)
		}
	}
	if err := ValidName("a.*"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ValidName with wildcard = %v", err)
	}
	if err := ValidName("payment.completed"); err != nil {
		t.Errorf("ValidName = %v", err)
	}
}

// ValidName's one-pass path agrees with the general check on every
// string of up to five bytes from an alphabet of its special cases, and at
// the length bound.
func TestValidNameFastPathAgrees(t *testing.T) {
	alphabet := []byte{'a', '.', '*', 'b'}
	var walk func(prefix []byte)
	n := 0
	walk = func(prefix []byte) {
		s := string(prefix)
		got, want := ValidName(s), check(s, false)
		if (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
			t.Fatalf("ValidName(%q) = %v, the general check says %v", s, got, want)
		}
		n++
		if len(prefix) == 5 {
			return
		}
		for _, c := range alphabet {
			walk(append(prefix, c))
		}
	}
	walk(nil)
	for _, s := range []string{strings.Repeat("a", MaxLen), strings.Repeat("a", MaxLen+1)} {
		if got, want := ValidName(s), check(s, false); (got == nil) != (want == nil) {
			t.Fatalf("ValidName of %d bytes = %v, the general check says %v", len(s), got, want)
		}
	}
	if n < 1000 {
		t.Fatalf("only %d strings checked", n)
	}
}

func BenchmarkValidName(b *testing.B) {
	for b.Loop() {
		if ValidName("payment.card.validate") != nil {
			b.Fatal("invalid")
		}
	}
}

func TestMatchNoAlloc(t *testing.T) {
	n := testing.AllocsPerRun(100, func() { Match("a.*.**", "a.b.c.d") })
	if n != 0 {
		t.Fatalf("Match allocates %v times", n)
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("a.*.**", "a.b.c")
	f.Add("**", "x")
	f.Fuzz(func(t *testing.T, p, n string) {
		if ValidPattern(p) != nil || ValidName(n) != nil {
			return
		}
		got := Match(p, n)
		if !IsWild(p) && got != (p == n) {
			t.Fatalf("literal mismatch")
		}
		if p == "**" && !got {
			t.Fatalf("** must match %q", n)
		}
	})
}
