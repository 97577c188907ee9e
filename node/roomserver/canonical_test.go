package roomserver_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"

	"hearth/node/internal/testnet"
	"hearth/node/roomserver"
)

// canonicalAgrees canonicalises valid JSON both ways, fails t if they
// differ, and tells whether js was found canonical as it was.
func canonicalAgrees(t testing.TB, js []byte) bool {
	t.Helper()
	want := gomatrixserverlib.CanonicalJSONAssumeValid(bytes.Clone(js))
	got, already := roomserver.CanonicalJSON(js)
	if !bytes.Equal(got, want) {
		t.Errorf("%q:\ncanonicalJSON: %q (found canonical: %v)\ngomatrixserverlib: %q", js, got, already, want)
	}
	return already
}

// TestIsCanonical: JSON that canonicalising leaves alone is used as it
// is, anything it changes is canonicalised, and events as servers sign
// them are found canonical.
func TestIsCanonical(t *testing.T) {
	for _, c := range []struct {
		json      string
		canonical bool
	}{
		{`{}`, true},
		{`[]`, true},
		{`{"a":1,"b":[true,false,null,"x",-1,0,{}],"c":{"d":"é😀\"\\\n"}}`, true},
		{`{"a":1,"a!":2}`, true}, // by the keys' strings, not their quoted form
		{`{"a!":2,"a":1}`, false},
		{`{"b":1,"a":2}`, false},
		{`{"a":1,"a":2}`, false},
		{`{"a":{"c":1,"b":2}}`, false},
		{`[{"c":1,"b":2}]`, false},
		{`{ }`, false},
		{`[ ]`, false},
		{` {}`, false},
		{`{} `, false},
		{`{"a": 1}`, false},
		{`{"a":1 ,"b":2}`, false},
		{`[1, 2]`, false},
		{`{"a":"\u0041"}`, false},
		{`{"a":"\/"}`, false},
		{`{"\u0061":1}`, false},
		{`{"a\"b":1}`, false},
		{`{"a":-0}`, false},
		{`{"a":-0.5}`, false},
		{`{"a":-1}`, true},
		{`{"a":1.5e3}`, true},
		{`"x"`, true},
		{`7`, true},
	} {
		if got := canonicalAgrees(t, []byte(c.json)); got != c.canonical {
			t.Errorf("%s: found canonical: %v, want %v", c.json, got, c.canonical)
		}
	}
	keys := testnet.New()
	for _, c := range agreeCases(t, keys, gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)) {
		// (Canonicalising keeps a key given twice, and escapes some
		// control characters as \u00XX.)
		if c.plain && gjson.ValidBytes(c.json) && !strings.Contains(c.name, "twice") && !bytes.Contains(c.json, []byte(`\u`)) && !canonicalAgrees(t, gomatrixserverlib.CanonicalJSONAssumeValid(c.json)) {
			t.Errorf("%s: not found canonical once canonicalised", c.name)
		}
	}
}

// FuzzIsCanonical canonicalises any valid JSON both ways.
func FuzzIsCanonical(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":[true,{"c":"\n"}]}`, `{"a!":1,"a":2}`, `[1, -0]`, `{"\u00e9":"\/"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		if !gjson.ValidBytes(js) {
			return
		}
		canonicalAgrees(t, js)
		canonicalAgrees(t, gomatrixserverlib.CanonicalJSONAssumeValid(js))
	})
}
