package examples

import (
	"bytes"
	"debug/elf"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// There is no Docker engine where these tests run. They build the services
// exactly as the Dockerfile's build stage does and check that the binaries
// are static (they run on distroless/static), and they check the structure
// of the Dockerfile, .dockerignore, compose.yaml and deploy/kubernetes.yaml.

func TestDockerfileBuildsStaticBinaries(t *testing.T) {
	env, args, err := dockerfileBuild(filepath.Join(moduleRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(env, "CGO_ENABLED=0") {
		t.Errorf("the Dockerfile's go build runs with %q, want CGO_ENABLED=0", env)
	}
	for _, flag := range []string{"-trimpath", "-ldflags=-s -w", "-o"} {
		if !slices.Contains(args, flag) {
			t.Errorf("the Dockerfile's go build %q lacks %q", args, flag)
		}
	}
	for _, name := range serviceNames {
		if !slices.Contains(args, "./examples/"+name) {
			t.Errorf("the Dockerfile does not build ./examples/%s", name)
		}
	}

	dir := buildServices(t)
	t.Logf("built the services as the Dockerfile does in %s", built.took.Round(1e6))
	for _, name := range serviceNames {
		path := filepath.Join(dir, name)
		f, err := elf.Open(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has a program interpreter (PT_INTERP): it is dynamically linked", name)
			}
			if p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s has a dynamic section (PT_DYNAMIC)", name)
			}
		}
		if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
			t.Errorf("%s needs shared libraries %q (err %v)", name, libs, err)
		}
		for _, sec := range []string{".symtab", ".debug_info", ".zdebug_info"} {
			if f.Section(sec) != nil {
				t.Errorf("%s has section %s: -ldflags='-s -w' should strip it", name, sec)
			}
		}
		f.Close()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(moduleRoot()+string(filepath.Separator))) {
			t.Errorf("%s contains the build directory %s: -trimpath should remove it", name, moduleRoot())
		}
		t.Logf("%s: static, stripped, %.1f MB", name, float64(len(b))/(1<<20))
	}
}

func TestDockerfileFinalStage(t *testing.T) {
	instrs, err := dockerInstructions(filepath.Join(moduleRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	last := -1
	for i, in := range instrs {
		if in.cmd == "FROM" {
			last = i
		}
	}
	if last < 1 {
		t.Fatalf("want a multi-stage Dockerfile, found %d FROM", last+1)
	}
	base := strings.Fields(instrs[last].args)[0]
	if base != "scratch" && !strings.HasPrefix(base, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %s: want scratch or gcr.io/distroless/static (the binaries are static)", base)
	}
	var copied, cmd bool
	for _, in := range instrs[last+1:] {
		switch in.cmd {
		case "COPY":
			copied = copied || strings.HasPrefix(in.args, "--from=build ")
		case "CMD", "ENTRYPOINT":
			for _, name := range serviceNames {
				cmd = cmd || strings.Contains(in.args, `"`+name+`"`)
			}
		}
	}
	if !copied || !cmd {
		t.Errorf("final stage: COPY --from=build %v, a service as CMD %v; want both", copied, cmd)
	}
}

func TestDockerignoreKeepsSources(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(moduleRoot(), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	if !slices.Contains(patterns, ".git") {
		t.Errorf(".dockerignore should exclude .git (the build does not stamp VCS data)")
	}
	need := []string{"go.mod", "go.sum", "mesh/node.go", "examples/payment-service/main.go", "examples/internal/svc/svc.go"}
	for _, path := range need {
		for _, p := range patterns {
			pat := strings.TrimPrefix(p, "**/")
			for dir := path; dir != "."; dir = filepath.Dir(dir) {
				if ok, _ := filepath.Match(pat, dir); ok || (strings.HasPrefix(p, "**/") && matchBase(pat, dir)) {
					t.Errorf(".dockerignore pattern %q excludes %s, which the build needs", p, path)
				}
			}
		}
	}
}

func matchBase(pat, path string) bool {
	ok, _ := filepath.Match(pat, filepath.Base(path))
	return ok
}

func readYAML(t *testing.T, rel string) []any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot(), rel))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := parseYAML(string(b))
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return docs
}

func TestComposeFile(t *testing.T) {
	docs := readYAML(t, "compose.yaml")
	if len(docs) != 1 {
		t.Fatalf("compose.yaml: %d documents, want 1", len(docs))
	}
	services, ok := yget(docs[0], "services").(map[string]any)
	if !ok {
		t.Fatal("compose.yaml has no services mapping")
	}
	for _, name := range serviceNames {
		s, ok := services[name].(map[string]any)
		if !ok {
			t.Errorf("compose.yaml: no service %s", name)
			continue
		}
		if got := yget(s, "command", 0); got != name {
			t.Errorf("compose.yaml: %s runs %v, want [%q]", name, yget(s, "command"), name)
		}
		if yget(s, "image") != "warren-example" || yget(s, "build") != "." {
			t.Errorf("compose.yaml: %s: want build: . and image: warren-example (the one image)", name)
		}
		seeds, _ := yget(s, "environment", "WARREN_SEEDS").(string)
		for _, other := range serviceNames {
			if !slices.Contains(strings.Split(seeds, ","), other) {
				t.Errorf("compose.yaml: %s's WARREN_SEEDS %q lacks the service name %s", name, seeds, other)
			}
		}
		if v := yget(s, "environment", "WARREN_DISCOVERY"); v != nil && v != "mdns" {
			t.Errorf("compose.yaml: %s turns mDNS off (WARREN_DISCOVERY=%v); compose networks carry multicast", name, v)
		}
	}
	v := services["validation-service"]
	for _, key := range []string{"ports", "container_name", "hostname"} {
		if yget(v, key) != nil {
			t.Errorf("compose.yaml: validation-service sets %s, so --scale validation-service=3 would clash", key)
		}
	}
	if p := yget(services["payment-service"], "ports", 0); p != "8080:8080" {
		t.Errorf("compose.yaml: payment-service publishes %v, want 8080:8080", p)
	}
}

func TestKubernetesManifest(t *testing.T) {
	docs := readYAML(t, "deploy/kubernetes.yaml")
	objs := map[string]any{} // "Kind/name"
	for _, d := range docs {
		kind, _ := yget(d, "kind").(string)
		name, _ := yget(d, "metadata", "name").(string)
		if kind == "" || name == "" || yget(d, "apiVersion") == nil {
			t.Fatalf("kubernetes.yaml: an object without apiVersion, kind or metadata.name: %v", d)
		}
		objs[kind+"/"+name] = d
	}

	mesh := objs["Service/warren-mesh"]
	if mesh == nil {
		t.Fatal("kubernetes.yaml: no Service warren-mesh")
	}
	if yget(mesh, "spec", "clusterIP") != "None" {
		t.Errorf("Service warren-mesh: clusterIP %v, want None (headless)", yget(mesh, "spec", "clusterIP"))
	}
	if yget(mesh, "spec", "publishNotReadyAddresses") != "true" {
		t.Errorf("Service warren-mesh: want publishNotReadyAddresses: true, so pods gossip before they are ready")
	}
	meshSel, _ := yget(mesh, "spec", "selector").(map[string]any)
	if len(meshSel) == 0 {
		t.Errorf("Service warren-mesh has no selector")
	}
	has7946 := false
	for _, p := range asList(yget(mesh, "spec", "ports")) {
		has7946 = has7946 || yget(p, "port") == "7946"
	}
	if !has7946 {
		t.Errorf("Service warren-mesh does not expose port 7946")
	}

	for _, name := range serviceNames {
		d := objs["Deployment/"+name]
		if d == nil {
			t.Errorf("kubernetes.yaml: no Deployment %s", name)
			continue
		}
		labels, _ := yget(d, "spec", "template", "metadata", "labels").(map[string]any)
		for k, v := range meshSel {
			if labels[k] != v {
				t.Errorf("Deployment %s: pod labels %v do not match warren-mesh's selector %v", name, labels, meshSel)
			}
		}
		match, _ := yget(d, "spec", "selector", "matchLabels").(map[string]any)
		for k, v := range match {
			if labels[k] != v {
				t.Errorf("Deployment %s: selector %v does not match its pod labels %v", name, match, labels)
			}
		}
		c := yget(d, "spec", "template", "spec", "containers", 0)
		if yget(c, "command", 0) != name {
			t.Errorf("Deployment %s runs %v", name, yget(c, "command"))
		}
		env := map[string]any{}
		for _, e := range asList(yget(c, "env")) {
			n, _ := yget(e, "name").(string)
			env[n] = yget(e, "value")
			if env[n] == nil {
				env[n] = yget(e, "valueFrom")
			}
		}
		if env["WARREN_SEEDS"] != "warren-mesh" || env["WARREN_DISCOVERY"] != "none" {
			t.Errorf("Deployment %s: WARREN_SEEDS=%v WARREN_DISCOVERY=%v, want warren-mesh and none", name, env["WARREN_SEEDS"], env["WARREN_DISCOVERY"])
		}
		if yget(env["WARREN_ADVERTISE"], "fieldRef", "fieldPath") != "status.podIP" {
			t.Errorf("Deployment %s: want WARREN_ADVERTISE from status.podIP", name)
		}
	}

	pay := yget(objs["Deployment/payment-service"], "spec", "template", "spec", "containers", 0)
	if yget(pay, "readinessProbe", "httpGet", "path") != "/healthz" {
		t.Errorf("Deployment payment-service: readiness probe %v, want GET /healthz", yget(pay, "readinessProbe"))
	}
	svc := objs["Service/payment-service"]
	if svc == nil {
		t.Fatal("kubernetes.yaml: no Service payment-service for the HTTP API")
	}
	if yget(svc, "spec", "clusterIP") == "None" || yget(svc, "spec", "ports", 0, "targetPort") != "http" {
		t.Errorf("Service payment-service: want a normal Service to the http port, got %v", yget(svc, "spec"))
	}
	podLabels, _ := yget(objs["Deployment/payment-service"], "spec", "template", "metadata", "labels").(map[string]any)
	for k, v := range yget(svc, "spec", "selector").(map[string]any) {
		if podLabels[k] != v {
			t.Errorf("Service payment-service selects %s=%v, which its pods lack", k, v)
		}
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}
