package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/warrenmesh/warren/examples/internal/contract"
	"github.com/warrenmesh/warren/internal/meshtest"
	"github.com/warrenmesh/warren/publisher"
	"github.com/warrenmesh/warren/requester"
	"github.com/warrenmesh/warren/responder"
	"github.com/warrenmesh/warren/subscriber"
)

func TestMain(m *testing.M) {
	meshtest.SafeEnv()
	os.Exit(m.Run())
}

// newServer starts the payment API on its own node, in the mesh of the
// returned validator node, with the given wait limit.
func newServer(t *testing.T, wait time.Duration) (*httptest.Server, *server, func() *responder.Responder) {
	t.Helper()
	meshtest.CheckGoroutines(t) // first, so that its check runs after every other cleanup
	nodes := meshtest.Cluster(t, 2)
	payNode, valNode := nodes[0], nodes[1]
	req, err := requester.New(service, requester.WithMesh(payNode))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := publisher.New(service, publisher.WithMesh(payNode))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeAll(t, req.Close, pub.Close) })
	s := &server{node: payNode, req: req, pub: pub, wait: wait, log: slog.New(slog.DiscardHandler)}
	ts := httptest.NewServer(s.routes())
	t.Cleanup(ts.Close)
	// A validator like validation-service: only "123456" and "4111111111111111" are valid here.
	startValidator := func() *responder.Responder {
		r, err := responder.New("validation-service", responder.WithMesh(valNode))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { closeAll(t, r.Close) })
		responder.Handle(r, contract.ValidateType, func(_ context.Context, in contract.ValidateRequest) (contract.ValidateReply, error) {
			if in.Card != "123456" && in.Card != "4111111111111111" {
				return contract.ValidateReply{}, responder.Errorf(contract.CodeInvalidCard, "card %q is not valid", in.Card)
			}
			return contract.ValidateReply{Card: in.Card, Status: "validated", By: valNode.ID()}, nil
		})
		return r
	}
	return ts, s, startValidator
}

// closeAll closes components, before their nodes (cleanups run in reverse).
func closeAll(t *testing.T, closers ...func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range closers {
		if err := c(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	}
}

func get(t *testing.T, url string, v any) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q", url, ct)
	}
	b, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %d %q: %v", url, res.StatusCode, b, err)
	}
	return res.StatusCode
}

func TestPayWaitsThenTimesOut(t *testing.T) {
	ts, _, _ := newServer(t, 300*time.Millisecond)
	start := time.Now()
	var p payment
	code := get(t, ts.URL+"/pay/123456", &p)
	if took := time.Since(start); took < 300*time.Millisecond || took > 5*time.Second {
		t.Errorf("the payment answered after %s, want about the 300ms wait limit", took)
	}
	want := payment{Card: "123456", Status: "timeout", Error: "no validation service answered within 300ms"}
	if code != http.StatusGatewayTimeout || p != want {
		t.Errorf("got %d %+v, want 504 %+v", code, p, want)
	}
}

func TestPayValidatedRejectedAndEvents(t *testing.T) {
	ts, s, startValidator := newServer(t, 10*time.Second)
	events := make(chan string, 10)
	sub, err := subscriber.New("monitor", subscriber.WithMesh(s.node))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeAll(t, sub.Close) })
	sub.On(contract.TopicAll, func(_ context.Context, m *subscriber.Message) {
		var ev contract.PaymentEvent
		if err := m.Decode(&ev); err != nil {
			events <- "undecodable: " + err.Error()
			return
		}
		events <- fmt.Sprintf("%s %s %s", m.Topic, ev.Card, ev.Status)
	})
	r := startValidator()
	meshtest.Eventually(t, 10*time.Second, func() error {
		var h health
		if get(t, ts.URL+"/healthz", &h); h.Validators != 1 || h.Subscribers != 1 || h.Members != 2 {
			return fmt.Errorf("healthz %+v", h)
		}
		return nil
	})

	var p payment
	if code := get(t, ts.URL+"/pay/4111111111111111", &p); code != http.StatusOK || p.Status != "validated" || p.By == "" || p.Error != "" {
		t.Errorf("valid card: %d %+v", code, p)
	}
	p = payment{}
	if code := get(t, ts.URL+"/pay/12ab", &p); code != http.StatusUnprocessableEntity || p.Status != "rejected" ||
		p.Code != contract.CodeInvalidCard || p.Error != `card "12ab" is not valid` || p.By == "" {
		t.Errorf("invalid card: %d %+v", code, p)
	}
	for _, want := range []string{"payment.completed 4111111111111111 validated", "payment.rejected 12ab rejected"} {
		select {
		case got := <-events:
			if got != want {
				t.Errorf("event %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no event %q", want)
		}
	}

	// With the validator drained away, a payment waits for the next one.
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	answered := make(chan int, 1)
	go func() {
		res, err := http.Get(ts.URL + "/pay/123456")
		if err != nil {
			answered <- 0
			return
		}
		res.Body.Close()
		answered <- res.StatusCode
	}()
	select {
	case code := <-answered:
		t.Fatalf("answered %d with no validator", code)
	case <-time.After(300 * time.Millisecond):
	}
	startValidator()
	select {
	case code := <-answered:
		if code != http.StatusOK {
			t.Errorf("held payment answered %d, want 200", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held payment was not answered after a validator came back")
	}
}

func TestRoutes(t *testing.T) {
	ts, _, _ := newServer(t, time.Second)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/pay/123456", http.StatusMethodNotAllowed},
		{"GET", "/pay/", http.StatusNotFound},
		{"GET", "/nope", http.StatusNotFound},
	} {
		req, _ := http.NewRequest(tc.method, ts.URL+tc.path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, res.StatusCode, tc.want)
		}
	}
}
