package roomserver

import (
	"errors"
	"slices"
	"strconv"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"
)

// RedactCanonical is verImpl.RedactEventJSON for an event in canonical
// JSON, and tells whether what it returns is canonical too.
//
// gomatrixserverlib redacts by decoding the whole event into a struct
// and its content into a map, and encoding them again: in wasm that was
// two fifths of checking a received event. Which keys a redaction keeps
// depends only on the room version, the event's type and which keys it
// has, not on their values. So this asks gomatrixserverlib once per such
// shape, with a skeleton of the event (its keys; its type and its
// content's keys as they are; for any other value, the key's index), and
// remembers which of the event's keys survive.
// When a redaction keeps nothing of the content and every survivor as it
// was (a message, in every room version), the event's own bytes are cut
// to those keys with the content emptied: canonical JSON with keys taken
// out is still canonical. Anything else goes to gomatrixserverlib.
// TestRedactAgreesWithGomatrixserverlib and FuzzRedact hold the two to
// the same canonical bytes.
func RedactCanonical(verImpl gomatrixserverlib.IRoomVersion, canonical []byte) (redacted []byte, isCanonical bool, err error) {
	if out, ok, err := redactByShape(verImpl, canonical); ok || err != nil {
		return out, ok, err
	}
	redacted, err = verImpl.RedactEventJSON(canonical)
	return redacted, false, err
}

// redactShape is what redacting events of one shape does: keep[i] tells
// whether the event's i-th key survives; fast that the content empties
// and survivors keep their bytes.
type redactShape struct {
	keep [maxPlainKeys]bool
	fast bool
}

// redactShapes remembers shapes by room version and skeleton. Shapes are
// few (a room's messages share a handful), and a flood of new ones costs
// a skeleton's redaction each, less than the events' own would: the
// cache is simply emptied when full.
var redactShapes = struct {
	sync.Mutex
	m map[string]*redactShape
}{m: map[string]*redactShape{}}

const maxRedactShapes = 512

// errNotObject refuses valid JSON that is no object, which
// gomatrixserverlib refuses too, but panics on when it is null.
var errNotObject = errors.New("event is not a JSON object")

// redactByShape redacts a canonical event by its shape, or says it
// cannot (ok false): invalid JSON, too many keys, a key given twice,
// content that is no object, or a redaction that keeps some content.
func redactByShape(verImpl gomatrixserverlib.IRoomVersion, canonical []byte) (out []byte, ok bool, err error) {
	var keys [maxPlainKeys]gjson.Result
	var vals [maxPlainKeys]gjson.Result
	n, content := 0, -1
	fits := true
	// Invalid JSON is refused by gomatrixserverlib, which reads it all.
	// (Its CanonicalJSON can make some: it unescapes quotes in keys.)
	if !gjson.ValidBytes(canonical) {
		return nil, false, nil
	}
	root := gjson.ParseBytes(canonical)
	if !root.IsObject() {
		return nil, false, errNotObject
	}
	root.ForEach(func(k, v gjson.Result) bool {
		if n == maxPlainKeys {
			fits = false
			return false
		}
		for _, seen := range keys[:n] {
			if seen.Raw == k.Raw {
				fits = false
				return false
			}
		}
		if k.Raw == `"content"` {
			content = n
		}
		keys[n], vals[n] = k, v
		n++
		return true
	})
	if !fits || content < 0 || !vals[content].IsObject() {
		return nil, false, nil
	}
	// The skeleton: every key, the type as it is, the content's keys.
	skel := make([]byte, 0, 256)
	skel = append(skel, verImpl.Version()...)
	skel = append(skel, 0, '{')
	for i, k := range keys[:n] {
		if i > 0 {
			skel = append(skel, ',')
		}
		skel = append(append(skel, k.Raw...), ':')
		switch {
		case i == content:
			skel = append(skel, '{')
			first := true
			vals[i].ForEach(func(ck, _ gjson.Result) bool {
				if !first {
					skel = append(skel, ',')
				}
				first = false
				skel = append(append(skel, ck.Raw...), ":0"...)
				return true
			})
			skel = append(skel, '}')
		case k.Raw == `"type"`:
			skel = append(skel, vals[i].Raw...)
		default:
			// Its index: which key a survivor came from shows even if
			// encoding/json took it for another (it folds case).
			skel = strconv.AppendInt(skel, int64(i), 10)
		}
	}
	skel = append(skel, '}')

	redactShapes.Lock()
	shape := redactShapes.m[string(skel)]
	redactShapes.Unlock()
	if shape == nil {
		shape = learnShape(verImpl, skel[len(verImpl.Version())+1:], keys[:n], vals[:n])
		redactShapes.Lock()
		if len(redactShapes.m) >= maxRedactShapes {
			clear(redactShapes.m)
		}
		redactShapes.m[string(skel)] = shape
		redactShapes.Unlock()
	}
	if !shape.fast {
		return nil, false, nil
	}
	out = make([]byte, 1, len(canonical))
	out[0] = '{'
	for i, k := range keys[:n] {
		switch {
		case !shape.keep[i]:
		case i == content:
			out = appendMember(out, k.Raw, "{}")
		default:
			out = appendMember(out, k.Raw, vals[i].Raw)
		}
	}
	return append(out, '}'), true, nil
}

// appendMember appends "key":value (both raw JSON) to obj, an object
// being written from its opening brace on.
func appendMember(obj []byte, key, value string) []byte {
	if len(obj) > 1 {
		obj = append(obj, ',')
	}
	return append(append(append(obj, key...), ':'), value...)
}

// learnShape asks gomatrixserverlib to redact a skeleton and reads off
// which of keys (with vals, the event's values) survive. The shape is
// fast only if each key of the result is one of keys, with the content
// empty, the type as it was, and any other key with its own placeholder.
func learnShape(verImpl gomatrixserverlib.IRoomVersion, skeleton []byte, keys, vals []gjson.Result) *redactShape {
	shape := &redactShape{}
	red, err := verImpl.RedactEventJSON(skeleton)
	if err != nil {
		return shape
	}
	fast := true
	gjson.ParseBytes(red).ForEach(func(k, v gjson.Result) bool {
		i := slices.IndexFunc(keys, func(key gjson.Result) bool { return key.Raw == k.Raw })
		switch {
		case i < 0 || shape.keep[i]:
			fast = false
		case k.Raw == `"content"`:
			fast = v.Raw == "{}"
		case k.Raw == `"type"`:
			fast = v.Raw == vals[i].Raw
		default:
			fast = v.Raw == strconv.Itoa(i)
		}
		if fast {
			shape.keep[i] = true
		}
		return fast
	})
	shape.fast = fast
	return shape
}
