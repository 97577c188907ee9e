package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"

	"hearth/node/httputil"
	"hearth/node/roomserver"
)

// maxBody bounds an inbound request body: a transaction of 50 PDUs of at
// most 64 KiB each, and 100 EDUs, with room to spare.
const maxBody = 8 << 20

// handler is an authenticated federation endpoint: origin is the server
// that signed the request (and, when the transport names one, the peer it
// came from); body is the request's verified content.
type handler func(r *http.Request, origin string, body []byte) (any, error)

func (f *Federation) routes() {
	m := http.NewServeMux()
	f.mux = m
	m.HandleFunc("GET /_matrix/federation/v1/version", f.handleVersion)
	m.HandleFunc("GET /_matrix/key/v2/server", f.handleServerKeys)
	m.HandleFunc("GET /_matrix/key/v2/server/{keyId}", f.handleServerKeys)

	const v1, v2 = "/_matrix/federation/v1", "/_matrix/federation/v2"
	routes := map[string]handler{
		"PUT " + v1 + "/send/{txnId}":                  f.handleSend,
		"GET " + v1 + "/make_join/{roomId}/{userId}":   f.handleMakeJoin,
		"PUT " + v2 + "/send_join/{roomId}/{eventId}":  f.handleSendJoin,
		"GET " + v1 + "/make_leave/{roomId}/{userId}":  f.handleMakeLeave,
		"PUT " + v2 + "/send_leave/{roomId}/{eventId}": f.handleSendLeave,
		"PUT " + v2 + "/invite/{roomId}/{eventId}":     f.handleInvite,
		"GET " + v1 + "/state/{roomId}":                f.handleState,
		"GET " + v1 + "/state_ids/{roomId}":            f.handleStateIDs,
		"GET " + v1 + "/event/{eventId}":               f.handleEvent,
		"GET " + v1 + "/event_auth/{roomId}/{eventId}": f.handleEventAuth,
		"GET " + v1 + "/backfill/{roomId}":             f.handleBackfill,
		"POST " + v1 + "/get_missing_events/{roomId}":  f.handleGetMissingEvents,
		"GET " + v1 + "/query/directory":               f.handleQueryDirectory,
		"GET " + v1 + "/query/profile":                 f.handleQueryProfile,
		"GET " + v1 + "/user/devices/{userId}":         f.handleUserDevices,
		"POST " + v1 + "/user/keys/query":              f.handleKeysQuery,
		"POST " + v1 + "/user/keys/claim":              f.handleKeysClaim,
	}
	for pattern, h := range routes {
		m.Handle(pattern, f.authed(f.aclChecked(h)))
	}
	m.HandleFunc("/_matrix/", func(w http.ResponseWriter, r *http.Request) {
		httputil.WriteError(w, r, httputil.Unrecognized(http.StatusNotFound))
	})
}

// authed checks a request's X-Matrix signature (and that its origin is
// the peer the transport authenticated) before running h.
func (f *Federation) authed(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				httputil.WriteError(w, r, httputil.TooLarge("request body too large"))
			} else {
				httputil.WriteError(w, r, httputil.BadJSON("could not read body"))
			}
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		verifier := f.cfg.Verifier
		peer, fromPeer := "", false
		if f.cfg.RemotePeer != nil {
			peer, fromPeer = f.cfg.RemotePeer(r)
		}
		if fromPeer {
			verifier = peerVouched{peer: peer, next: verifier}
		}
		req, resp := fclient.VerifyHTTPRequest(r, time.Now(), f.cfg.ServerName, nil, verifier)
		if req == nil {
			msg := "request authentication failed"
			if b, err := json.Marshal(resp.JSON); err == nil {
				var m struct {
					Message string `json:"message"`
				}
				if json.Unmarshal(b, &m) == nil && m.Message != "" {
					msg = m.Message
				}
			}
			switch resp.Code {
			case http.StatusUnauthorized:
				httputil.WriteError(w, r, httputil.Errf(401, "M_UNAUTHORIZED", msg))
			case http.StatusBadRequest:
				httputil.WriteError(w, r, httputil.BadJSON(msg))
			default:
				httputil.WriteError(w, r, httputil.Errf(resp.Code, "M_UNKNOWN", msg))
			}
			return
		}
		origin := string(req.Origin())
		if fromPeer && peer != origin {
			f.log.Warn("X-Matrix origin is not the connected peer", "origin", origin, "peer", peer)
			httputil.WriteError(w, r, httputil.Forbidden("the request's origin is not the peer it came from"))
			return
		}
		f.peerOnline(origin)
		v, err := h(r, origin, req.Content())
		var ve *versionError
		if errors.As(err, &ve) {
			httputil.WriteJSON(w, http.StatusBadRequest, map[string]string{
				"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": ve.Error(), "room_version": ve.Version,
			})
			return
		}
		if err != nil {
			httputil.WriteError(w, r, matrixError(err))
			return
		}
		if raw, ok := v.(json.RawMessage); ok {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
			w.WriteHeader(http.StatusOK)
			w.Write(raw)
			return
		}
		httputil.WriteJSON(w, http.StatusOK, v)
	})
}

// peerVouched is the Verifier for a request that came over a connection
// the transport authenticated as peer. Peer's X-Matrix signature would be
// checked against the key that authenticated the connection (a server's
// name is its libp2p key, see p2p/identity), whose encryption keeps the
// request whole and unreplayed on the way: checking it again proves
// nothing more, and costs an Ed25519 verification (half a millisecond in
// the browser) on every transaction. Another server's signature is
// checked, and the request then refused: it is not the peer's.
type peerVouched struct {
	peer string
	next gomatrixserverlib.JSONVerifier
}

func (v peerVouched) VerifyJSONs(ctx context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	if len(reqs) == 1 && string(reqs[0].ServerName) == v.peer {
		return make([]gomatrixserverlib.VerifyJSONResult, 1), nil
	}
	return v.next.VerifyJSONs(ctx, reqs)
}

// matrixError maps the roomserver's errors to Matrix errors; anything
// else stays as it is (a Matrix error already, or a 500).
func matrixError(err error) error {
	var me *httputil.Error
	if errors.As(err, &me) {
		return me
	}
	var fe *roomserver.ForbiddenError
	var be *roomserver.BadEventError
	var re *roomserver.RejectedError
	var ue *roomserver.UnsupportedVersionError
	switch {
	case errors.Is(err, roomserver.ErrRoomNotFound):
		return httputil.NotFound("unknown room")
	case errors.Is(err, roomserver.ErrEventNotFound):
		return httputil.NotFound("unknown event")
	case errors.Is(err, roomserver.ErrTooLarge):
		return httputil.TooLarge("event too large")
	case errors.As(err, &fe):
		return httputil.Forbidden(fe.Reason)
	case errors.As(err, &re):
		return httputil.Forbidden(re.Reason)
	case errors.As(err, &be):
		return httputil.BadJSON(be.Reason)
	case errors.As(err, &ue):
		return httputil.Errf(400, "M_UNSUPPORTED_ROOM_VERSION", ue.Error())
	}
	return err
}

// versionError is M_INCOMPATIBLE_ROOM_VERSION: the room's version is not
// one the requesting server (make_join) or this server (invite) runs.
type versionError struct{ Version string }

func (e *versionError) Error() string { return "room version " + e.Version + " is not supported" }

func (f *Federation) handleVersion(w http.ResponseWriter, r *http.Request) {
	httputil.WriteJSON(w, http.StatusOK, map[string]any{
		"server": map[string]string{"name": "Hearth", "version": "0.1"},
	})
}
