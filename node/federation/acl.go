package federation

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path"
	"strings"

	"hearth/node/httputil"
)

// serverACL is the content of a room's m.room.server_acl state event.
type serverACL struct {
	Allow           []string `json:"allow"`
	Deny            []string `json:"deny"`
	AllowIPLiterals *bool    `json:"allow_ip_literals"`
}

// denied says whether a room's server ACL shuts a server out: its PDUs
// are refused and it may not join, backfill or read state. A room without
// an ACL shuts out nobody.
func (f *Federation) denied(ctx context.Context, roomID, server string) bool {
	ev, err := f.rs.StateEvent(ctx, roomID, "m.room.server_acl", "")
	if err != nil || ev == nil {
		return false
	}
	var acl serverACL
	if json.Unmarshal(ev.Content(), &acl) != nil {
		return false // not an ACL at all: nothing to enforce
	}
	return acl.denies(server)
}

// denies applies the spec's rules: the host (port dropped) must not be an
// IP literal unless allowed, must match no deny glob and must match an
// allow glob; globs are case-insensitive with * and ?.
func (acl serverACL) denies(server string) bool {
	host := strings.ToLower(server)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if (acl.AllowIPLiterals != nil && !*acl.AllowIPLiterals) && net.ParseIP(host) != nil {
		return true
	}
	for _, g := range acl.Deny {
		if globMatch(g, host) {
			return true
		}
	}
	for _, g := range acl.Allow {
		if globMatch(g, host) {
			return false
		}
	}
	return true
}

// globMatch matches a server name glob; path.Match's '[' classes are not
// part of the spec's syntax, so a glob holding one is taken literally.
func globMatch(glob, name string) bool {
	glob = strings.ToLower(glob)
	if strings.ContainsAny(glob, `[\`) {
		return glob == name
	}
	ok, err := path.Match(glob, name)
	return err == nil && ok
}

// aclChecked refuses requests about a room whose ACL shuts the origin out.
func (f *Federation) aclChecked(h handler) handler {
	return func(r *http.Request, origin string, body []byte) (any, error) {
		if roomID := r.PathValue("roomId"); roomID != "" && f.denied(r.Context(), roomID, origin) {
			return nil, httputil.Forbidden("the room's server ACL does not allow your server")
		}
		return h(r, origin, body)
	}
}
