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
	acl := f.roomACL(ctx, roomID)
	return acl != nil && acl.denies(server)
}

// roomACL returns a room's server ACL (nil: none), from memory while the
// room's state stands still: every PDU received asks. OnOutput forgets a
// room's ACL when its state changes; a read that raced such a change is
// not kept.
func (f *Federation) roomACL(ctx context.Context, roomID string) *serverACL {
	f.aclMu.Lock()
	acl, ok := f.acls[roomID]
	gen := f.aclGen
	f.aclMu.Unlock()
	if ok {
		return acl
	}
	ev, err := f.rs.StateEvent(ctx, roomID, "m.room.server_acl", "")
	if err != nil {
		return nil // not kept: the room may be unknown yet
	}
	if ev != nil {
		acl = &serverACL{}
		if json.Unmarshal(ev.Content(), acl) != nil {
			acl = nil // not an ACL at all: nothing to enforce
		}
	}
	f.aclMu.Lock()
	if f.aclGen == gen {
		if len(f.acls) >= maxCachedACLs {
			clear(f.acls)
		}
		f.acls[roomID] = acl
	}
	f.aclMu.Unlock()
	return acl
}

// maxCachedACLs bounds the rooms whose ACL is kept in memory.
const maxCachedACLs = 10_000

// forgetACL drops a room's ACL from memory: its state changed.
func (f *Federation) forgetACL(roomID string) {
	f.aclMu.Lock()
	delete(f.acls, roomID)
	f.aclGen++
	f.aclMu.Unlock()
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
