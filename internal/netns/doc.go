// Package netns is a test harness for multi-host tests on one Linux machine.
//
// A [Net] is an isolated layer-2 network: a "switch" network namespace that
// holds a Linux bridge, and one namespace per [Host], attached to the bridge
// by a veth pair whose host-side end is called eth0. Nothing is ever added to
// the root (host) namespace — no veth end, no address, no route — so no
// packet a test sends can leave the machine, and multicast (mDNS) stays on
// the private bridge.
//
// Processes run inside a host with [Host.Command]; [StartProc] wraps such a
// command to stream its stdout lines, wait for a line with a deadline, and
// stop it (SIGTERM, then SIGKILL). Everything a Net makes — namespaces,
// /etc/netns files, processes — is removed by t.Cleanup, even when the test
// fails.
//
// The package needs root and iproute2 (ip, bridge, tc). [New] skips the test
// when not root, unless the environment variable CI is "true", in which case
// the test fails: namespace tests must run in CI.
//
// It is a normal package, not a _test file, so several test packages can use
// it; nothing outside tests should import it.
package netns
