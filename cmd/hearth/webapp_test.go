package main

import (
	"net/http/httptest"
	"testing"
	"testing/fstest"
)

// The wasm goes pre-compressed to browsers on other machines and as is to
// one on this machine, whose HTTP cache would otherwise decode it on every
// page load; other files go compressed to both.
func TestWebAppEncodingByClient(t *testing.T) {
	files := fstest.MapFS{
		"hearth.wasm":    {Data: []byte("\x00asm raw")},
		"hearth.wasm.br": {Data: []byte("brotli")},
		"hearth.wasm.gz": {Data: []byte("gzip")},
		"app.js":         {Data: []byte("js")},
		"app.js.gz":      {Data: []byte("js gzip")},
	}
	h := webApp(files)
	for _, tc := range []struct {
		name, remote, path, wantEnc, wantBody, wantType string
	}{
		{"wasm to this machine", "127.0.0.1:5000", "/hearth.wasm", "", "\x00asm raw", "application/wasm"},
		{"wasm to this machine (IPv6)", "[::1]:5000", "/hearth.wasm", "", "\x00asm raw", "application/wasm"},
		{"wasm to another machine", "192.0.2.7:5000", "/hearth.wasm", "br", "brotli", "application/wasm"},
		{"script to this machine", "127.0.0.1:5000", "/app.js", "gzip", "js gzip", "text/javascript; charset=utf-8"},
	} {
		req := httptest.NewRequest("GET", tc.path, nil)
		req.RemoteAddr = tc.remote
		req.Header.Set("Accept-Encoding", "gzip, deflate, br")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Header().Get("Content-Encoding") != tc.wantEnc || rec.Body.String() != tc.wantBody || rec.Header().Get("Content-Type") != tc.wantType {
			t.Errorf("%s: %d, encoding %q, type %q, body %q", tc.name, rec.Code, rec.Header().Get("Content-Encoding"), rec.Header().Get("Content-Type"), rec.Body.String())
		}
	}
}
