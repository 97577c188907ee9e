package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"hearth/node/httputil"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

// Matrix errors httputil does not name.
func userInUse() *httputil.Error {
	return httputil.Errf(400, "M_USER_IN_USE", "user ID already taken")
}
func invalidUsername(msg string) *httputil.Error {
	return httputil.Errf(400, "M_INVALID_USERNAME", msg)
}
func roomInUse(msg string) *httputil.Error { return httputil.Errf(400, "M_ROOM_IN_USE", msg) }
func unsupportedVersion(v string) *httputil.Error {
	return httputil.Errf(400, "M_UNSUPPORTED_ROOM_VERSION", fmt.Sprintf("room version %q is not supported", v))
}
func badAlias(msg string) *httputil.Error { return httputil.Errf(400, "M_BAD_ALIAS", msg) }
func unknownErr(status int, msg string) *httputil.Error {
	return httputil.Errf(status, "M_UNKNOWN", msg)
}

// rsErr maps a roomserver or storage error to the Matrix error a client
// should see; anything unexpected passes through (and becomes a 500).
func rsErr(err error) error {
	if err == nil {
		return nil
	}
	var me *httputil.Error
	var fe *roomserver.ForbiddenError
	var be *roomserver.BadEventError
	var ue *roomserver.UnsupportedVersionError
	switch {
	case errors.As(err, &me):
		return me
	case errors.As(err, &fe):
		return httputil.Forbidden(fe.Reason)
	case errors.As(err, &be):
		return httputil.BadJSON(be.Reason)
	case errors.As(err, &ue):
		return unsupportedVersion(ue.Version)
	case errors.Is(err, roomserver.ErrRoomNotFound):
		return httputil.NotFound("room not found")
	case errors.Is(err, roomserver.ErrEventNotFound), errors.Is(err, storage.ErrNotFound):
		return httputil.NotFound("event not found")
	case errors.Is(err, roomserver.ErrTooLarge):
		return httputil.TooLarge("event exceeds 65536 bytes")
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer.
		return unknownErr(499, "request cancelled")
	}
	return err
}

// readBody reads a request body up to httputil.MaxBody.
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, httputil.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, httputil.TooLarge("request body too large")
		}
		return nil, httputil.BadJSON("could not read body: " + err.Error())
	}
	return body, nil
}

// readObject reads a body that must be one JSON object and returns it raw
// (event content goes to the roomserver as sent, without a decode and
// re-encode on the send path). limit caps its size with M_TOO_LARGE.
func readObject(r *http.Request, limit int) (json.RawMessage, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	if len(body) > limit {
		return nil, httputil.TooLarge(fmt.Sprintf("body exceeds %d bytes", limit))
	}
	return checkObject(body)
}

func checkObject(body []byte) (json.RawMessage, error) {
	if !json.Valid(body) {
		return nil, httputil.NotJSON("request body is not valid JSON")
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, httputil.BadJSON("request body must be a JSON object")
	}
	return body, nil
}

// readJSON decodes a body into v; an empty body counts as {} (clients
// send nothing to /join, /leave and friends).
func readJSON(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if _, err := checkObject(body); err != nil {
		return err
	}
	return httputil.DecodeJSON(body, v)
}

// isObject says whether raw JSON is an object.
func isObject(raw json.RawMessage) bool {
	t := bytes.TrimLeft(raw, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

// isCode says whether err is a Matrix error with the given errcode.
func isCode(err error, code string) bool {
	var me *httputil.Error
	return errors.As(err, &me) && me.Code == code
}
