package clientapi

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"hearth/node/httputil"
	"hearth/node/storage"
)

// Access tokens are 32 random bytes; the database keeps only their
// SHA-256, and this cache maps that hash to the device so that an
// authenticated request costs no database read. Every path that deletes
// or replaces a token (logout, device deletion, password change, a login
// reusing a device ID) forgets the hash here.
type tokenCache struct {
	mu sync.RWMutex
	m  map[string]*httputil.Device
}

// maxCachedTokens bounds the cache; past it the cache starts over (a miss
// costs one indexed read).
const maxCachedTokens = 100_000

func newTokenCache() *tokenCache { return &tokenCache{m: map[string]*httputil.Device{}} }

func (c *tokenCache) get(hash string) *httputil.Device {
	c.mu.RLock()
	d := c.m[hash]
	c.mu.RUnlock()
	return d
}

func (c *tokenCache) put(hash string, d *httputil.Device) {
	c.mu.Lock()
	if len(c.m) >= maxCachedTokens {
		c.m = map[string]*httputil.Device{}
	}
	c.m[hash] = d
	c.mu.Unlock()
}

func (c *tokenCache) forget(hashes ...string) {
	c.mu.Lock()
	for _, h := range hashes {
		delete(c.m, h)
	}
	c.mu.Unlock()
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// newToken returns a fresh access token.
func newToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand panics instead)
	return "hth_" + base64.RawURLEncoding.EncodeToString(b)
}

// newDeviceID returns a fresh device ID: ten upper-case letters, like
// other homeservers hand out.
func newDeviceID() string {
	b := make([]byte, 10)
	rand.Read(b)
	for i := range b {
		b[i] = 'A' + b[i]%26
	}
	return string(b)
}

// accessToken extracts the token from the Authorization header or the
// deprecated access_token query parameter.
func accessToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
			return strings.TrimSpace(h[7:])
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

var errMissingToken = errors.New("missing token")

// authenticate returns the calling device.
func (a *API) authenticate(r *http.Request) (*httputil.Device, error) {
	tok := accessToken(r)
	if tok == "" {
		return nil, errMissingToken
	}
	h := hashToken(tok)
	if d := a.auth.get(h); d != nil {
		return d, nil
	}
	sd, err := a.db.DeviceByToken(r.Context(), h)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.UnknownToken("unknown access token")
	}
	if err != nil {
		return nil, err
	}
	d := &httputil.Device{UserID: sd.UserID, DeviceID: sd.DeviceID, AccessToken: tok}
	a.auth.put(h, d)
	return d, nil
}

// writeAuthError answers a failed token check: the 401s carry
// soft_logout, which clients read to decide whether to drop their data.
func writeAuthError(w http.ResponseWriter, r *http.Request, err error) {
	var me *httputil.Error
	switch {
	case errors.Is(err, errMissingToken):
		me = httputil.MissingToken("missing access token")
	case errors.As(err, &me) && me.Code == "M_UNKNOWN_TOKEN":
	default:
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, me.Status, struct {
		*httputil.Error
		SoftLogout bool `json:"soft_logout"`
	}{me, false})
}

// issueToken creates (or re-keys) a device and returns its new token.
func (a *API) issueToken(r *http.Request, userID, deviceID string, displayName *string) (token, devID string, err error) {
	if deviceID == "" {
		deviceID = newDeviceID()
	}
	token = newToken()
	old, err := a.db.CreateDevice(r.Context(), userID, storage.NewDevice{
		DeviceID: deviceID, DisplayName: displayName, TokenHash: hashToken(token), IP: clientIP(r),
	})
	if err != nil {
		return "", "", err
	}
	if old != "" {
		a.auth.forget(old)
	}
	return token, deviceID, nil
}

// User-interactive authentication. Sessions live in memory: a restart
// only makes a client start its flow again.
type uiaSessions struct {
	mu sync.Mutex
	m  map[string]uiaSession
}

type uiaSession struct {
	userID  string // "" for registration
	created time.Time
}

const uiaTTL = 10 * time.Minute

func newUIASessions() *uiaSessions { return &uiaSessions{m: map[string]uiaSession{}} }

func (u *uiaSessions) start(userID string) string {
	b := make([]byte, 16)
	rand.Read(b)
	id := base64.RawURLEncoding.EncodeToString(b)
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, s := range u.m {
		if now.Sub(s.created) > uiaTTL {
			delete(u.m, k)
		}
	}
	u.m[id] = uiaSession{userID: userID, created: now}
	return id
}

// valid says whether a session exists for the user (and drops it: a
// session completes once).
func (u *uiaSessions) finish(id, userID string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	s, ok := u.m[id]
	if !ok || s.userID != userID || time.Since(s.created) > uiaTTL {
		return false
	}
	delete(u.m, id)
	return true
}

// authDict is the "auth" object of a user-interactive request.
type authDict struct {
	Type       string          `json:"type"`
	Session    string          `json:"session"`
	Password   string          `json:"password"`
	User       string          `json:"user"`
	Identifier *userIdentifier `json:"identifier"`
}

type userIdentifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

// uiaChallenge is the 401 that starts (or restarts) a flow.
func (a *API) uiaChallenge(userID, stage, session string, fail *httputil.Error) error {
	if session == "" {
		session = a.uia.start(userID)
	}
	body := map[string]any{
		"flows":   []any{map[string]any{"stages": []string{stage}}},
		"params":  map[string]any{},
		"session": session,
	}
	if fail != nil {
		body["errcode"] = fail.Code
		body["error"] = fail.Message
		body["completed"] = []string{}
	}
	return &answer{status: http.StatusUnauthorized, body: body}
}

// requirePassword runs the m.login.password stage for dev's user: nil
// once auth proves the password, else the 401 to answer.
func (a *API) requirePassword(r *http.Request, dev *httputil.Device, auth *authDict) error {
	if auth == nil || auth.Type == "" {
		return a.uiaChallenge(dev.UserID, "m.login.password", "", nil)
	}
	session := auth.Session
	if session == "" {
		session = a.uia.start(dev.UserID)
	}
	if auth.Type != "m.login.password" {
		return a.uiaChallenge(dev.UserID, "m.login.password", session, httputil.Errf(400, "M_UNRECOGNIZED", "unsupported auth type"))
	}
	user := auth.User
	if auth.Identifier != nil {
		if auth.Identifier.Type != "m.id.user" {
			return a.uiaChallenge(dev.UserID, "m.login.password", session, httputil.Errf(400, "M_UNRECOGNIZED", "unsupported identifier type"))
		}
		user = auth.Identifier.User
	}
	if user != "" && a.qualify(user) != dev.UserID {
		return a.uiaChallenge(dev.UserID, "m.login.password", session, httputil.Forbidden("auth is for another user"))
	}
	ok, err := a.checkPassword(r, dev.UserID, auth.Password)
	if err != nil {
		return err
	}
	if !ok {
		return a.uiaChallenge(dev.UserID, "m.login.password", session, httputil.Forbidden("invalid password"))
	}
	a.uia.finish(session, dev.UserID)
	return nil
}
