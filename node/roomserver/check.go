package roomserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// Checker checks batches of other servers' events on other threads than
// the roomserver's: in the browser, where Go runs on one thread, a pool
// of workers each running this same program (see CheckEvents).
type Checker interface {
	// Check checks events of one room version as CheckEvents does and
	// returns what it found for each, in order. An error means it checked
	// none of them (no worker could): the roomserver checks them itself.
	Check(ctx context.Context, version gomatrixserverlib.RoomVersion, events [][]byte) ([]Checked, error)
}

// Checked is what checking one event found, in a form that can cross to
// another thread and back.
type Checked struct {
	// Refused is why the event was refused; "" if it passed.
	Refused string
	// EventID is the event's ID (a hash of its redacted form).
	EventID string
	// JSON is the event as accepted: canonical, without the keys servers
	// must not send (unsigned, …), and redacted when its content hash did
	// not match (Redacted).
	JSON     []byte
	Redacted bool
}

// checkerMin is the smallest batch Verify hands to the Checker: a few
// events cost less to check here than to post to another thread and back.
const checkerMin = 16

// CheckEvents parses events of one room version from other servers,
// checks their hashes and signatures and works out their IDs, width at
// once: the work a Checker does on its thread. Events are refused as
// checkEvent refuses them.
func CheckEvents(ctx context.Context, version gomatrixserverlib.RoomVersion, events [][]byte, verifier gomatrixserverlib.JSONVerifier, width int) []Checked {
	out := make([]Checked, len(events))
	verImpl, unsupported := supportedVersion(version)
	parallel(width, len(events), func(i int) {
		if unsupported != nil {
			out[i].Refused = unsupported.Error()
			return
		}
		c, err := checkEvent(ctx, verImpl, events[i], verifier)
		if err != nil {
			out[i].Refused = err.Error()
			return
		}
		out[i] = c
	})
	return out
}

// supportedVersion is the implementation of a room version this server
// takes events in.
func supportedVersion(version gomatrixserverlib.RoomVersion) (gomatrixserverlib.IRoomVersion, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil || !slices.Contains(SupportedVersions, version) {
		return nil, &UnsupportedVersionError{Version: string(version)}
	}
	return verImpl, nil
}

// checkEvent checks another server's event as gomatrixserverlib's
// NewEventFromUntrustedJSON and VerifyEventSignatures do: its JSON, its
// content hash (an event whose hash fails is redacted, as the spec says),
// and the signatures it must have. It returns the event as accepted, with
// its ID; parseChecked makes it an event and checks its fields.
//
// Most events take checkPlain's way, which never parses the event into
// gomatrixserverlib's struct: encoding/json's reflection was a quarter of
// a browser check worker's time, and the roomserver parses each checked
// event once more anyway (parseChecked). Every other event is checked by
// gomatrixserverlib itself (checkParsed).
func checkEvent(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, js []byte, verifier gomatrixserverlib.JSONVerifier) (Checked, error) {
	if len(js) > MaxEventSize {
		return Checked{}, ErrTooLarge
	}
	if verifier == nil {
		return Checked{}, errors.New("roomserver: no signature verifier configured")
	}
	if c, ok, err := checkPlain(ctx, verImpl, js, verifier); ok {
		return c, err
	}
	return checkParsed(ctx, verImpl, js, verifier)
}

// checkParsed is checkEvent through gomatrixserverlib's parsed event.
func checkParsed(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, js []byte, verifier gomatrixserverlib.JSONVerifier) (Checked, error) {
	pdu, err := verImpl.NewEventFromUntrustedJSON(js)
	if err == nil {
		err = unpanicked(func() { pdu.RoomID() })
	}
	if err != nil {
		return Checked{}, &BadEventError{Reason: err.Error()}
	}
	ctx, signed := WithSignedHash(ctx)
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, verifier, userIDForSender); err != nil {
		return Checked{}, &BadEventError{Reason: "signatures: " + err.Error()}
	}
	id := signedEventID(verImpl, signed)
	if id == "" {
		if err := unpanicked(func() { id = pdu.EventID() }); err != nil {
			return Checked{}, &BadEventError{Reason: err.Error()}
		}
	}
	return Checked{EventID: id, JSON: pdu.JSON(), Redacted: pdu.Redacted()}, nil
}

// strippedKeys are the keys NewEventFromUntrustedJSON takes out of an
// event before anything else (servers must not send them).
var strippedKeys = []string{"outlier", "destinations", "age_ts", "unsigned", "event_id"}

// maxPlainKeys is the most top-level keys a plain event has (events have
// a dozen): finding repeated keys among more would take quadratic time.
const maxPlainKeys = 32

// checkPlain checks, as checkParsed would, an event of a room version
// whose event IDs are hashes if it is plain: valid JSON whose top-level
// keys (at most maxPlainKeys) are each given once, in lower-case ASCII,
// with a type and a sender (and a membership event's state key) given as
// strings without escapes. For such an event what gjson reads is what
// encoding/json would read: the servers that must have signed it are
// its sender's, and for a membership event those memberSigners names.
// ok is false if the event is not plain: checkParsed then takes it as it
// comes.
func checkPlain(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, js []byte, verifier gomatrixserverlib.JSONVerifier) (c Checked, ok bool, err error) {
	if idEncoding(verImpl) == nil || verImpl.Version() == gomatrixserverlib.RoomVersionPseudoIDs {
		return c, false, nil
	}
	p, ok := readPlain(js)
	if !ok {
		return c, false, nil
	}
	if err := verImpl.CheckCanonicalJSON(js); err != nil {
		return c, true, &BadEventError{Reason: "not canonical JSON: " + err.Error()}
	}
	if p.strip {
		for _, key := range strippedKeys {
			if js, err = sjson.DeleteBytes(js, key); err != nil {
				return c, true, &BadEventError{Reason: err.Error()}
			}
		}
	}
	c.JSON = bytes.Clone(canonicalJSON(js))
	// What the servers signed is the redacted event, and so is what the
	// ID is the hash of.
	signedJSON, canonical, err := RedactCanonical(verImpl, c.JSON)
	if err != nil {
		return c, true, &BadEventError{Reason: err.Error()}
	}
	if !contentHashMatches(c.JSON) {
		if !canonical {
			signedJSON = canonicalJSON(signedJSON)
		}
		c.JSON, c.Redacted = signedJSON, true
	}
	servers, err := p.signers(verImpl, c.JSON)
	if err != nil {
		return c, true, &BadEventError{Reason: "signatures: " + err.Error()}
	}
	reqs := make([]gomatrixserverlib.VerifyJSONRequest, len(servers))
	ts := spec.Timestamp(gjson.GetBytes(c.JSON, "origin_server_ts").Uint())
	for i, s := range servers {
		reqs[i] = gomatrixserverlib.VerifyJSONRequest{ServerName: s, Message: signedJSON, AtTS: ts, ValidityCheckingFunc: verImpl.SignatureValidityCheck}
	}
	ctx, signed := WithSignedHash(ctx)
	res, err := verifier.VerifyJSONs(ctx, reqs)
	if err == nil && len(res) != len(reqs) {
		err = fmt.Errorf("%d answers for %d signatures", len(res), len(reqs))
	}
	if err != nil {
		return c, true, &BadEventError{Reason: "signatures: failed to verify JSONs: " + err.Error()}
	}
	for _, r := range res {
		if r.Error != nil {
			return c, true, &BadEventError{Reason: "signatures: " + r.Error.Error()}
		}
	}
	if c.EventID = signedEventID(verImpl, signed); c.EventID == "" {
		pdu, err := verImpl.NewEventFromTrustedJSON(c.JSON, c.Redacted)
		if err != nil {
			return c, true, &BadEventError{Reason: err.Error()}
		}
		c.EventID = pdu.EventID()
	}
	return c, true, nil
}

// plainEvent is what checkPlain reads of a plain event.
type plainEvent struct {
	typ, sender, stateKey string
	// strip: it has keys servers must not send (strippedKeys).
	strip bool
}

// readPlain reads a plain event (see checkPlain); ok is false if js is
// not one.
func readPlain(js []byte) (p plainEvent, ok bool) {
	if !gjson.ValidBytes(js) {
		return p, false
	}
	root := gjson.ParseBytes(js)
	if !root.IsObject() {
		return p, false
	}
	var typ, sender, stateKey gjson.Result
	var keys [maxPlainKeys]string
	seen, plain := keys[:0], true
	root.ForEach(func(k, v gjson.Result) bool {
		name, isPlain := plainKey(k.Raw)
		if !isPlain || len(seen) == maxPlainKeys || slices.Contains(seen, name) {
			plain = false
			return false
		}
		seen = append(seen, name)
		switch name {
		case "type":
			typ = v
		case "sender":
			sender = v
		case "state_key":
			stateKey = v
		default:
			p.strip = p.strip || slices.Contains(strippedKeys, name)
		}
		return true
	})
	if !plain || !plainString(typ) || !plainString(sender) || (typ.Str == spec.MRoomMember && !plainString(stateKey)) {
		return p, false
	}
	p.typ, p.sender, p.stateKey = typ.Str, sender.Str, stateKey.Str
	return p, true
}

// signers are the servers that must have signed the event, as
// VerifyEventSignatures asks them: its sender's, and for a membership
// event those memberSigners names. js is the event as accepted
// (redacted if its hash failed).
func (p plainEvent) signers(verImpl gomatrixserverlib.IRoomVersion, js []byte) ([]spec.ServerName, error) {
	user, err := userIDForSender(spec.RoomID{}, spec.SenderID(p.sender))
	if err != nil {
		return nil, fmt.Errorf("invalid sender userID: %w", err)
	}
	servers := []spec.ServerName{user.Domain()}
	if p.typ != spec.MRoomMember {
		return servers, nil
	}
	more, err := memberSigners(verImpl, js, p.stateKey)
	if err != nil {
		return nil, err
	}
	for _, s := range more {
		if !slices.Contains(servers, s) {
			servers = append(servers, s)
		}
	}
	return servers, nil
}

// memberSigners are the servers besides the sender's that must have
// signed a membership event, as VerifyEventSignatures asks them: an
// invite's invitee's, and the authorising server of a restricted join.
// The content is read as gomatrixserverlib reads it (encoding/json), from
// the event as accepted (js: redacted if its hash failed).
func memberSigners(verImpl gomatrixserverlib.IRoomVersion, js []byte, stateKey string) ([]spec.ServerName, error) {
	content := []byte(gjson.GetBytes(js, "content").Raw)
	var m struct {
		Membership string `json:"membership"`
	}
	if err := json.Unmarshal(content, &m); err != nil {
		return nil, fmt.Errorf("failed to get membership of membership event: %w", err)
	}
	switch m.Membership {
	case spec.Invite:
		_, server, err := gomatrixserverlib.SplitID('@', stateKey)
		if err != nil {
			return nil, fmt.Errorf("failed to split state key: %w", err)
		}
		return []spec.ServerName{server}, nil
	case spec.Join:
		server, err := verImpl.RestrictedJoinServername(content)
		if err != nil || server == "" {
			return nil, err
		}
		return []spec.ServerName{server}, nil
	}
	return nil, nil
}

// plainKey is the name of a top-level key given as raw JSON, and whether
// it is plain: lower-case ASCII letters, digits, '.', '-' and '_' (not
// first), with no escapes. Keys encoding/json could fold onto a field of
// an event (upper case, the Kelvin sign, the long s) are not.
func plainKey(raw string) (string, bool) {
	if len(raw) < 3 || raw[0] != '"' || raw[len(raw)-1] != '"' || raw[1] == '_' {
		return "", false
	}
	name := raw[1 : len(raw)-1]
	for i := 0; i < len(name); i++ {
		if b := name[i]; !('a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '_' || b == '.' || b == '-') {
			return "", false
		}
	}
	return name, true
}

// plainString tells whether v is a JSON string without escapes, which
// gjson and encoding/json read alike.
func plainString(v gjson.Result) bool {
	return v.Type == gjson.String && len(v.Raw) == len(v.Str)+2
}

// contentHashMatches tells whether an event's content hash is the hash of
// its canonical JSON without signatures, unsigned data and hashes, as
// gomatrixserverlib's parsing checks it. The event is canonical, with
// each key once: the hashed form is its bytes without those keys.
func contentHashMatches(canonical []byte) bool {
	var want spec.Base64Bytes
	hashable := make([]byte, 1, len(canonical))
	hashable[0] = '{'
	gjson.ParseBytes(canonical).ForEach(func(k, v gjson.Result) bool {
		switch k.Raw {
		case `"hashes"`:
			if err := want.Decode(v.Get("sha256").Str); err != nil {
				want = nil
			}
		case `"signatures"`, `"unsigned"`:
		default:
			hashable = appendMember(hashable, k.Raw, v.Raw)
		}
		return true
	})
	sum := sha256.Sum256(append(hashable, '}'))
	return want != nil && bytes.Equal(sum[:], want)
}

// signedEventID is the ID of an event whose redacted form the verifiers
// checked signatures over, from the hash they recorded (see SignedHash):
// "" if none did.
func signedEventID(verImpl gomatrixserverlib.IRoomVersion, signed *SignedHash) string {
	if sum, ok := signed.Sum(); ok {
		return eventIDOf(verImpl, sum)
	}
	return ""
}

// parseChecked makes an event checkEvent accepted into the event the
// roomserver stores, with the ID the check worked out, and checks its
// fields (IDs, sizes) as gomatrixserverlib's parsing does.
func parseChecked(verImpl gomatrixserverlib.IRoomVersion, c Checked) (gomatrixserverlib.PDU, error) {
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(c.EventID, c.JSON, c.Redacted)
	if err == nil {
		err = unpanicked(func() { pdu.RoomID() })
	}
	if err == nil {
		err = gomatrixserverlib.CheckFields(pdu)
	}
	if err != nil {
		return nil, &BadEventError{Reason: err.Error()}
	}
	return pdu, nil
}

// ParseUntrusted parses an event from another server as
// gomatrixserverlib's NewEventFromUntrustedJSON does, without checking its
// signatures (Verify does that): for reading what the event says before
// it is verified. It also refuses what gomatrixserverlib parses but then
// panics on when asked for the event's room or ID: a room ID that does
// not parse ("!:"), content that is not an object (its ID needs it
// redacted). Unchecked, one such event from another server would crash
// the node. The ID is worked out here, once: the event keeps it.
func ParseUntrusted(verImpl gomatrixserverlib.IRoomVersion, js []byte) (gomatrixserverlib.PDU, error) {
	pdu, err := verImpl.NewEventFromUntrustedJSON(js)
	if err == nil {
		err = unpanicked(func() { pdu.RoomID(); pdu.EventID() })
	}
	if err != nil {
		return nil, err
	}
	return pdu, nil
}

// unpanicked runs f, which asks a parsed event for what gomatrixserverlib
// panics on when the event is malformed, and reports a panic as an error.
func unpanicked(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	f()
	return nil
}

// verifyElsewhere is Verify through the Checker. It reports false when
// the Checker could not take the events: Verify then checks them all
// itself, over whatever this filled in.
func (rs *Roomserver) verifyElsewhere(ctx context.Context, evs []InputEvent, out []Verified) bool {
	type batch struct {
		verImpl gomatrixserverlib.IRoomVersion
		idx     []int
		events  [][]byte
	}
	byVersion := map[gomatrixserverlib.RoomVersion]*batch{}
	for i, in := range evs {
		out[i].InputEvent = in
		verImpl, err := rs.precheck(ctx, in)
		if err != nil {
			out[i].Err = err
			continue
		}
		version := verImpl.Version()
		b := byVersion[version]
		if b == nil {
			b = &batch{verImpl: verImpl}
			byVersion[version] = b
		}
		b.idx, b.events = append(b.idx, i), append(b.events, in.JSON)
	}
	for version, b := range byVersion {
		checked, err := rs.cfg.Checker.Check(ctx, version, b.events)
		if err == nil && len(checked) != len(b.events) {
			err = fmt.Errorf("%d answers for %d events", len(checked), len(b.events))
		}
		if err != nil {
			log.Warn("checking events on other threads failed: checking them here", "err", err)
			return false
		}
		for j, c := range checked {
			i := b.idx[j]
			if c.Refused != "" {
				out[i].Err = &BadEventError{Reason: c.Refused}
				continue
			}
			// The Checker is this program on another thread: what it
			// accepted, with the ID it worked out, is taken as is.
			out[i].pdu, out[i].Err = parseChecked(b.verImpl, c)
		}
	}
	return true
}
