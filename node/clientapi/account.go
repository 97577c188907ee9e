package clientapi

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"hearth/node/httputil"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

func (a *API) registerAccount(mux *http.ServeMux) {
	a.route(mux, "GET", "/capabilities", a.capabilities, true)
	a.route(mux, "POST", "/register", a.register, false)
	a.route(mux, "GET", "/register/available", a.registerAvailable, false)
	a.route(mux, "GET", "/login", a.loginFlows, false)
	a.route(mux, "POST", "/login", a.login, false)
	a.route(mux, "POST", "/logout", a.logout, true)
	a.route(mux, "POST", "/logout/all", a.logoutAll, true)
	a.route(mux, "GET", "/account/whoami", a.whoami, true)
	a.route(mux, "POST", "/account/password", a.changePassword, true)
	a.route(mux, "GET", "/account/3pid", a.threepids, true)
	a.route(mux, "GET", "/devices", a.listDevices, true)
	a.route(mux, "GET", "/devices/{deviceId}", a.getDevice, true)
	a.route(mux, "PUT", "/devices/{deviceId}", a.putDevice, true)
	a.route(mux, "DELETE", "/devices/{deviceId}", a.deleteDevice, true)
	a.route(mux, "POST", "/delete_devices", a.deleteDevices, true)
}

func (a *API) versions(r *http.Request, _ *httputil.Device) (any, error) {
	return map[string]any{
		"versions": []string{"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
			"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"},
		"unstable_features": map[string]bool{},
	}, nil
}

func (a *API) capabilities(r *http.Request, _ *httputil.Device) (any, error) {
	avail := map[string]string{}
	for _, v := range roomserver.SupportedVersions {
		avail[string(v)] = "stable"
	}
	on := map[string]bool{"enabled": true}
	off := map[string]bool{"enabled": false}
	return map[string]any{"capabilities": map[string]any{
		"m.room_versions":      map[string]any{"default": a.cfg.DefaultRoomVersion, "available": avail},
		"m.change_password":    on,
		"m.set_displayname":    on,
		"m.set_avatar_url":     on,
		"m.3pid_changes":       off,
		"m.get_login_token":    off,
		"m.profile_fields":     off,
		"m.account_moderation": off,
	}}, nil
}

// qualify turns a localpart (or a full user ID) into a user ID of this
// server; localparts are matched case-insensitively as other servers do.
func (a *API) qualify(user string) string {
	if strings.HasPrefix(user, "@") {
		return user
	}
	return "@" + strings.ToLower(user) + ":" + a.cfg.ServerName
}

// validLocalpart applies the spec's user ID grammar for new accounts.
func (a *API) validLocalpart(local string) error {
	if local == "" {
		return invalidUsername("username must not be empty")
	}
	for _, c := range local {
		ok := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strings.ContainsRune("._=-/+", c)
		if !ok {
			return invalidUsername("username may only contain a-z, 0-9 and ._=-/+")
		}
	}
	if len(local)+len(a.cfg.ServerName)+2 > 255 {
		return invalidUsername("user ID longer than 255 bytes")
	}
	return nil
}

type registerRequest struct {
	Username                 string    `json:"username"`
	Password                 string    `json:"password"`
	DeviceID                 string    `json:"device_id"`
	InitialDeviceDisplayName *string   `json:"initial_device_display_name"`
	InhibitLogin             bool      `json:"inhibit_login"`
	Auth                     *authDict `json:"auth"`
}

func (a *API) register(r *http.Request, _ *httputil.Device) (any, error) {
	if err := a.limit.allow(clientIP(r)); err != nil {
		return nil, err
	}
	switch kind := r.URL.Query().Get("kind"); kind {
	case "", "user":
	case "guest":
		return nil, httputil.Forbidden("guest access is not supported")
	default:
		return nil, httputil.InvalidParam("unknown kind " + kind)
	}
	var req registerRequest
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	if !a.cfg.OpenRegistration || a.cfg.RegistrationFrom != nil && !a.cfg.RegistrationFrom(r) {
		return nil, httputil.Forbidden("registration is closed on this server")
	}
	if len(req.Password) > 512 {
		return nil, httputil.Errf(400, "M_WEAK_PASSWORD", "password longer than 512 bytes")
	}
	if req.Username != "" {
		if err := a.validLocalpart(req.Username); err != nil {
			return nil, err
		}
		taken, err := a.db.AccountExists(r.Context(), a.qualify(req.Username))
		if err != nil {
			return nil, err
		}
		if taken {
			return nil, userInUse()
		}
	}
	// Only m.login.dummy is offered: a request without auth starts the
	// flow as the spec (and matrix-js-sdk) expect.
	if req.Auth == nil || req.Auth.Type == "" {
		return nil, a.uiaChallenge("", "m.login.dummy", "", nil)
	}
	if req.Auth.Type != "m.login.dummy" {
		return nil, a.uiaChallenge("", "m.login.dummy", req.Auth.Session,
			httputil.Errf(400, "M_UNRECOGNIZED", "only m.login.dummy is supported"))
	}
	if req.Auth.Session != "" {
		a.uia.finish(req.Auth.Session, "")
	}
	local := req.Username
	if local == "" {
		local = generatedLocalpart()
	}
	userID := a.qualify(local)
	var hash string
	if req.Password != "" {
		h, err := bcrypt.GenerateFromPassword([]byte(req.Password), a.cfg.BcryptCost)
		if err != nil {
			return nil, fmt.Errorf("hash password: %w", err)
		}
		hash = string(h)
	}
	acct := storage.NewAccount{UserID: userID, PasswordHash: hash, DisplayName: local, PushRules: defaultPushRules(userID)}
	var token string
	if !req.InhibitLogin {
		if req.DeviceID == "" {
			req.DeviceID = newDeviceID()
		}
		token = newToken()
		acct.Device = &storage.NewDevice{DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName,
			TokenHash: hashToken(token), IP: clientIP(r)}
	}
	pos, err := a.db.CreateAccount(r.Context(), acct)
	if errors.Is(err, storage.ErrExists) {
		return nil, userInUse()
	}
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", userID, err)
	}
	a.accountDataChanged(userID, pos)
	resp := map[string]any{"user_id": userID, "home_server": a.cfg.ServerName}
	if !req.InhibitLogin {
		resp["access_token"] = token
		resp["device_id"] = req.DeviceID
	}
	return resp, nil
}

// generatedLocalpart is used when /register names no user.
func generatedLocalpart() string {
	b := make([]byte, 12)
	rand.Read(b)
	for i := range b {
		b[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[int(b[i])%36]
	}
	return "u" + string(b)
}

func (a *API) registerAvailable(r *http.Request, _ *httputil.Device) (any, error) {
	if err := a.limit.allow(clientIP(r)); err != nil {
		return nil, err
	}
	local := r.URL.Query().Get("username")
	if err := a.validLocalpart(local); err != nil {
		return nil, err
	}
	taken, err := a.db.AccountExists(r.Context(), a.qualify(local))
	if err != nil {
		return nil, err
	}
	if taken {
		return nil, userInUse()
	}
	return map[string]bool{"available": true}, nil
}

func (a *API) loginFlows(r *http.Request, _ *httputil.Device) (any, error) {
	return map[string]any{"flows": []any{map[string]string{"type": "m.login.password"}}}, nil
}

type loginRequest struct {
	Type                     string          `json:"type"`
	Identifier               *userIdentifier `json:"identifier"`
	User                     string          `json:"user"`
	Password                 string          `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName *string         `json:"initial_device_display_name"`
}

func (a *API) login(r *http.Request, _ *httputil.Device) (any, error) {
	if err := a.limit.allow(clientIP(r)); err != nil {
		return nil, err
	}
	var req loginRequest
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Type != "m.login.password" {
		return nil, unknownErr(400, "unsupported login type")
	}
	user := req.User
	if req.Identifier != nil {
		if req.Identifier.Type != "m.id.user" {
			return nil, unknownErr(400, "unsupported identifier type")
		}
		user = req.Identifier.User
	}
	if user == "" {
		return nil, httputil.BadJSON("no user given")
	}
	userID := a.qualify(user)
	ok, err := a.checkPassword(r, userID, req.Password)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, httputil.Forbidden("invalid username or password")
	}
	token, deviceID, err := a.issueToken(r, userID, req.DeviceID, req.InitialDeviceDisplayName)
	if err != nil {
		return nil, fmt.Errorf("login %s: %w", userID, err)
	}
	return map[string]any{"user_id": userID, "access_token": token, "device_id": deviceID, "home_server": a.cfg.ServerName}, nil
}

// checkPassword says whether password is userID's; unknown users and
// accounts without a password never match.
func (a *API) checkPassword(r *http.Request, userID, password string) (bool, error) {
	hash, err := a.db.PasswordHash(r.Context(), userID)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if hash == "" || password == "" {
		return false, nil
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil, nil
}

func (a *API) logout(r *http.Request, dev *httputil.Device) (any, error) {
	if err := a.removeDevices(r.Context(), dev.UserID, []string{dev.DeviceID}); err != nil {
		return nil, fmt.Errorf("logout: %w", err)
	}
	a.auth.forget(hashToken(dev.AccessToken))
	return struct{}{}, nil
}

func (a *API) logoutAll(r *http.Request, dev *httputil.Device) (any, error) {
	if err := a.removeDevices(r.Context(), dev.UserID, nil); err != nil {
		return nil, fmt.Errorf("logout all: %w", err)
	}
	return struct{}{}, nil
}

func (a *API) whoami(r *http.Request, dev *httputil.Device) (any, error) {
	return map[string]any{"user_id": dev.UserID, "device_id": dev.DeviceID, "is_guest": false}, nil
}

func (a *API) threepids(r *http.Request, dev *httputil.Device) (any, error) {
	return map[string]any{"threepids": []any{}}, nil
}

func (a *API) changePassword(r *http.Request, dev *httputil.Device) (any, error) {
	var req struct {
		NewPassword   string    `json:"new_password"`
		LogoutDevices *bool     `json:"logout_devices"`
		Auth          *authDict `json:"auth"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	if err := a.requirePassword(r, dev, req.Auth); err != nil {
		return nil, err
	}
	if req.NewPassword == "" {
		return nil, httputil.MissingParam("new_password is required")
	}
	if len(req.NewPassword) > 512 {
		return nil, httputil.Errf(400, "M_WEAK_PASSWORD", "password longer than 512 bytes")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(req.NewPassword), a.cfg.BcryptCost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	var except *string
	if req.LogoutDevices == nil || *req.LogoutDevices {
		except = &dev.DeviceID
	}
	gone, err := a.db.SetPasswordHash(r.Context(), dev.UserID, string(h), except)
	if err != nil {
		return nil, fmt.Errorf("change password: %w", err)
	}
	a.auth.forget(gone...)
	return struct{}{}, nil
}

type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenIP  string  `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64   `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d storage.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

func (a *API) listDevices(r *http.Request, dev *httputil.Device) (any, error) {
	ds, err := a.db.Devices(r.Context(), dev.UserID)
	if err != nil {
		return nil, err
	}
	out := make([]deviceJSON, len(ds))
	for i, d := range ds {
		out[i] = toDeviceJSON(d)
	}
	return map[string]any{"devices": out}, nil
}

func (a *API) getDevice(r *http.Request, dev *httputil.Device) (any, error) {
	d, err := a.db.GetDevice(r.Context(), dev.UserID, r.PathValue("deviceId"))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("unknown device")
	}
	if err != nil {
		return nil, err
	}
	return toDeviceJSON(*d), nil
}

func (a *API) putDevice(r *http.Request, dev *httputil.Device) (any, error) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	id := r.PathValue("deviceId")
	if req.DisplayName == nil {
		if _, err := a.db.GetDevice(r.Context(), dev.UserID, id); err != nil {
			return nil, rsErrDevice(err)
		}
		return struct{}{}, nil
	}
	if err := a.db.SetDeviceName(r.Context(), dev.UserID, id, *req.DisplayName); err != nil {
		return nil, rsErrDevice(err)
	}
	return struct{}{}, nil
}

func rsErrDevice(err error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return httputil.NotFound("unknown device")
	}
	return err
}

func (a *API) deleteDevice(r *http.Request, dev *httputil.Device) (any, error) {
	var req struct {
		Auth *authDict `json:"auth"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	id := r.PathValue("deviceId")
	if _, err := a.db.GetDevice(r.Context(), dev.UserID, id); err != nil {
		return nil, rsErrDevice(err)
	}
	if err := a.requirePassword(r, dev, req.Auth); err != nil {
		return nil, err
	}
	if err := a.removeDevices(r.Context(), dev.UserID, []string{id}); err != nil {
		return nil, fmt.Errorf("delete device: %w", err)
	}
	return struct{}{}, nil
}

func (a *API) deleteDevices(r *http.Request, dev *httputil.Device) (any, error) {
	var req struct {
		Devices []string  `json:"devices"`
		Auth    *authDict `json:"auth"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Devices == nil {
		return nil, httputil.MissingParam("devices is required")
	}
	if err := a.requirePassword(r, dev, req.Auth); err != nil {
		return nil, err
	}
	if err := a.removeDevices(r.Context(), dev.UserID, req.Devices); err != nil {
		return nil, fmt.Errorf("delete devices: %w", err)
	}
	return struct{}{}, nil
}

// removeDevices deletes devices (nil: all the user's), forgets their
// tokens at once, and tells those sharing rooms with the user (through
// sync's device lists) that the devices are gone.
func (a *API) removeDevices(ctx context.Context, userID string, deviceIDs []string) error {
	gone, err := a.db.DeleteDevices(ctx, userID, deviceIDs)
	if err != nil {
		return err
	}
	a.auth.forget(gone...)
	if ks := a.keyStreams(); ks != nil {
		if err := ks.DeviceListChanged(ctx, userID, deviceIDs, true); err != nil {
			slog.Warn("announce deleted devices", "user", userID, "err", err)
		}
	}
	return nil
}

// accountDataChanged tells sync about new account data.
func (a *API) accountDataChanged(userID string, pos int64) {
	if pos > 0 && a.cfg.OnAccountData != nil {
		a.cfg.OnAccountData(userID, pos)
	}
}
