package roomserver

import (
	"context"

	"github.com/matrix-org/gomatrixserverlib"
)

// Hold keeps a room's worker busy until release is called: what an
// input arriving meanwhile meets when the room is still storing a large
// batch.
func (rs *Roomserver) Hold(ctx context.Context, roomID string) (release func(), err error) {
	r, err := rs.worker(ctx, roomID)
	if err != nil {
		return nil, err
	}
	held, free := make(chan struct{}), make(chan struct{})
	req := &request{ctx: ctx, done: make(chan result, 1), read: func(*room) error {
		close(held)
		<-free
		return nil
	}}
	if err := r.enqueue(ctx, req); err != nil {
		return nil, err
	}
	<-held
	return func() { close(free); <-req.done }, nil
}

// CheckEvent is what Verify makes of one event from another server
// (checkEvent, then parseChecked), and whether checkPlain took it.
func CheckEvent(ctx context.Context, version gomatrixserverlib.RoomVersion, js []byte, verifier gomatrixserverlib.JSONVerifier) (pdu gomatrixserverlib.PDU, plain bool, err error) {
	verImpl, err := supportedVersion(version)
	if err != nil {
		return nil, false, err
	}
	_, plain, _ = checkPlain(ctx, verImpl, js, verifier)
	c, err := checkEvent(ctx, verImpl, js, verifier)
	if err != nil {
		return nil, plain, err
	}
	pdu, err = parseChecked(verImpl, c)
	return pdu, plain, err
}

// CanonicalJSON is canonicalJSON, and whether it found js canonical.
func CanonicalJSON(js []byte) (out []byte, already bool) {
	out = canonicalJSON(js)
	return out, len(out) > 0 && &out[0] == &js[0]
}
