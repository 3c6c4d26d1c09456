// Package discovery tells a warren node how to find its first peers.
//
// Discovery only has to produce a few gossip addresses ("host:port"); once a
// node has joined one member, hashicorp/memberlist gossip spreads the rest of
// the membership. A [Discoverer] runs for the life of the node and calls back
// with addresses whenever it learns them, possibly repeatedly, so that the
// mesh can rejoin after a partition.
//
// # Strategies
//
//   - [MDNS]: multicast DNS (DNS-SD service "_warren._tcp.local."). Every
//     node announces its advertised gossip address and browses for the
//     others. Zero configuration, but only on a network segment that carries
//     multicast: a LAN, a developer machine, a single Docker bridge with
//     multicast enabled. Restrict it to the right interfaces with
//     [WithInterfaces].
//   - [Static]: fixed seed addresses, reported at start and every 30 s. Use it
//     when some nodes have well-known addresses (a VM fleet, a bastion, a
//     test).
//   - [DNS]: a name re-resolved every few seconds, every A/AAAA record
//     becoming a seed. This is the natural fit for orchestrators, where
//     multicast is usually unavailable: a Kubernetes headless service
//     (clusterIP: None) resolves to all ready pods, a Docker Compose service
//     name resolves to all its replicas, and cloud DNS or service registries
//     can publish a name for a node group.
//   - [Multi] combines several discoverers, e.g. seeds plus mDNS.
//
// [ParseSeeds] turns a WARREN_SEEDS-style string such as
// "10.0.0.5:7946, dns:validation-service, [fd00::7]" into a Discoverer:
// IP literals become [Static] seeds and names become [DNS] discoverers.
//
// Rule of thumb: on a LAN use mDNS; in Docker, Kubernetes or a cloud VPC use
// seeds or, better, one DNS name covering all peers (a headless service).
//
// # mDNS details
//
// MDNS uses github.com/grandcat/zeroconf. The announcement carries exactly
// the node's advertised address (not every address of the interface) and the
// TXT records id=<NodeID>, env=<Environment> and v=1; peers in another
// environment and the node itself are never reported. zeroconf writes a few
// diagnostics through the standard library's log package.
package discovery
