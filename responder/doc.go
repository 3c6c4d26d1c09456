// Package responder answers warren requests.
//
// A Responder registers handlers for request types; requesters anywhere in
// the mesh (same environment, key and namespace) find it through the
// catalogue and send it only the types it handles. Start more copies of a
// service to scale it: requests are spread round-robin over every
// responder of a type.
//
//	r, _ := responder.New("validation-service")
//	responder.Handle(r, "validate", func(ctx context.Context, c Card) (Result, error) {
//		if !valid(c.Number) {
//			return Result{}, responder.Errorf("invalid_card", "card %q is not 6 to 19 digits", c.Number)
//		}
//		return Result{Status: "validated"}, nil
//	})
//	defer r.Close(ctx) // drains: finishes in-flight work, loses no request
//
// Handlers run at most WithConcurrency at once, and never hold up the
// network: a handler runs on a worker goroutine, or, when the responder has
// nothing else to do and no other frame waits on the connection, on the
// goroutine that read its request (which saves a wake-up of another
// goroutine each way); that goroutine's reading moves to a new one if the
// handler lasts (within about a millisecond, or up to about 32 ms the first
// time after a long run of quick handlers or a quiet spell), and the
// requests that follow a slow handler go to the workers. A handler's error reaches the caller as
// a *requester.RemoteError with its message (and code, for an *Error); a panic
// is recovered and reported the same way, and the responder keeps serving.
// Close drains gracefully: the responder is marked draining so requesters
// stop choosing it, running handlers finish, and requests that still arrive
// are refused unprocessed, so the requester resends them elsewhere.
package responder
