// Package e2e holds cross-host tests of the mesh: every node is a separate
// OS process (this test binary, re-executed with WARREN_E2E_ROLE=node) in its
// own network namespace, on an isolated bridge built by internal/netns. The
// tests cover what single-process tests cannot: mDNS discovery between
// hosts, seeds where multicast is blocked, seeds from a DNS name that
// resolves to several hosts, and failure detection of a killed process.
//
// The tests need root (they skip otherwise, and fail when CI=true). Nothing
// they do reaches the machine's real network: the namespaces have no link
// to the host namespace, and the test process itself runs with
// WARREN_DISCOVERY=none.
package e2e
