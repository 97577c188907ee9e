package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/multiformats/go-multiaddr"
)

// options are the command line of bin/hearth (DESIGN.md, "Contracts").
type options struct {
	Data           string
	HTTP           string
	P2P            []string
	Bootstrap      []string
	NoMDNS         bool
	NoRegistration bool
	PublicStatus   bool
	LogLevel       slog.Level
}

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
	fs.Var((*multiFlag)(&o.P2P), "p2p", "libp2p listen multiaddr (repeatable; used once federation lands)")
	fs.Var((*multiFlag)(&o.Bootstrap), "bootstrap", "multiaddr of a peer to connect to at start (repeatable; used once federation lands)")
	fs.BoolVar(&o.NoMDNS, "no-mdns", false, "do not discover peers on the LAN with mDNS")
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
	// Multiaddrs are only stored until federation lands, but a typo should
	// fail now, not on the day they start to matter.
	for _, a := range append(append([]string{}, o.P2P...), o.Bootstrap...) {
		if _, err := multiaddr.NewMultiaddr(a); err != nil {
			return nil, fmt.Errorf("multiaddr %q: %w", a, err)
		}
	}
	if o.Data == "" {
		return nil, fmt.Errorf("--data must not be empty")
	}
	return o, nil
}
