package mesh

import "errors"

var (
	// ErrInvalidConfig wraps every configuration error, from options and from
	// WARREN_* variables alike; the message names the offending setting.
	ErrInvalidConfig = errors.New("mesh: invalid configuration")
	// ErrClosed is returned by calls on a closed node or component.
	ErrClosed = errors.New("mesh: closed")
	// ErrUnreachable reports that no data connection to a peer could be made
	// right now; the node keeps retrying while the peer is a member.
	ErrUnreachable = errors.New("mesh: peer unreachable")
	// ErrUnknownPeer reports a node that is not a member of the mesh.
	ErrUnknownPeer = errors.New("mesh: unknown peer")
)
