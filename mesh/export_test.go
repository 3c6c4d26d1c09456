package mesh

// Test hooks, reachable only from this package's tests.

// DropConn closes the data connection from n to peer, as a network fault
// would; it reports whether there was one.
func DropConn(n *Node, peer string) bool {
	n.peerMu.Lock()
	p := n.peers[peer]
	n.peerMu.Unlock()
	if p == nil {
		return false
	}
	c := p.conn.Load()
	if c == nil {
		return false
	}
	c.nc.Close()
	return true
}

// ConnAddrs returns the local and remote address of n's connection to peer.
func ConnAddrs(n *Node, peer string) (local, remote string, ok bool) {
	n.peerMu.Lock()
	p := n.peers[peer]
	n.peerMu.Unlock()
	if p == nil {
		return "", "", false
	}
	c := p.conn.Load()
	if c == nil || c.nc == nil {
		return "", "", false
	}
	return c.nc.LocalAddr().String(), c.nc.RemoteAddr().String(), true
}
