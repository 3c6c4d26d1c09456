package examples

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// No YAML library is a dependency of the module, and the examples must not
// add one; compose.yaml and kubernetes.yaml are checked with this small
// parser of the YAML subset they use: block mappings and sequences, plain
// and quoted scalars, flow sequences of scalars, comments and "---"
// separators. Anything else (anchors, block scalars, tabs, inconsistent
// indentation, duplicate keys) is an error, so the files stay in the subset
// every YAML parser reads the same way.

var errYAML = errors.New("yaml")

type yamlLine struct {
	num    int // 1-based
	indent int
	text   string // without indentation and comment
}

type yamlParser struct {
	lines []yamlLine
	pos   int
}

// parseYAML returns the documents of src: map[string]any, []any, string or nil.
func parseYAML(src string) ([]any, error) {
	var docs []any
	var cur []yamlLine
	flush := func() error {
		if len(cur) == 0 {
			return nil
		}
		p := &yamlParser{lines: cur}
		v, err := p.node(cur[0].indent)
		if err != nil {
			return err
		}
		if p.pos < len(p.lines) {
			return p.errorf("unexpected content")
		}
		docs = append(docs, v)
		cur = nil
		return nil
	}
	for i, raw := range strings.Split(src, "\n") {
		raw = strings.TrimRight(raw, " \r")
		body := strings.TrimLeft(raw, " ")
		if strings.HasPrefix(body, "\t") {
			return nil, fmt.Errorf("%w: line %d: tab in indentation", errYAML, i+1)
		}
		text, err := stripComment(body)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", errYAML, i+1, err)
		}
		if text == "" {
			continue
		}
		if text == "---" && len(raw) == 3 {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		cur = append(cur, yamlLine{num: i + 1, indent: len(raw) - len(body), text: text})
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return docs, nil
}

// stripComment removes a comment (a '#' at the start or after a space,
// outside quotes) and trailing spaces.
func stripComment(s string) (string, error) {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || s[i-1] == ' '):
			return strings.TrimRight(s[:i], " "), nil
		}
	}
	if quote != 0 {
		return "", fmt.Errorf("unterminated %c quote", quote)
	}
	return s, nil
}

func (p *yamlParser) errorf(format string, args ...any) error {
	line := 0
	if p.pos < len(p.lines) {
		line = p.lines[p.pos].num
	} else if len(p.lines) > 0 {
		line = p.lines[len(p.lines)-1].num
	}
	return fmt.Errorf("%w: line %d: %s", errYAML, line, fmt.Sprintf(format, args...))
}

func isSeqItem(text string) bool { return text == "-" || strings.HasPrefix(text, "- ") }

// node parses the block that starts at the current line, indented by indent.
func (p *yamlParser) node(indent int) (any, error) {
	if p.pos >= len(p.lines) || p.lines[p.pos].indent != indent {
		return nil, p.errorf("expected a block indented by %d", indent)
	}
	if isSeqItem(p.lines[p.pos].text) {
		return p.seq(indent)
	}
	return p.mapping(indent)
}

// child parses the value of a "key:" or "-" with nothing after it: a deeper
// block, a sequence at the same indentation (for a key), or nothing (null).
func (p *yamlParser) child(indent int, seqOK bool) (any, error) {
	if p.pos >= len(p.lines) {
		return nil, nil
	}
	next := p.lines[p.pos]
	if next.indent > indent || (seqOK && next.indent == indent && isSeqItem(next.text)) {
		return p.node(next.indent)
	}
	return nil, nil
}

func (p *yamlParser) mapping(indent int) (map[string]any, error) {
	m := map[string]any{}
	for p.pos < len(p.lines) {
		l := p.lines[p.pos]
		if l.indent < indent {
			break
		}
		if l.indent > indent {
			return nil, p.errorf("unexpected indentation")
		}
		if isSeqItem(l.text) {
			return nil, p.errorf("a sequence item where a mapping key was expected")
		}
		key, rest, ok, err := splitKey(l.text)
		if err != nil || !ok {
			return nil, p.errorf("want \"key: value\", got %q %v", l.text, err)
		}
		if _, dup := m[key]; dup {
			return nil, p.errorf("duplicate key %q", key)
		}
		p.pos++
		if rest == "" {
			if m[key], err = p.child(indent, true); err != nil {
				return nil, err
			}
			continue
		}
		if m[key], err = scalar(rest); err != nil {
			p.pos--
			return nil, p.errorf("%v", err)
		}
	}
	return m, nil
}

func (p *yamlParser) seq(indent int) ([]any, error) {
	var s []any
	for p.pos < len(p.lines) {
		l := p.lines[p.pos]
		if l.indent < indent || (l.indent == indent && !isSeqItem(l.text)) {
			break
		}
		if l.indent > indent {
			return nil, p.errorf("unexpected indentation")
		}
		rest := strings.TrimLeft(strings.TrimPrefix(l.text, "-"), " ")
		var (
			v   any
			err error
		)
		switch _, _, isKey, kerr := splitKey(rest); {
		case rest == "":
			p.pos++
			v, err = p.child(indent, false)
		case kerr == nil && isKey:
			// "- key: value": a mapping whose keys line up after "- ".
			p.lines[p.pos] = yamlLine{num: l.num, indent: indent + len(l.text) - len(rest), text: rest}
			v, err = p.mapping(p.lines[p.pos].indent)
		default:
			v, err = scalar(rest)
			if err != nil {
				err = p.errorf("%v", err)
			}
			p.pos++
		}
		if err != nil {
			return nil, err
		}
		s = append(s, v)
	}
	return s, nil
}

// splitKey splits "key: value" or "key:"; ok is false for a plain scalar.
func splitKey(s string) (key, rest string, ok bool, err error) {
	if s == "" || s[0] == '[' || s[0] == '{' {
		return "", "", false, nil
	}
	var after string
	if s[0] == '"' || s[0] == '\'' {
		end := closingQuote(s)
		if end < 0 {
			return "", "", false, fmt.Errorf("unterminated quote")
		}
		if key, err = unquote(s[:end+1]); err != nil {
			return "", "", false, err
		}
		after = s[end+1:]
		if !strings.HasPrefix(after, ":") {
			return "", "", false, nil
		}
	} else {
		i := strings.Index(s, ": ")
		switch {
		case i >= 0:
			key, after = s[:i], s[i:]
		case strings.HasSuffix(s, ":"):
			key, after = s[:len(s)-1], ":"
		default:
			return "", "", false, nil
		}
	}
	if after != ":" && !strings.HasPrefix(after, ": ") {
		return "", "", false, nil
	}
	return key, strings.TrimSpace(after[1:]), true, nil
}

func closingQuote(s string) int {
	q := s[0]
	for i := 1; i < len(s); i++ {
		switch {
		case q == '"' && s[i] == '\\':
			i++
		case s[i] == q && q == '\'' && i+1 < len(s) && s[i+1] == '\'':
			i++ // '' is an escaped quote
		case s[i] == q:
			return i
		}
	}
	return -1
}

func unquote(s string) (string, error) {
	if s[0] == '\'' {
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'"), nil
	}
	return strconv.Unquote(s)
}

// scalar parses a value on one line: quoted or plain text, or a flow
// sequence of scalars.
func scalar(s string) (any, error) {
	switch {
	case s[0] == '&' || s[0] == '*' || s[0] == '|' || s[0] == '>' || s[0] == '!':
		return nil, fmt.Errorf("%q: anchors, aliases, tags and block scalars are outside the supported subset", s)
	case s[0] == '"' || s[0] == '\'':
		if end := closingQuote(s); end != len(s)-1 {
			return nil, fmt.Errorf("bad quoted scalar %s", s)
		}
		return unquote(s)
	case s == "{}":
		return map[string]any{}, nil
	case s[0] == '{':
		return nil, fmt.Errorf("%q: flow mappings are outside the supported subset", s)
	case s[0] == '[':
		if !strings.HasSuffix(s, "]") {
			return nil, fmt.Errorf("unterminated flow sequence %s", s)
		}
		out := []any{}
		inner := strings.TrimSpace(s[1 : len(s)-1])
		for inner != "" {
			item := inner
			if inner[0] == '"' || inner[0] == '\'' {
				end := closingQuote(inner)
				if end < 0 {
					return nil, fmt.Errorf("unterminated quote in %s", s)
				}
				item = inner[:end+1]
			} else if i := strings.IndexByte(inner, ','); i >= 0 {
				item = inner[:i]
			}
			v, err := scalar(strings.TrimSpace(item))
			if err != nil {
				return nil, err
			}
			out = append(out, v)
			inner = strings.TrimSpace(inner[len(item):])
			if inner != "" && !strings.HasPrefix(inner, ",") {
				return nil, fmt.Errorf("want ',' between items in %s", s)
			}
			inner = strings.TrimSpace(strings.TrimPrefix(inner, ","))
		}
		return out, nil
	case strings.HasPrefix(s, "- ") || strings.Contains(s, ": "):
		return nil, fmt.Errorf("%q: a plain scalar cannot hold \": \" or start with \"- \" (quote it)", s)
	}
	return s, nil
}

// yget walks v along path (string keys, int indexes); nil when absent.
func yget(v any, path ...any) any {
	for _, step := range path {
		switch k := step.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			s, ok := v.([]any)
			if !ok || k < 0 || k >= len(s) {
				return nil
			}
			v = s[k]
		}
	}
	return v
}

func TestParseYAML(t *testing.T) {
	good := `# a comment
a: 1
b:
  c: "x: y" # trailing comment
  d: ['p', "q", r]
list:
- one
- k: v
  k2: v2
-
  nested: yes
---
second: {}
`
	docs, err := parseYAML(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 {
		t.Fatalf("%d documents, want 2", len(docs))
	}
	checks := map[string]struct {
		got, want any
	}{
		"a":        {yget(docs[0], "a"), "1"},
		"b.c":      {yget(docs[0], "b", "c"), "x: y"},
		"b.d[1]":   {yget(docs[0], "b", "d", 1), "q"},
		"b.d[2]":   {yget(docs[0], "b", "d", 2), "r"},
		"list[0]":  {yget(docs[0], "list", 0), "one"},
		"list[1]":  {yget(docs[0], "list", 1, "k2"), "v2"},
		"list[2]":  {yget(docs[0], "list", 2, "nested"), "yes"},
		"2nd doc":  {len(yget(docs[1], "second").(map[string]any)), 0},
		"no thing": {yget(docs[0], "nothing"), nil},
	}
	for name, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#v, want %#v", name, c.got, c.want)
		}
	}
	for _, bad := range []string{
		"a: 1\na: 2\n",        // duplicate key
		"a:\n\tb: 1\n",        // tab
		"a:\n  b: 1\n c: 2\n", // inconsistent indentation
		"a: 1\n  b: 2\n",      // deeper line after a scalar
		"a: 'open\n",          // unterminated quote
		"a: &anchor x\n",      // outside the subset
		"a: |\n  text\n",      // block scalar
		"- a\nb: 1\n",         // sequence then mapping at one level
		"a: b: c\n",           // ": " in a plain scalar
		"key without colon\n", // not a mapping
	} {
		if _, err := parseYAML(bad); err == nil {
			t.Errorf("parseYAML(%q) accepted it", bad)
		}
	}
}
