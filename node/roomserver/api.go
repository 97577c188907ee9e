// Package roomserver owns rooms: event input (local and remote), auth with
// gomatrixserverlib's rules, state storage as snapshots of shared blocks,
// state resolution, and the output stream that sync and federation follow.
//
// Input is serialised per room by one worker each (strict order within a
// room, no head-of-line blocking between rooms); an event is acknowledged
// only once committed or rejected. It imports storage and
// gomatrixserverlib; it must not import clientapi, syncapi or federation.
package roomserver

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Config is what the roomserver needs from its node.
type Config struct {
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
	// DefaultRoomVersion is used by CreateRoom when none is asked for.
	DefaultRoomVersion gomatrixserverlib.RoomVersion
	// Verifier checks other servers' signatures (Hearth's decodes the key
	// from the server name).
	Verifier gomatrixserverlib.JSONVerifier
	// VerifyWidth is how many events Verify checks at once; 0: one per
	// core (GOMAXPROCS). A Verifier that waits rather than computes (the
	// browser's WebCrypto works on its own threads) wants more.
	VerifyWidth int
	// Checker, when set, checks large batches of received events (a page
	// of history, a room's state on joining) on other threads: the
	// browser's. Nil: Verify checks them on this process's cores.
	Checker Checker
	// OnOutput is called after each commit with the events that entered
	// the stream, in stream order. It must not block for long.
	OnOutput func([]Output)
}

// Output is one event entering a room's stream: its stream position and
// the state event IDs it adds to and removes from the room's current
// state. Consumers advance state only by these, never by replaying.
type Output struct {
	Pos     int64
	RoomID  string
	Event   gomatrixserverlib.PDU
	Adds    []string
	Removes []string
	// The room's and the event's numeric IDs, as the stream stores them.
	RoomNID, EventNID int64
}

// NewEvent is what a local user asks to send.
type NewEvent struct {
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	Redacts  string
	// TxnDevice and TxnID, when set, make the send idempotent: the same
	// pair in the same room returns the first event's ID.
	TxnDevice string
	TxnID     string
}

// MaxEventSize is the spec's limit on an event's canonical JSON.
const MaxEventSize = 65536

// Errors a caller maps to Matrix error codes.
var (
	ErrRoomNotFound  = errors.New("roomserver: room not found")
	ErrEventNotFound = errors.New("roomserver: event not found")
	ErrTooLarge      = errors.New("roomserver: event, type or state key too large")
)

// ForbiddenError is an event refused by the auth rules.
type ForbiddenError struct{ Reason string }

func (e *ForbiddenError) Error() string { return "roomserver: forbidden: " + e.Reason }

// BadEventError is an event that cannot be built or parsed.
type BadEventError struct{ Reason string }

func (e *BadEventError) Error() string { return "roomserver: bad event: " + e.Reason }

// UnsupportedVersionError is a room version this node cannot run.
type UnsupportedVersionError struct{ Version string }

func (e *UnsupportedVersionError) Error() string {
	return fmt.Sprintf("roomserver: unsupported room version %q", e.Version)
}

// Membership values.
const (
	Join   = spec.Join
	Invite = spec.Invite
	Leave  = spec.Leave
	Ban    = spec.Ban
	Knock  = spec.Knock
)

// StableVersions are the room versions this node runs fully; the first
// is the default for new rooms.
var StableVersions = []gomatrixserverlib.RoomVersion{
	gomatrixserverlib.RoomVersionV11,
	gomatrixserverlib.RoomVersionV10,
}

// UnstableVersions run, but not completely: the pinned gomatrixserverlib's
// state resolution v2.1 (room version 12) starts from an empty state and
// then cannot find the create event, which v12 leaves out of auth_events,
// so a fork in a v12 room resolves wrongly. Rooms of these versions are
// created only on request.
var UnstableVersions = []gomatrixserverlib.RoomVersion{
	gomatrixserverlib.RoomVersionV12,
}

// SupportedVersions are every room version this node runs.
var SupportedVersions = append(append([]gomatrixserverlib.RoomVersion{}, StableVersions...), UnstableVersions...)
