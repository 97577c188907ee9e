package roomserver

import (
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"
)

// canonicalJSON is gomatrixserverlib.CanonicalJSONAssumeValid for valid
// JSON, which returns js itself when it is already canonical.
//
// Events from other servers nearly always come canonical (a Hearth peer
// serves them as stored), and canonicalising rebuilds every object to
// sort its keys: a sixth of checking an event in wasm, twice over with
// the signature check. Telling whether canonicalising would change
// anything takes one walk that copies nothing.
func canonicalJSON(js []byte) []byte {
	if v := gjson.ParseBytes(js); len(v.Raw) == len(js) && isCanonical(v) {
		return js
	}
	return gomatrixserverlib.CanonicalJSONAssumeValid(js)
}

// isCanonical tells whether gomatrixserverlib.CanonicalJSONAssumeValid
// would leave v's JSON (valid JSON) as it is; false may be wrong, true
// may not. Its CompactJSON drops whitespace outside strings, any "-" before
// "0", and "\/" and "\u" escapes; its SortJSON sorts keys by their
// unescaped strings (not stably) and writes them unescaped. So v must
// have no such whitespace, number or escapes, and no escaped keys, each
// object's keys strictly increasing. TestIsCanonical and FuzzIsCanonical
// hold it to that.
func isCanonical(v gjson.Result) bool {
	switch {
	case v.Type == gjson.String:
		return !strings.Contains(v.Raw, `\/`) && !strings.Contains(v.Raw, `\u`)
	case v.Type == gjson.Number:
		return !strings.Contains(v.Raw, "-0")
	case v.Type != gjson.JSON: // true, false, null
		return true
	}
	// Every byte of an object or array is a part of it, a ':' after a
	// key, a ',' between parts, or a bracket: no whitespace.
	object := v.IsObject()
	size, ok := 1, true
	var last string
	v.ForEach(func(k, e gjson.Result) bool {
		if object {
			if strings.IndexByte(k.Raw, '\\') >= 0 || (size > 1 && k.Str <= last) {
				ok = false
				return false
			}
			last = k.Str
			size += len(k.Raw) + 1
		}
		size += len(e.Raw) + 1
		ok = isCanonical(e)
		return ok
	})
	return ok && (size == len(v.Raw) || size == 1 && len(v.Raw) == 2)
}
