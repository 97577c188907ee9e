//go:build !js

package host

import (
	"testing"
	"time"
)

func TestMDNSFindsLANPeer(t *testing.T) {
	a := startHost(t, Options{Listen: loopbackTCP, MDNS: true})
	b := startHost(t, Options{Listen: loopbackTCP, MDNS: true})
	eventually(t, 20*time.Second, "a and b to find each other by mDNS", func() bool {
		return hasPeer(a, b.ServerName()) && hasPeer(b, a.ServerName())
	})
}
