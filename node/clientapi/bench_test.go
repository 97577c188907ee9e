package clientapi_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
)

// BenchmarkSend measures PUT /send end to end over HTTP: token check,
// body read, event build, auth and commit. Sequential: one client waiting
// for each answer, as a chat client does.
func BenchmarkSend(b *testing.B) {
	n := newNode(b)
	alice := n.register("alice")
	room := n.createRoom(alice, nil)
	url := n.srv.URL + v3 + "/rooms/" + esc(room) + "/send/m.room.message/"
	body := []byte(`{"msgtype":"m.text","body":"hello, benchmark"}`)
	client := &http.Client{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		benchPut(b, client, url+fmt.Sprint("s", i), alice.token, body)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
}

// BenchmarkSendParallel is BenchmarkSend from many clients at once: group
// commit should carry it well past the sequential rate.
func BenchmarkSendParallel(b *testing.B) {
	n := newNode(b)
	alice := n.register("alice")
	room := n.createRoom(alice, nil)
	url := n.srv.URL + v3 + "/rooms/" + esc(room) + "/send/m.room.message/"
	var txn atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		client := &http.Client{}
		for pb.Next() {
			n := txn.Add(1)
			body := fmt.Appendf(nil, `{"msgtype":"m.text","body":"hello, benchmark %d"}`, n)
			benchPut(b, client, url+fmt.Sprint("p", n), alice.token, body)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
}

func benchPut(b *testing.B, c *http.Client, url, token string, body []byte) {
	req, _ := http.NewRequest("PUT", url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		b.Fatalf("send: %d", res.StatusCode)
	}
}
