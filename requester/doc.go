// Package requester sends warren requests and waits for replies.
//
// A Requester finds responders through the mesh catalogue and sends each
// request to one responder that handles its type (and has the same
// environment, key and namespace), round-robin by default:
//
//	req, _ := requester.New("payment-service")
//	res, err := requester.Call[Result](ctx, req, "validate", Card{Number: "4111111111111111"})
//
// When no responder exists yet, the request is held, in order, until one
// appears or the request's deadline passes (a held request that times out
// never reaches a responder). The queue is bounded (WithMaxPending). So a
// caller waits, rather than fails, while a service restarts or scales from
// zero; give ctx a deadline, or the requester WithTimeout, to bound the wait.
//
// Send blocks its goroutine until the call completes. Go sends without
// waiting and returns a *Pending (Done, Wait), in the manner of net/rpc's
// Client.Go: fanning out many requests, or holding thousands while a service
// is down, then costs no goroutine per request, only the payload and a few
// hundred bytes each.
//
// When ctx ends before the reply, the call returns ctx's error and the
// responder is told, so that its handler's context is cancelled (best
// effort). Many calls may share one context (a worker pool's root context,
// say): the requester then watches it once for all of them rather than
// once per call, so concurrent callers do not contend for its lock.
//
// Failures are typed for errors.Is and errors.As: ErrTimeout, ErrQueueFull,
// ErrNoHandler (responders exist but none handles the type),
// ErrResponderLost (the responder died mid-request: retryable), ErrDecode,
// and *RemoteError for an error or panic in the responder's handler.
// Requests refused unprocessed by a responder that is shutting down are
// always resent elsewhere; requests lost with a dying responder are resent
// when the call is Idempotent or the requester has WithRetry.
package requester
