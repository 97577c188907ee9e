// Package httputil holds what every HTTP-facing part of the node shares:
// JSON answers, Matrix errors with their status codes, request-body limits,
// and the authenticated device carried in a request's context. It must not
// import any other hearth package.
package httputil

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
)

// Device is the authenticated caller of a client API request.
type Device struct {
	UserID      string
	DeviceID    string
	AccessToken string
}

type deviceKey struct{}

// WithDevice returns ctx carrying the authenticated device.
func WithDevice(ctx context.Context, d *Device) context.Context {
	return context.WithValue(ctx, deviceKey{}, d)
}

// DeviceFrom returns the authenticated device, or nil.
func DeviceFrom(ctx context.Context) *Device {
	d, _ := ctx.Value(deviceKey{}).(*Device)
	return d
}

// Error is a Matrix error answer: an errcode, a message and its HTTP status.
type Error struct {
	Status       int    `json:"-"`
	Code         string `json:"errcode"`
	Message      string `json:"error"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errf builds a Matrix error.
func Errf(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

// The errors the spec names, with their usual statuses.
func NotJSON(msg string) *Error      { return Errf(400, "M_NOT_JSON", msg) }
func BadJSON(msg string) *Error      { return Errf(400, "M_BAD_JSON", msg) }
func InvalidParam(msg string) *Error { return Errf(400, "M_INVALID_PARAM", msg) }
func MissingParam(msg string) *Error { return Errf(400, "M_MISSING_PARAM", msg) }
func MissingToken(msg string) *Error { return Errf(401, "M_MISSING_TOKEN", msg) }
func UnknownToken(msg string) *Error { return Errf(401, "M_UNKNOWN_TOKEN", msg) }
func Forbidden(msg string) *Error    { return Errf(403, "M_FORBIDDEN", msg) }
func NotFound(msg string) *Error     { return Errf(404, "M_NOT_FOUND", msg) }
func TooLarge(msg string) *Error     { return Errf(413, "M_TOO_LARGE", msg) }
func Unrecognized(status int) *Error {
	return Errf(status, "M_UNRECOGNIZED", "unrecognized request")
}
func Unknown(msg string) *Error { return Errf(500, "M_UNKNOWN", msg) }

// WriteJSON answers with a JSON body.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		slog.Error("encode response", "err", err)
		status, b = 500, []byte(`{"errcode":"M_UNKNOWN","error":"internal error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// WriteError answers with err as a Matrix error. Errors that are not
// *Error are logged and become M_UNKNOWN 500, never leaking internals.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var me *Error
	if !errors.As(err, &me) {
		slog.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		me = Unknown("internal error")
	}
	if me.RetryAfterMS > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt((me.RetryAfterMS+999)/1000, 10))
	}
	WriteJSON(w, me.Status, me)
}

// MaxBody is the largest request body the client API reads (events are
// capped at 65,536 bytes by the spec; a body may wrap one).
const MaxBody = 1 << 20

// ReadJSON decodes a request body into v: M_NOT_JSON for what is not JSON,
// M_TOO_LARGE past MaxBody, M_BAD_JSON for JSON of the wrong shape.
func ReadJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return TooLarge("request body too large")
		}
		return BadJSON("could not read body: " + err.Error())
	}
	return DecodeJSON(body, v)
}

// DecodeJSON decodes a JSON body with ReadJSON's errors.
func DecodeJSON(body []byte, v any) error {
	if !json.Valid(body) {
		return NotJSON("request body is not valid JSON")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return BadJSON("request body has the wrong shape: " + err.Error())
	}
	return nil
}

// CORS lets Matrix clients served from other origins call the API, as the
// spec's "Web Browser Clients" section asks: every answer carries the
// headers, and a preflight OPTIONS is answered here without reaching the
// endpoint's logic. The native node and the browser node both wrap their
// client API in it, so clients see the same API either way.
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
