// Package clientapi serves the Matrix Client-Server API: accounts, devices
// and access tokens, profiles, filters, account data, push rules, rooms
// (creation, membership, state, sending, redaction), the room directory,
// and minimal end-to-end key endpoints. /sync, /messages and /context are
// mounted here, behind this package's authentication, but served by the
// SyncHandlers the node passes in.
//
// It imports roomserver, storage, httputil and clientevent; it must not
// import syncapi or federation (sync reaches in through SyncHandlers and
// the Config hooks, never the other way round).
package clientapi

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"hearth/node/httputil"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

// Config is what the client API needs from its node.
type Config struct {
	// ServerName is this node's Matrix server name.
	ServerName string
	// OpenRegistration allows m.login.dummy registration.
	OpenRegistration bool
	// RegistrationFrom, when set, limits registration to the requests it
	// accepts (the native node: its own loopback interface).
	RegistrationFrom func(*http.Request) bool
	// Federation joins, invites and leaves across servers; nil: this
	// node's rooms only.
	Federation Federation
	// DefaultRoomVersion is used by /createRoom when none is asked for
	// ("" means 12).
	DefaultRoomVersion string
	// BcryptCost is the password hashing cost (0 means 10). Tests lower it.
	BcryptCost int
	// RateLimit throttles /register and /login per client IP.
	RateLimit RateLimit

	// Hooks for sync; each may be nil. They must not block for long.

	// OnAccountData is called after a user's account data changed, with
	// the new account data stream position.
	OnAccountData func(userID string, pos int64)
	// OnTyping is called when a user starts or stops typing in a room.
	OnTyping func(roomID, userID string, typing bool, timeout time.Duration)
	// OnReceipt is called for a read receipt (m.read or m.read.private).
	OnReceipt func(roomID, userID, receiptType, eventID, threadID string)
	// OnPresence is called when a user sets their presence.
	OnPresence func(userID, presence, statusMsg string)
}

// Federation is what the client API asks of other servers.
type Federation interface {
	// PerformJoin joins a room held elsewhere (by ID or alias), asking
	// the via servers (or the inviter's) to let the user in.
	PerformJoin(ctx context.Context, roomIDOrAlias, userID string, via []string) (roomID string, err error)
	// PerformInvite invites a user of another server.
	PerformInvite(ctx context.Context, roomID, inviter, invitee string) error
	// PerformLeave leaves (or rejects an invite to) a room this server
	// does not hold.
	PerformLeave(ctx context.Context, roomID, userID string, via []string) error
}

// SyncHandlers serve the endpoints that read the sync stream. The client
// API authenticates the request first: httputil.DeviceFrom(r.Context())
// is the caller, and r.PathValue("roomId") / r.PathValue("eventId") hold
// the path parameters (already unescaped).
type SyncHandlers interface {
	// HandleSync serves GET /sync.
	HandleSync(w http.ResponseWriter, r *http.Request)
	// HandleMessages serves GET /rooms/{roomId}/messages.
	HandleMessages(w http.ResponseWriter, r *http.Request)
	// HandleContext serves GET /rooms/{roomId}/context/{eventId}.
	HandleContext(w http.ResponseWriter, r *http.Request)
	// HandleEvent serves GET /rooms/{roomId}/event/{eventId}, under the
	// room's history visibility.
	HandleEvent(w http.ResponseWriter, r *http.Request)
	// HandleSlidingSync serves POST /_matrix/client/unstable/
	// org.matrix.simplified_msc3575/sync (MSC4186).
	HandleSlidingSync(w http.ResponseWriter, r *http.Request)
}

// API is the Client-Server API.
type API struct {
	cfg   Config
	db    *storage.DB
	rs    *roomserver.Roomserver
	sync  SyncHandlers
	mux   *http.ServeMux
	auth  *tokenCache
	uia   *uiaSessions
	limit *rateLimiter

	presenceMu sync.Mutex
	presence   map[string]presenceState
}

// New builds the client API. The caller must have run db.MigrateAccounts
// and db.MigrateUserData. sync may be nil (the sync endpoints then answer
// M_UNRECOGNIZED).
func New(cfg Config, db *storage.DB, rs *roomserver.Roomserver, sync SyncHandlers) *API {
	if cfg.DefaultRoomVersion == "" {
		cfg.DefaultRoomVersion = string(gomatrixserverlib.RoomVersionV12)
	}
	if cfg.BcryptCost == 0 {
		cfg.BcryptCost = 10
	}
	return &API{
		cfg:      cfg,
		db:       db,
		rs:       rs,
		sync:     sync,
		auth:     newTokenCache(),
		uia:      newUIASessions(),
		limit:    newRateLimiter(cfg.RateLimit),
		presence: map[string]presenceState{},
	}
}

// handler is the shape of most endpoints: it returns the 200 answer's
// body, or an error (a *httputil.Error, an *answer, or anything else,
// which becomes M_UNKNOWN 500). dev is nil on unauthenticated endpoints.
type handler func(r *http.Request, dev *httputil.Device) (any, error)

// answer is a non-200 answer with a body of its own (the user-interactive
// auth 401s).
type answer struct {
	status int
	body   any
}

func (a *answer) Error() string { return http.StatusText(a.status) }

// Versioned API paths are served under both prefixes: r0 is what older
// clients still call, and costs nothing to keep.
var prefixes = []string{"/_matrix/client/v3", "/_matrix/client/r0"}

const catchAll = "/_matrix/client/"

// Register mounts every endpoint on mux.
func (a *API) Register(mux *http.ServeMux) {
	a.mux = mux
	mux.HandleFunc("GET /_matrix/client/versions", a.wrap(a.versions, false))
	a.registerAccount(mux)
	a.registerUserData(mux)
	a.registerPushRules(mux)
	a.registerRooms(mux)
	a.registerDirectory(mux)
	a.registerEphemeral(mux)
	a.registerKeys(mux)
	a.registerSync(mux)
	mux.HandleFunc(catchAll, a.unrecognized)
}

// route registers h for method and path under each version prefix.
func (a *API) route(mux *http.ServeMux, method, path string, h handler, authed bool) {
	hf := a.wrap(h, authed)
	for _, p := range prefixes {
		mux.HandleFunc(method+" "+p+path, hf)
	}
}

func (a *API) registerSync(mux *http.ServeMux) {
	if a.sync == nil {
		return
	}
	for _, p := range prefixes {
		mux.HandleFunc("GET "+p+"/sync", a.authRaw(a.sync.HandleSync))
		mux.HandleFunc("GET "+p+"/rooms/{roomId}/messages", a.authRaw(a.sync.HandleMessages))
		mux.HandleFunc("GET "+p+"/rooms/{roomId}/context/{eventId}", a.authRaw(a.sync.HandleContext))
		mux.HandleFunc("GET "+p+"/rooms/{roomId}/event/{eventId}", a.authRaw(a.sync.HandleEvent))
	}
	mux.HandleFunc("POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync", a.authRaw(a.sync.HandleSlidingSync))
}

// wrap turns a handler into an http.HandlerFunc: CORS headers, the access
// token check, panics answered as M_UNKNOWN, errors as Matrix errors.
func (a *API) wrap(h handler, authed bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		setCORS(w.Header())
		defer recoverTo(w, r)
		var dev *httputil.Device
		if authed {
			var err error
			if dev, err = a.authenticate(r); err != nil {
				writeAuthError(w, r, err)
				return
			}
		}
		body, err := h(r, dev)
		if err != nil {
			if ans, ok := err.(*answer); ok {
				httputil.WriteJSON(w, ans.status, ans.body)
				return
			}
			httputil.WriteError(w, r, err)
			return
		}
		httputil.WriteJSON(w, http.StatusOK, body)
	}
}

// authRaw authenticates a plain http.HandlerFunc and puts the device in
// the request's context.
func (a *API) authRaw(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		setCORS(w.Header())
		defer recoverTo(w, r)
		dev, err := a.authenticate(r)
		if err != nil {
			writeAuthError(w, r, err)
			return
		}
		h(w, r.WithContext(httputil.WithDevice(r.Context(), dev)))
	}
}

func recoverTo(w http.ResponseWriter, r *http.Request) {
	if v := recover(); v != nil {
		if v == http.ErrAbortHandler {
			panic(v)
		}
		httputil.WriteError(w, r, &panicError{v})
	}
}

type panicError struct{ v any }

func (p *panicError) Error() string { return "panic: " + strings.TrimSpace(toString(p.v)) }

func toString(v any) string {
	switch x := v.(type) {
	case error:
		return x.Error()
	case string:
		return x
	}
	return "unknown value"
}

func setCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Origin, X-Requested-With, Content-Type, Accept, Authorization")
}

// unrecognized answers what no endpoint matched: CORS preflights get an
// empty 200, a known path with the wrong method M_UNRECOGNIZED 405, and
// anything else M_UNRECOGNIZED 404.
func (a *API) unrecognized(w http.ResponseWriter, r *http.Request) {
	setCORS(w.Header())
	if r.Method == http.MethodOptions {
		httputil.WriteJSON(w, http.StatusOK, struct{}{})
		return
	}
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := a.mux.Handler(probe); pattern != "" && pattern != catchAll {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		httputil.WriteError(w, r, httputil.Unrecognized(http.StatusMethodNotAllowed))
		return
	}
	httputil.WriteError(w, r, httputil.Unrecognized(http.StatusNotFound))
}
