package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// referencePage decodes a page with encoding/json under the rules
// decodeBody documents (exact keys, last duplicate wins, null leaves a
// value empty), or fails where it must.
func referencePage(b []byte) (messagesPage, bool) {
	var p messagesPage
	if !json.Valid(b) {
		return p, false
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return p, false
	}
	str := func(raw json.RawMessage, s *string) bool {
		if raw == nil {
			return true
		}
		return json.Unmarshal(raw, s) == nil
	}
	if !str(top["end"], &p.End) {
		return p, false
	}
	if raw, ok := top["chunk"]; ok && string(raw) != "null" {
		var chunk []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &chunk); err != nil {
			return p, false
		}
		p.Chunk = []pageEvent{}
		for _, m := range chunk {
			var ev pageEvent
			if !str(m["event_id"], &ev.EventID) || !str(m["type"], &ev.Type) {
				return p, false
			}
			p.Chunk = append(p.Chunk, ev)
		}
	}
	return p, true
}

var pageSeeds = []string{
	`{"chunk":[{"content":{"body":"a","n":[1,-2.5e+3,true,false,null]},"event_id":"$a","type":"m.room.message","unsigned":{}}],"start":"s9","end":"s3"}`,
	`{"chunk":[],"start":"s1"}`,
	`{"chunk":null,"end":null}`,
	`{"end":"x","end":null,"chunk":[{"type":"a","type":null}]}`,
	`null`,
	` {"chunk":[null,{"event_id":"$\u0041\n","type":"t"}] , "end":"x"} `,
	`{"\u0063hunk":[{"event_id":"$b"}],"chunk":[{"event_id":"$c"}]}`,
	`{"Chunk":[{"EVENT_ID":"$d"}]}`,
	`{"chunk":[{"event_id":1}]}`,
	`{"chunk":[1]}`,
	`{"chunk":{}}`,
	`{"end":5}`,
	`{"chunk":[{"event_id":"$a"}]`,
	`{"chunk":[{"event_id":"$a"}]}x`,
	`{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":"\x"}`, `{"a":"` + "\x01" + `"}`, `{"a":tru}`, `{"a":"\u12g4"}`,
	`{"a" 1}`, `{,}`, `[]`, `"s"`, ``, `{"a":[1,]}`,
}

func TestDecodePageMatchesEncodingJSON(t *testing.T) {
	for _, s := range pageSeeds {
		checkPage(t, []byte(s))
	}
	// A real page decodes to its events.
	var p messagesPage
	body := `{"chunk":[{"content":{"body":"hi"},"event_id":"$1","origin_server_ts":1,"room_id":"!r:x","sender":"@a:x","type":"m.room.message","unsigned":{"transaction_id":"t"}},` +
		`{"content":{"membership":"join"},"event_id":"$2","sender":"@a:x","state_key":"@a:x","type":"m.room.member","unsigned":{}}],"start":"s5","end":"s2"}`
	if err := p.decodeBody([]byte(body)); err != nil {
		t.Fatal(err)
	}
	want := messagesPage{Chunk: []pageEvent{{"$1", "m.room.message"}, {"$2", "m.room.member"}}, End: "s2"}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("got %+v", p)
	}
	deep := strings.Repeat("[", maxDepth+10) + strings.Repeat("]", maxDepth+10)
	if err := p.decodeBody([]byte(`{"x":` + deep + `}`)); err == nil {
		t.Error("nesting past maxDepth accepted")
	}
}

func checkPage(t *testing.T, b []byte) {
	t.Helper()
	var got messagesPage
	err := got.decodeBody(b)
	want, ok := referencePage(b)
	if (err == nil) != ok {
		t.Fatalf("%q: decodeBody error %v, encoding/json ok=%v", b, err, ok)
	}
	if ok && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %+v\nwant %+v", b, got, want)
	}
}

// FuzzDecodePage: decodeBody accepts exactly what encoding/json accepts
// (under the rules above) and reads the same events from it.
func FuzzDecodePage(f *testing.F) {
	for _, s := range pageSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if strings.Count(string(b), "[")+strings.Count(string(b), "{") > 1000 {
			return // nesting limits differ past a depth pages never reach
		}
		checkPage(t, b)
	})
}

// samplePage is a page as the node writes it: 100 chat messages.
func samplePage() []byte {
	var b strings.Builder
	b.WriteString(`{"chunk":[`)
	for i := range 100 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"content":{"body":"seq 1234","msgtype":"m.text"},"event_id":"$TBOpcvZfMWpOdFnYA6lbh92QVTFhpllQqvUjuAq1zt4",` +
			`"origin_server_ts":1795321346912,"room_id":"!9cc1a99df0ed092bbf:k51qzi5uqu5diet4k7r4pcpllk4vodb25prtgijtm218pjec4ttrsc6rpvs6d7",` +
			`"sender":"@bench882617_sender:k51qzi5uqu5diet4k7r4pcpllk4vodb25prtgijtm218pjec4ttrsc6rpvs6d7","type":"m.room.message","unsigned":{}}`)
	}
	b.WriteString(`],"start":"s4300","end":"s4199"}`)
	return []byte(b.String())
}

func BenchmarkDecodePage(b *testing.B) {
	body := samplePage()
	b.SetBytes(int64(len(body)))
	var p messagesPage
	for b.Loop() {
		if err := p.decodeBody(body); err != nil || len(p.Chunk) != 100 {
			b.Fatal(err)
		}
	}
}

// The encoding/json decoding it replaces, for comparison.
func BenchmarkDecodePageEncodingJSON(b *testing.B) {
	body := samplePage()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var p struct {
			Chunk []event `json:"chunk"`
			End   string  `json:"end"`
		}
		if err := json.Unmarshal(body, &p); err != nil || len(p.Chunk) != 100 {
			b.Fatal(err)
		}
	}
}
