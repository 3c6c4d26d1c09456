package mesh_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/mesh"
)

func TestBadEnvironmentVariablesAreNamed(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{mesh.EnvDiscovery, "carrier-pigeon"},
		{mesh.EnvLog, "loud"},
		{mesh.EnvBind, "127.0.0.1:notaport"},
		{mesh.EnvSeeds, "10.0.0.1:99999"},
		{mesh.EnvInterfaces, "no-such-if0"},
		{mesh.EnvMaxFrame, "big"},
		{mesh.EnvMaxFrame, "100"},
		{mesh.EnvName, "no spaces/slashes"},
		{mesh.EnvAdvertise, "10.0.0.1:port:x"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			t.Setenv(tc.name, tc.value)
			n, err := mesh.New(mesh.WithBindAddr("127.0.0.1:0"), mesh.WithMDNS(false))
			if err == nil {
				n.Close(context.Background())
				t.Fatalf("%s=%q accepted", tc.name, tc.value)
			}
			if !errors.Is(err, mesh.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("error %q does not wrap ErrInvalidConfig and name %s", err, tc.name)
			}
		})
	}
}

func TestOptionsBeatEnvironment(t *testing.T) {
	t.Setenv(mesh.EnvEnv, "from-env")
	t.Setenv(mesh.EnvName, "envname")
	n := meshtest.Node(t)
	if n.Environment() != "from-env" || n.Name() != "envname" {
		t.Fatalf("env not applied: %q %q", n.Environment(), n.Name())
	}
	n2 := meshtest.Node(t, mesh.WithEnvironment("from-option"))
	if n2.Environment() != "from-option" {
		t.Fatalf("option did not win: %q", n2.Environment())
	}
	if !strings.HasPrefix(n.ID(), "envname-") {
		t.Fatalf("ID %q does not start with the name", n.ID())
	}
}

func TestMDNSNeedsInterfacesInTests(t *testing.T) {
	_, err := mesh.New(mesh.WithBindAddr("127.0.0.1:0"), mesh.WithMDNS(true))
	if !errors.Is(err, mesh.ErrInvalidConfig) {
		t.Fatalf("mDNS without interfaces in a test binary: err = %v", err)
	}
}

func TestDefaultNode(t *testing.T) {
	t.Setenv(mesh.EnvBind, "127.0.0.1:0")
	t.Setenv(mesh.EnvDiscovery, "none")
	t.Setenv(mesh.EnvLog, "off")
	a, err := mesh.Default()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := mesh.Default()
	if a != b {
		t.Fatal("Default returned two nodes")
	}
	if !strings.HasPrefix(a.Addr(), "127.0.0.1:") {
		t.Fatalf("default node bound %s", a.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := mesh.CloseDefault(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestCloseIsIdempotentAndRefusesWork(t *testing.T) {
	meshtest.CheckGoroutines(t)
	n, err := mesh.New(meshtest.Options(t)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Register(mesh.Component{Kind: mesh.KindRequester}, nopHandler{}); !errors.Is(err, mesh.ErrClosed) {
		t.Fatalf("Register after Close = %v", err)
	}
}
