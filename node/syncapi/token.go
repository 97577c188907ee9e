package syncapi

import (
	"errors"
	"strconv"
	"strings"
)

// Token is a /sync position: how far a client has read each stream.
// Positions only grow; a client that sends a token back gets what is newer
// on every stream. Streams other than Room and AccountData are reserved
// for the complete sync API (typing, receipts, to-device, presence,
// device lists) so tokens handed out now stay valid then.
type Token struct {
	Room        int64 // the room event stream (storage stream.pos)
	AccountData int64
	Typing      int64
	Receipt     int64
	ToDevice    int64
	Presence    int64
	DeviceList  int64
}

const numStreams = 7

func (t *Token) fields() [numStreams]*int64 {
	return [numStreams]*int64{&t.Room, &t.AccountData, &t.Typing, &t.Receipt, &t.ToDevice, &t.Presence, &t.DeviceList}
}

// String encodes the token: "s" then each stream's position, "_"-separated.
func (t Token) String() string {
	b := make([]byte, 0, 32)
	b = append(b, 's')
	for i, p := range t.fields() {
		if i > 0 {
			b = append(b, '_')
		}
		b = strconv.AppendInt(b, *p, 10)
	}
	return string(b)
}

var errBadToken = errors.New("malformed token")

// ParseToken decodes a sync token. Missing trailing streams read as 0
// (tokens from before a stream existed); anything else that is not
// exactly what String makes is an error.
func ParseToken(s string) (Token, error) {
	var t Token
	if len(s) < 2 || s[0] != 's' {
		return t, errBadToken
	}
	parts := strings.Split(s[1:], "_")
	f := t.fields()
	if len(parts) > len(f) {
		return t, errBadToken
	}
	for i, p := range parts {
		n, err := parsePos(p)
		if err != nil {
			return t, err
		}
		*f[i] = n
	}
	return t, nil
}

// parsePos reads a non-negative decimal position: digits only, no sign.
func parsePos(s string) (int64, error) {
	if s == "" || len(s) > 18 {
		return 0, errBadToken
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errBadToken
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// Pagination tokens (/messages from/to, prev_batch, /context start/end)
// name a boundary in a room's timeline. They are versioned by their first
// letter so topological tokens (backfilled history, which never enters
// the stream) can be added beside them:
//
//	t<pos>  the boundary just after stream position pos: events with
//	        stream position <= pos are before it, the others after it.
//	        Backfilled history has negative positions (below the stream,
//	        which /sync reads), so pos may be negative.
//	s...    a sync token: the boundary after its Room position.
func pageToken(pos int64) string {
	return "t" + strconv.FormatInt(pos, 10)
}

// parsePageToken returns the stream boundary of a pagination token.
func parsePageToken(s string) (int64, error) {
	if strings.HasPrefix(s, "s") {
		t, err := ParseToken(s)
		return t.Room, err
	}
	if len(s) < 2 || s[0] != 't' {
		return 0, errBadToken
	}
	if s[1] == '-' {
		p, err := parsePos(s[2:])
		return -p, err
	}
	return parsePos(s[1:])
}
