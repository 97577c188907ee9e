package main

import (
	"encoding/json"
	"errors"
	"fmt"
)

// The bench shares the machine with the node it measures, so decoding a
// /messages page with encoding/json (which reads every byte twice and
// every field through reflection: ~0.2 ms for a page of 100 events, as
// much as the node spends answering it) would count the client's cost as
// the server's. messagesPage is decoded by one strict pass that checks
// the whole body is valid JSON (as json.Valid does) and keeps only what
// pagination checks: each event's ID and type, and the end token.

// pageEvent is what the bench reads of a chunk's event.
type pageEvent struct {
	EventID string
	Type    string
}

// messagesPage is a /messages answer.
type messagesPage struct {
	Chunk []pageEvent
	End   string
}

// bodyDecoder is an answer that decodes its own body (client.once uses
// it instead of encoding/json).
type bodyDecoder interface {
	decodeBody(b []byte) error
}

// decodeBody decodes a /messages answer. Like encoding/json into the
// struct it replaces, it takes the last of duplicate keys, accepts null
// for a string (empty), the chunk (none) or an event (zero), and refuses
// any other type where a string, array or object is expected; unlike it,
// keys match exactly (the spec's names are lowercase).
func (p *messagesPage) decodeBody(b []byte) error {
	*p = messagesPage{}
	d := jsonReader{b: b}
	d.ws()
	if d.null() {
		return d.end()
	}
	err := d.object(func(key []byte) error {
		switch string(key) {
		case "chunk":
			return p.decodeChunk(&d)
		case "end":
			return d.stringValue(&p.End)
		}
		return d.skip(0)
	})
	if err != nil {
		return err
	}
	return d.end()
}

func (p *messagesPage) decodeChunk(d *jsonReader) error {
	p.Chunk = p.Chunk[:0]
	if d.null() {
		p.Chunk = nil
		return nil
	}
	if p.Chunk == nil {
		p.Chunk = make([]pageEvent, 0, 100)
	}
	return d.array(func() error {
		var ev pageEvent
		if !d.null() {
			err := d.object(func(key []byte) error {
				switch string(key) {
				case "event_id":
					return d.stringValue(&ev.EventID)
				case "type":
					return d.stringValue(&ev.Type)
				}
				return d.skip(0)
			})
			if err != nil {
				return err
			}
		}
		p.Chunk = append(p.Chunk, ev)
		return nil
	})
}

// jsonReader is a strict, allocation-light JSON reader over one body.
type jsonReader struct {
	b []byte
	i int
}

var errSyntax = errors.New("invalid JSON")

// maxDepth bounds nesting, as encoding/json does.
const maxDepth = 10000

func (d *jsonReader) fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", errSyntax, what, d.i)
}

func (d *jsonReader) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// end checks nothing but whitespace follows the value.
func (d *jsonReader) end() error {
	d.ws()
	if d.i != len(d.b) {
		return d.fail("data after the value")
	}
	return nil
}

// null consumes a null (and the whitespace after it) if one is next.
func (d *jsonReader) null() bool {
	if len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "null" {
		d.i += 4
		d.ws()
		return true
	}
	return false
}

// object reads an object, calling member for each key with the reader on
// its value; member must consume the value.
func (d *jsonReader) object(member func(key []byte) error) error {
	if d.i >= len(d.b) || d.b[d.i] != '{' {
		return d.fail("object expected")
	}
	d.i++
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == '}' {
		d.i++
		d.ws()
		return nil
	}
	for {
		start := d.i
		esc, err := d.str()
		if err != nil {
			return err
		}
		key := d.b[start+1 : d.i-1]
		if esc { // an escaped key: compare it decoded
			var k string
			if err := json.Unmarshal(d.b[start:d.i], &k); err != nil {
				return d.fail("bad key")
			}
			key = []byte(k)
		}
		d.ws()
		if d.i >= len(d.b) || d.b[d.i] != ':' {
			return d.fail("':' expected")
		}
		d.i++
		d.ws()
		if err := member(key); err != nil {
			return err
		}
		d.ws()
		if d.i >= len(d.b) {
			return d.fail("unterminated object")
		}
		switch d.b[d.i] {
		case ',':
			d.i++
			d.ws()
		case '}':
			d.i++
			d.ws()
			return nil
		default:
			return d.fail("',' or '}' expected")
		}
	}
}

// array reads an array, calling elem with the reader on each element;
// elem must consume it.
func (d *jsonReader) array(elem func() error) error {
	if d.i >= len(d.b) || d.b[d.i] != '[' {
		return d.fail("array expected")
	}
	d.i++
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == ']' {
		d.i++
		d.ws()
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		d.ws()
		if d.i >= len(d.b) {
			return d.fail("unterminated array")
		}
		switch d.b[d.i] {
		case ',':
			d.i++
			d.ws()
		case ']':
			d.i++
			d.ws()
			return nil
		default:
			return d.fail("',' or ']' expected")
		}
	}
}

// stringValue reads a string into s (null reads as "").
func (d *jsonReader) stringValue(s *string) error {
	if d.null() {
		*s = ""
		return nil
	}
	start := d.i
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return d.fail("string expected")
	}
	esc, err := d.str()
	if err != nil {
		return err
	}
	if !esc {
		*s = string(d.b[start+1 : d.i-1])
		return nil
	}
	if err := json.Unmarshal(d.b[start:d.i], s); err != nil {
		return d.fail("bad string")
	}
	return nil
}

// str reads a string token, checking its escapes and that it holds no
// control characters, and reports whether it has escapes or non-ASCII
// bytes (then it is decoded with encoding/json, exactly as before).
func (d *jsonReader) str() (esc bool, err error) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return false, d.fail("string expected")
	}
	for d.i++; d.i < len(d.b); d.i++ {
		for d.i < len(d.b) && plain[d.b[d.i]] { // the common bytes, quickly
			d.i++
		}
		if d.i == len(d.b) {
			break
		}
		switch c := d.b[d.i]; {
		case c == '"':
			d.i++
			return esc, nil
		case c == '\\':
			esc = true
			d.i++
			if d.i >= len(d.b) {
				return false, d.fail("unterminated string")
			}
			switch d.b[d.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(d.b)-d.i < 5 || !isHex(d.b[d.i+1]) || !isHex(d.b[d.i+2]) || !isHex(d.b[d.i+3]) || !isHex(d.b[d.i+4]) {
					return false, d.fail("bad \\u escape")
				}
				d.i += 4
			default:
				return false, d.fail("bad escape")
			}
		case c < 0x20:
			return false, d.fail("control character in string")
		case c >= 0x80:
			// Decoded by encoding/json too, which replaces invalid UTF-8.
			esc = true
		}
	}
	return false, d.fail("unterminated string")
}

// plain marks the bytes a string holds as they are: ASCII but not a
// quote, a backslash or a control character.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// skip reads any value, checking it.
func (d *jsonReader) skip(depth int) error {
	if depth > maxDepth {
		return d.fail("nested too deeply")
	}
	if d.i >= len(d.b) {
		return d.fail("value expected")
	}
	switch c := d.b[d.i]; {
	case c == '{':
		return d.object(func([]byte) error { return d.skip(depth + 1) })
	case c == '[':
		return d.array(func() error { return d.skip(depth + 1) })
	case c == '"':
		_, err := d.str()
		return err
	case c == '-' || c >= '0' && c <= '9':
		return d.number()
	}
	for _, lit := range [...]string{"true", "false", "null"} {
		if len(d.b)-d.i >= len(lit) && string(d.b[d.i:d.i+len(lit)]) == lit {
			d.i += len(lit)
			return nil
		}
	}
	return d.fail("value expected")
}

// number reads -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?.
func (d *jsonReader) number() error {
	digits := func() int {
		n := 0
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
			n++
		}
		return n
	}
	if d.b[d.i] == '-' {
		d.i++
	}
	switch {
	case d.i < len(d.b) && d.b[d.i] == '0':
		d.i++
	case digits() == 0:
		return d.fail("bad number")
	}
	if d.i < len(d.b) && d.b[d.i] == '.' {
		d.i++
		if digits() == 0 {
			return d.fail("bad number")
		}
	}
	if d.i < len(d.b) && (d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		d.i++
		if d.i < len(d.b) && (d.b[d.i] == '+' || d.b[d.i] == '-') {
			d.i++
		}
		if digits() == 0 {
			return d.fail("bad number")
		}
	}
	return nil
}
