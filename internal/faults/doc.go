// Package faults is warren's fault suite: request/response and pub/sub load
// across separate processes in network namespaces (built by internal/netns),
// while faults are injected one at a time: a responder killed (SIGKILL) or
// frozen (SIGSTOP, then SIGCONT), a network partition and its healing, a
// rolling restart with graceful drain, a requester and a publisher
// restarted, a whole host lost and replaced, and a CPU-bound responder.
//
// Every process is this test binary re-executed in a role (driver,
// responder, publisher, subscriber; see roles_test.go). The driver runs two
// requesters, one WithRetry and one without, and records the outcome of
// every request, each with a unique id, in a file; responders record every
// id they execute, subscribers every event they receive, the publisher every
// event it published. The test joins those records into one row per fault:
// requests sent, answered, failed with a clear (typed) error, retried, lost,
// answered twice, events published, delivered and dropped, the longest
// stall and the recovery time after the fault ended. It fails on any lost
// request, any request answered twice or with a reply for another request,
// any unclear error, any failure during a graceful rolling restart or a
// graceful requester restart, any event lost where no subscriber was
// affected, a CPU-bound responder declared dead, and a recovery slower than
// a few seconds.
//
// The table is logged, and written as Markdown to the file named by
// WARREN_FAULTS_TABLE when it is set. By default (and with -short) the
// suite runs in its short mode, about a minute and a half; WARREN_FAULTS_LONG=1
// holds each fault longer under heavier load.
//
// The tests need root (they skip otherwise, and fail when CI=true). Nothing
// reaches the machine's real network: the namespaces have no link to the
// host namespace, children refuse to run in the test's own namespace, and
// discovery is by seeds (mDNS off).
package faults
