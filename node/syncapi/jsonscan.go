package syncapi

import (
	"bytes"
	"encoding/json"
	"errors"
)

// A minimal reader for the top level of JSON objects we wrote ourselves
// (stored events are canonical JSON, checked when they entered the node).
// Decoding a whole event with encoding/json costs more than everything
// else a /messages page does; sync only needs a handful of top-level
// fields and passes content and unsigned through as raw bytes. It never
// panics on bad input: it returns errBadJSON.

var errBadJSON = errors.New("malformed JSON")

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i]
// ('"'), and whether it holds escapes.
func skipString(b []byte, i int) (int, bool, error) {
	// Most strings have no escapes: find the closing quote at once.
	j := bytes.IndexByte(b[i+1:], '"')
	if j < 0 {
		return 0, false, errBadJSON
	}
	if bytes.IndexByte(b[i+1:i+1+j], '\\') < 0 {
		return i + 2 + j, false, nil
	}
	esc := false
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			esc = true
			i++
		case '"':
			return i + 1, esc, nil
		}
	}
	return 0, false, errBadJSON
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errBadJSON
	}
	switch b[i] {
	case '"':
		j, _, err := skipString(b, i)
		return j, err
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				j, _, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = j
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, errBadJSON
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\t' && b[j] != '\r' {
			j++
		}
		if j == i {
			return 0, errBadJSON
		}
		return j, nil
	}
}

// eachField calls fn with each top-level key (raw, still quoted) and raw
// value of a JSON object, until fn returns false.
func eachField(b []byte, fn func(key, val []byte) bool) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errBadJSON
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return errBadJSON
		}
		k, _, err := skipString(b, i)
		if err != nil {
			return err
		}
		key := b[i:k]
		i = skipWS(b, k)
		if i >= len(b) || b[i] != ':' {
			return errBadJSON
		}
		i = skipWS(b, i+1)
		v, err := skipValue(b, i)
		if err != nil {
			return err
		}
		if !fn(key, b[i:v]) {
			return nil
		}
		i = skipWS(b, v)
		if i >= len(b) {
			return errBadJSON
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return nil
		default:
			return errBadJSON
		}
	}
}

// jsonString decodes a raw JSON string value; ok is false for anything
// else.
func jsonString(v []byte) (s string, ok bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	plain := true
	for _, c := range v[1 : len(v)-1] {
		if c == '\\' || c < 0x20 {
			plain = false
			break
		}
	}
	if plain {
		return string(v[1 : len(v)-1]), true
	}
	if json.Unmarshal(v, &s) != nil {
		return "", false
	}
	return s, true
}
