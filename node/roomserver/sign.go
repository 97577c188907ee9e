package roomserver

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// SignEvent is gomatrixserverlib's EventBuilder.Build for the events this
// server makes (room versions whose event IDs are hashes): the same bytes
// and ID in half the time. Build encodes, parses and canonicalises the
// event about a dozen times over to hash, redact, sign and find the ID
// (gomatrixserverlib's own TODO in its signEvent), and in wasm that was a
// millisecond a message. This does each step once, with
// gomatrixserverlib's own parts: EnforcedCanonicalJSON, RedactEventJSON
// (through RedactCanonical), CanonicalJSON,
// NewEventFromTrustedJSONWithEventID and CheckFields. The
// redacted canonical JSON it signs is also what the ID is the hash of.
//
// A builder it does not cover (older event formats, one carrying
// signatures or unsigned data already) goes to Build.
// TestSignEventAgreesWithBuild and FuzzSignEvent hold the two to the same
// bytes and ID.
func SignEvent(verImpl gomatrixserverlib.IRoomVersion, eb *gomatrixserverlib.EventBuilder, now time.Time, origin spec.ServerName, keyID gomatrixserverlib.KeyID, key ed25519.PrivateKey) (gomatrixserverlib.PDU, error) {
	if idEncoding(verImpl) == nil || len(eb.Signature) > 0 || len(eb.Unsigned) > 0 {
		return eb.Build(now, origin, keyID, key)
	}
	if verImpl.DomainlessRoomIDs() && eb.Type == spec.MRoomCreate && eb.StateKey != nil && eb.RoomID != "" {
		return eb.Build(now, origin, keyID, key) // Build's error
	}
	ev := struct {
		gomatrixserverlib.EventBuilder
		OriginServerTS spec.Timestamp  `json:"origin_server_ts"`
		Origin         spec.ServerName `json:"origin"`
		PrevState      *[]string       `json:"prev_state,omitempty"` // [] on state events, as Build writes it
	}{EventBuilder: *eb, OriginServerTS: spec.AsTimestamp(now), Origin: origin}
	if ev.PrevEvents == nil {
		ev.PrevEvents = []string{}
	}
	if ev.AuthEvents == nil {
		ev.AuthEvents = []string{}
	}
	if ev.StateKey != nil {
		ev.PrevState = &[]string{}
	}
	raw, err := json.Marshal(&ev)
	if err != nil {
		return nil, err
	}
	// The content hash covers the event without hashes, signatures and
	// unsigned: all that is here. Numbers are checked as written, before
	// canonicalising rewrites any.
	canonical, err := gomatrixserverlib.EnforcedCanonicalJSON(raw, verImpl.Version())
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(canonical)
	hashed := withKey(canonical, "hashes", fmt.Appendf(nil, `{"sha256":"%s"}`, base64.RawStdEncoding.EncodeToString(sum[:])))
	// Signed, and hashed for the ID: the redacted event, canonical,
	// without signatures and unsigned (redacting keeps neither here).
	redacted, done, err := RedactCanonical(verImpl, hashed)
	if err == nil && !done {
		redacted, err = gomatrixserverlib.CanonicalJSON(redacted)
	}
	if err != nil {
		return nil, err
	}
	sigs, err := json.Marshal(map[spec.ServerName]map[gomatrixserverlib.KeyID]spec.Base64Bytes{
		origin: {keyID: ed25519.Sign(key, redacted)},
	})
	if err == nil {
		sigs, err = gomatrixserverlib.CanonicalJSON(sigs)
	}
	if err != nil {
		return nil, err
	}
	signed := withKey(hashed, "signatures", sigs)
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(eventIDOf(verImpl, sha256.Sum256(redacted)), signed, false)
	if err != nil {
		return nil, err
	}
	return pdu, gomatrixserverlib.CheckFields(pdu)
}

// withKey is obj, a canonical JSON object without key, with "key":value
// (canonical too) where canonical JSON puts it: before the first key that
// sorts after it. Canonicalising the whole event again to move a key
// appended at the end was a tenth of a native send.
func withKey(obj []byte, key string, value []byte) []byte {
	at := len(obj) - 1 // the closing brace
	gjson.ParseBytes(obj).ForEach(func(k, _ gjson.Result) bool {
		if k.Str > key {
			at = k.Index
			return false
		}
		return true
	})
	field := make([]byte, 0, len(key)+len(value)+4)
	field = append(append(append(append(field, '"'), key...), '"', ':'), value...)
	out := make([]byte, 0, len(obj)+len(field)+1)
	out = append(out, obj[:at]...)
	switch {
	case at < len(obj)-1: // before another key
		out = append(append(out, field...), ',')
	case len(obj) > 2: // after the last key
		out = append(append(out, ','), field...)
	default: // the only key
		out = append(out, field...)
	}
	return append(out, obj[at:]...)
}

// eventIDOf is the ID of an event whose reference hash is sum, in room
// versions where IDs are hashes ("" in others).
func eventIDOf(verImpl gomatrixserverlib.IRoomVersion, sum [sha256.Size]byte) string {
	if enc := idEncoding(verImpl); enc != nil {
		return "$" + enc.EncodeToString(sum[:])
	}
	return ""
}

// idEncoding is how a room version writes the hashes its event IDs are:
// nil in versions whose event IDs are no hashes.
func idEncoding(verImpl gomatrixserverlib.IRoomVersion) *base64.Encoding {
	if verImpl.EventFormat() != gomatrixserverlib.EventFormatV2 {
		return nil
	}
	switch verImpl.EventIDFormat() {
	case gomatrixserverlib.EventIDFormatV2:
		return base64.RawStdEncoding
	case gomatrixserverlib.EventIDFormatV3:
		return base64.RawURLEncoding
	}
	return nil
}
