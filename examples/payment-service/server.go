package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/warrenmesh/warren/examples/internal/contract"
	"github.com/warrenmesh/warren/mesh"
	"github.com/warrenmesh/warren/publisher"
	"github.com/warrenmesh/warren/requester"
)

// publishTimeout bounds the wait for a slow subscriber; events are a side
// effect, never a reason to fail a payment.
const publishTimeout = 2 * time.Second

type server struct {
	node *mesh.Node
	req  *requester.Requester
	pub  *publisher.Publisher
	wait time.Duration
	log  *slog.Logger
}

// payment is the JSON answer of GET /pay/{card}.
type payment struct {
	Card   string `json:"card"`
	Status string `json:"status"` // validated, rejected, timeout, error
	By     string `json:"by,omitempty"`
	Error  string `json:"error,omitempty"`
	Code   string `json:"code,omitempty"`
}

// health is the JSON answer of GET /healthz.
type health struct {
	Status      string `json:"status"`
	Node        string `json:"node"`
	Members     int    `json:"members"`     // nodes in the mesh, this one included
	Validators  int    `json:"validators"`  // validation services that take requests now
	Subscribers int    `json:"subscribers"` // subscribers that may receive our events
}

func (s *server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /pay/{card}", s.pay)
	mux.HandleFunc("GET /healthz", s.health)
	return mux
}

func (s *server) pay(w http.ResponseWriter, r *http.Request) {
	card := r.PathValue("card")
	ctx, cancel := context.WithTimeout(r.Context(), s.wait)
	defer cancel()
	start := time.Now()
	// Validation has no side effect, so it may safely be resent when a
	// validation service dies while working on it.
	res, err := requester.Call[contract.ValidateReply](ctx, s.req, contract.ValidateType,
		contract.ValidateRequest{Card: card}, requester.Idempotent())
	took := time.Since(start).Round(time.Millisecond)
	var remote *requester.RemoteError
	switch {
	case err == nil:
		s.log.Info("paid", "card", card, "by", res.By, "took", took)
		s.publish(r.Context(), contract.TopicCompleted, contract.PaymentEvent{Card: card, Status: "validated", By: res.By})
		writeJSON(w, http.StatusOK, payment{Card: card, Status: "validated", By: res.By})
	case errors.As(err, &remote) && remote.Code == contract.CodeInvalidCard:
		s.log.Info("rejected", "card", card, "by", remote.Responder, "reason", remote.Message)
		s.publish(r.Context(), contract.TopicRejected, contract.PaymentEvent{Card: card, Status: "rejected", By: remote.Responder, Reason: remote.Message})
		writeJSON(w, http.StatusUnprocessableEntity, payment{Card: card, Status: "rejected", By: remote.Responder, Error: remote.Message, Code: remote.Code})
	case r.Context().Err() != nil:
		s.log.Info("client went away", "card", card, "after", took)
	case errors.Is(err, requester.ErrTimeout):
		s.log.Warn("no validation in time", "card", card, "wait", s.wait)
		writeJSON(w, http.StatusGatewayTimeout, payment{Card: card, Status: "timeout",
			Error: fmt.Sprintf("no validation service answered within %s", s.wait)})
	case errors.Is(err, requester.ErrClosed):
		writeJSON(w, http.StatusServiceUnavailable, payment{Card: card, Status: "error", Error: "the payment service is shutting down; try again"})
	default:
		s.log.Error("validation failed", "card", card, "err", err)
		writeJSON(w, http.StatusBadGateway, payment{Card: card, Status: "error", Error: err.Error()})
	}
}

// publish sends an event to every subscriber; a failure is only logged.
func (s *server) publish(ctx context.Context, topic string, ev contract.PaymentEvent) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	ev.At = time.Now().UTC()
	if err := s.pub.Publish(ctx, topic, ev); err != nil {
		s.log.Warn("publish", "topic", topic, "err", err)
	}
}

func (s *server) health(w http.ResponseWriter, _ *http.Request) {
	h := health{Status: "ok", Node: s.node.ID(), Members: len(s.node.Members())}
	for _, c := range s.node.Catalogue() {
		switch {
		case c.Environment != s.node.Environment():
		case c.Kind == mesh.KindResponder && c.State == mesh.StateActive && slices.Contains(c.Handles, contract.ValidateType):
			h.Validators++
		case c.Kind == mesh.KindSubscriber && c.State == mesh.StateActive:
			h.Subscribers++
		}
	}
	writeJSON(w, http.StatusOK, h)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
