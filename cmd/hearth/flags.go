package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/multiformats/go-multiaddr"

	"hearth/p2p/host"
)

// options are the command line of bin/hearth (DESIGN.md, "Contracts").
type options struct {
	Data           string
	HTTP           string
	P2P            []string
	Bootstrap      []string
	Relays         []string
	NoMDNS         bool
	NoDHT          bool
	NoRelayService bool
	Relay          host.RelayLimits
	NoRegistration bool
	PublicStatus   bool
	LogLevel       slog.Level
}

// defaultP2P listens on every interface, on ports the system picks, with
// each transport: TCP and QUIC for native peers, WebSocket for browsers.
var defaultP2P = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1", "/ip4/0.0.0.0/tcp/0/ws"}

// multiFlag collects a flag that may be given several times.
type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }

func (m *multiFlag) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	*m = append(*m, v)
	return nil
}

// parseFlags reads args (without the program name). Errors and -help go to
// out; the caller exits 2 on error like the flag package does.
func parseFlags(args []string, out io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("hearth", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.Data, "data", "./data", "data directory (node key, database)")
	fs.StringVar(&o.HTTP, "http", "127.0.0.1:8008", "address for the client API, web app and status (port 0 picks a free port)")
	fs.Var((*multiFlag)(&o.P2P), "p2p", "libp2p listen multiaddr, TCP, QUIC-v1 or WebSocket (repeatable; default: all three on 0.0.0.0, free ports)")
	fs.Var((*multiFlag)(&o.Bootstrap), "bootstrap", "multiaddr of a peer to stay connected to, ending in /p2p/<peer ID> (repeatable)")
	fs.Var((*multiFlag)(&o.Relays), "relay", "multiaddr of a relay to hold a reservation with, for peers that cannot dial us (repeatable)")
	fs.BoolVar(&o.NoMDNS, "no-mdns", false, "do not discover peers on the LAN with mDNS")
	fs.BoolVar(&o.NoDHT, "no-dht", false, "do not run the Kademlia DHT")
	fs.BoolVar(&o.NoRelayService, "no-relay-service", false, "do not relay for other peers (browsers)")
	o.Relay = host.DefaultRelayLimits()
	fs.Int64Var(&o.Relay.CircuitData, "relay-circuit-data", o.Relay.CircuitData, "bytes relayed per circuit and direction before the relay resets it")
	fs.DurationVar(&o.Relay.CircuitDuration, "relay-circuit-duration", o.Relay.CircuitDuration, "how long a relayed circuit lives")
	fs.BoolVar(&o.Relay.Unlimited, "relay-unlimited", false, "no per-circuit limits on relayed connections")
	fs.IntVar(&o.Relay.MaxReservationsPerIP, "relay-max-reservations-per-ip", o.Relay.MaxReservationsPerIP, "relay reservations one IP address may hold")
	fs.IntVar(&o.Relay.MaxCircuits, "relay-max-circuits", o.Relay.MaxCircuits, "relayed circuits per peer")
	fs.BoolVar(&o.NoRegistration, "no-registration", false, "close m.login.dummy registration")
	fs.BoolVar(&o.PublicStatus, "public-status", false, "answer /_hearth/v1/status to non-loopback clients too")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: hearth [flags]\n\nA Matrix homeserver federating over libp2p.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := o.LogLevel.UnmarshalText([]byte(*level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	if len(o.P2P) == 0 {
		o.P2P = defaultP2P
	}
	for _, a := range append(append(append([]string{}, o.P2P...), o.Bootstrap...), o.Relays...) {
		if _, err := multiaddr.NewMultiaddr(a); err != nil {
			return nil, fmt.Errorf("multiaddr %q: %w", a, err)
		}
	}
	if o.Data == "" {
		return nil, fmt.Errorf("--data must not be empty")
	}
	return o, nil
}
