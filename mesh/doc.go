// Package mesh is warren's per-process node: membership, discovery, the
// service catalogue and the data-plane connections that every component of
// the process shares.
//
// A process normally has one node. Components (requesters, responders,
// publishers, subscribers) register on it and appear in the catalogue of
// every node in the mesh within a fraction of a second; the node keeps
// exactly one multiplexed TCP connection to each peer it talks to, opened on
// first use, re-dialed with backoff while the peer is a member, and dropped
// when gossip declares the peer gone.
//
// Gossip can declare a live peer failed by mistake (lost UDP probes, a
// process starved of CPU). So a failure verdict about a peer whose
// connection is open is checked first: a peer that answers a ping on that
// connection within half a second stays, with its components and its
// connection, while gossip catches up (a live node refutes the verdict
// within a second or two); it is checked again every second and dropped as
// soon as it stops answering, or after 30 seconds. A peer that crashed,
// froze or was cut off does not answer and departs half a second later
// than gossip said.
//
// # Finding peers
//
// Nodes find each other with no configuration on a LAN, by multicast DNS.
// Where multicast is blocked (Docker networks, Kubernetes, cloud VPCs) give
// seeds: addresses of a few other nodes, or one DNS name that resolves to
// many, such as a Kubernetes headless Service or a Docker Compose service
// name. After the first contact, gossip (hashicorp/memberlist) spreads
// membership and failure detection to everyone. When no peer is found within
// a few seconds the node logs one line saying what to set.
//
// # Configuration
//
// New works with no options. Every setting can also come from the
// environment, so containers are configured without code; explicit options
// win over variables, which win over defaults:
//
//	WARREN_NAME        node name (default: the host name)
//	WARREN_ENV         environment; only components of one environment talk
//	WARREN_SEEDS       seeds: host:port, host (port 7946) or DNS names, comma-separated
//	WARREN_DISCOVERY   mdns (default) or none
//	WARREN_INTERFACES  interfaces for mDNS and for the advertised address
//	WARREN_BIND        gossip bind address (default 0.0.0.0:7946, or a free port if taken)
//	WARREN_ADVERTISE   address peers use to reach this node
//	WARREN_LOG         debug, info, warn (default), error or off
//	WARREN_MAX_FRAME   largest message frame in bytes (default 16 MiB)
//
// A bad value is an error wrapping ErrInvalidConfig that names the variable.
//
// In test binaries (testing.Testing) the defaults are safe for a shared
// machine: the node binds 127.0.0.1 on a free port and mDNS stays off unless
// interfaces are named explicitly.
package mesh
