// Package examples holds warren's runnable example: the payment and
// validation services of the seed example (after cote's webinar demo), a
// monitor that subscribes to their events, and a one-command demo.
//
//	go run ./examples/demo
//
// The services are separate main packages:
//
//   - validation-service: a responder for "validate" (cards of 6 to 19 digits)
//   - payment-service: HTTP GET /pay/{card}, asks a validation service and
//     publishes payment.completed / payment.rejected events
//   - payment-monitor: subscribes to payment.* and logs one line per event
//
// This package itself only holds the tests that run the built binaries:
// as separate hosts in network namespaces, discovering each other by mDNS
// alone (e2e_test.go), and built exactly as the Dockerfile builds them
// (containers_test.go). See README.md.
package examples
