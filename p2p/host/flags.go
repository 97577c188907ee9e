package host

import (
	"fmt"
	"strings"

	ma "github.com/multiformats/go-multiaddr"
)

// MultiaddrsFlag is a repeatable command-line flag of multiaddrs
// (flag.Var(&f, "p2p", "...")); each value may also hold several,
// comma-separated.
type MultiaddrsFlag []ma.Multiaddr

func (f *MultiaddrsFlag) String() string {
	if f == nil {
		return ""
	}
	s := make([]string, len(*f))
	for i, a := range *f {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// Set parses and appends one or more comma-separated multiaddrs.
func (f *MultiaddrsFlag) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		a, err := ma.NewMultiaddr(part)
		if err != nil {
			return fmt.Errorf("bad multiaddr %q: %w", part, err)
		}
		*f = append(*f, a)
	}
	return nil
}
