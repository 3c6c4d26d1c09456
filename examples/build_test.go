package examples

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// The example services, as named by their directories, their binaries and
// the commands the container files run.
var serviceNames = []string{"payment-service", "validation-service", "payment-monitor"}

// helperMain, when set (see e2e_test.go), runs the test binary as a helper
// process instead of the tests when the environment asks for one.
var helperMain func() (code int, isHelper bool)

func TestMain(m *testing.M) {
	if helperMain != nil {
		if code, ok := helperMain(); ok {
			os.Exit(code)
		}
	}
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// built holds the services, compiled once per test binary by buildServices.
var built struct {
	once sync.Once
	dir  string
	took time.Duration
	err  error
}

// buildServices compiles the three services exactly as the Dockerfile's
// build stage does (see dockerfileBuild), once, and returns the directory
// holding the binaries. Later calls reuse them.
func buildServices(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		start := time.Now()
		built.dir, built.err = buildLikeDockerfile()
		built.took = time.Since(start)
	})
	if built.err != nil {
		t.Fatalf("building the services as the Dockerfile does: %v", built.err)
	}
	return built.dir
}

func buildLikeDockerfile() (string, error) {
	env, args, err := dockerfileBuild(filepath.Join(moduleRoot(), "Dockerfile"))
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "warren-examples-")
	if err != nil {
		return "", err
	}
	for i := range args {
		if args[i] == "-o" && i+1 < len(args) {
			args[i+1] = dir + string(filepath.Separator)
		}
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = moduleRoot()
	// The image is linux; the Docker build context has no .git (see
	// .dockerignore), so no VCS stamping either.
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env, "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir, nil
}

// moduleRoot is the repository root, the Docker build context.
func moduleRoot() string {
	wd, err := os.Getwd() // the package directory, examples/
	if err != nil {
		panic(err)
	}
	return filepath.Dir(wd)
}

// dockerfileBuild finds the `go build` of the Dockerfile's RUN instructions
// and returns its variable assignments (CGO_ENABLED=0) and its arguments
// after "go" (build, flags, -o dir, packages).
func dockerfileBuild(path string) (env, args []string, err error) {
	instrs, err := dockerInstructions(path)
	if err != nil {
		return nil, nil, err
	}
	for _, in := range instrs {
		if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
			continue
		}
		words, err := shellWords(in.args)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: line %d: %v", path, in.line, err)
		}
		i := 0
		for ; i < len(words) && strings.HasPrefix(words[i], "--"); i++ { // RUN --mount=...
		}
		for ; i < len(words) && words[i] != "go" && strings.Contains(words[i], "="); i++ {
			env = append(env, words[i])
		}
		if i+1 >= len(words) || words[i] != "go" || words[i+1] != "build" {
			return nil, nil, fmt.Errorf("%s: line %d: want [VAR=value...] go build ..., got %q", path, in.line, in.args)
		}
		return env, words[i+1:], nil
	}
	return nil, nil, fmt.Errorf("%s: no RUN ... go build", path)
}

type dockerInstr struct {
	line int
	cmd  string // upper case: FROM, RUN, COPY...
	args string
}

// dockerInstructions reads a Dockerfile's instructions, continuation lines
// joined, comments dropped.
func dockerInstructions(path string) ([]dockerInstr, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []dockerInstr
	var cur strings.Builder
	start, n := 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, dockerInstr{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	return out, sc.Err()
}

// shellWords splits a command line as sh does for simple words: blanks
// separate, single and double quotes group. Other shell syntax is refused.
func shellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case c == '\'' || c == '"':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated %c quote", c)
			}
			w.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case strings.IndexByte("|&;<>()$`\\", c) >= 0:
			return nil, fmt.Errorf("shell syntax %q is not supported here", c)
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}
