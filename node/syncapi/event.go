package syncapi

import (
	"errors"
	"net/http"

	"hearth/node/httputil"
	"hearth/node/storage"
)

// HandleEvent serves GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}:
// one event, if the user may see it under history visibility. Anything
// else, including rooms the user cannot read, is M_NOT_FOUND: nobody
// learns an event exists that they may not see.
func (s *Syncer) HandleEvent(w http.ResponseWriter, r *http.Request) {
	dev := httputil.DeviceFrom(r.Context())
	if dev == nil {
		httputil.WriteError(w, r, httputil.MissingToken("missing access token"))
		return
	}
	rd, err := s.historyReader(r.Context(), dev)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	defer rd.close()
	notFound := httputil.NotFound("event not found")
	rm, acc, err := rd.roomAccess(r.PathValue("roomId"))
	var herr *httputil.Error
	if errors.As(err, &herr) && herr.Code == "M_FORBIDDEN" {
		httputil.WriteError(w, r, notFound)
		return
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	se, roomNID, rejected, err := rd.snap.EventByID(r.PathValue("eventId"))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (roomNID != rm.nid || rejected || se.SnapshotNID == 0)) {
		httputil.WriteError(w, r, notFound)
		return
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ev := rd.event(rm, &se)
	if ev == nil {
		httputil.WriteError(w, r, notFound)
		return
	}
	ok, err := rd.canSee(rm, acc, ev)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if !ok {
		httputil.WriteError(w, r, notFound)
		return
	}
	js, err := rd.withTxnIDs(rm, []*event{ev})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	writeRaw(w, js[0])
}
