package roomserver

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
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
// parseUntrusted refuses them.
func CheckEvents(ctx context.Context, version gomatrixserverlib.RoomVersion, events [][]byte, verifier gomatrixserverlib.JSONVerifier, width int) []Checked {
	out := make([]Checked, len(events))
	verImpl, unsupported := supportedVersion(version)
	parallel(width, len(events), func(i int) {
		if unsupported != nil {
			out[i].Refused = unsupported.Error()
			return
		}
		pdu, id, err := checkEvent(ctx, verImpl, events[i], verifier)
		if err != nil {
			out[i].Refused = err.Error()
			return
		}
		if id == "" {
			id = pdu.EventID()
		}
		out[i] = Checked{EventID: id, JSON: pdu.JSON(), Redacted: pdu.Redacted()}
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

// checkEvent parses another server's event and checks its hashes and
// signatures, and returns its ID if the signature check gave it ("" if
// not). An event whose content hash fails is redacted by parsing, as the
// spec says; a bad signature is refused.
func checkEvent(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, js []byte, verifier gomatrixserverlib.JSONVerifier) (pdu gomatrixserverlib.PDU, id string, err error) {
	if len(js) > MaxEventSize {
		return nil, "", ErrTooLarge
	}
	if pdu, err = verImpl.NewEventFromUntrustedJSON(js); err != nil {
		return nil, "", &BadEventError{Reason: err.Error()}
	}
	if verifier == nil {
		return nil, "", errors.New("roomserver: no signature verifier configured")
	}
	// The verifier hashes what the ID is the hash of (see SignedHash):
	// taking the ID from there spares gomatrixserverlib redacting,
	// re-encoding and canonicalising the event once more (pdu.EventID).
	ctx, signed := WithSignedHash(ctx)
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, verifier, userIDForSender); err != nil {
		return nil, "", &BadEventError{Reason: "signatures: " + err.Error()}
	}
	if sum, ok := signed.Sum(); ok {
		id = eventIDOf(verImpl, sum)
	}
	return pdu, id, nil
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
			pdu, err := b.verImpl.NewEventFromTrustedJSONWithEventID(c.EventID, c.JSON, c.Redacted)
			if err != nil {
				out[i].Err = &BadEventError{Reason: err.Error()}
				continue
			}
			out[i].pdu = pdu
		}
	}
	return true
}
