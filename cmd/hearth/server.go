package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"hearth/node/httputil"
)

// Status is the answer of GET /_hearth/v1/status (DESIGN.md, "Contracts").
type Status struct {
	ServerName string     `json:"server_name"`
	PeerID     string     `json:"peer_id"`
	Addrs      []string   `json:"addrs"`
	Peers      []PeerInfo `json:"peers"`
}

// PeerInfo is one connected libp2p peer in the status answer.
type PeerInfo struct {
	PeerID     string   `json:"peer_id"`
	ServerName string   `json:"server_name"`
	Addrs      []string `json:"addrs"`
}

// routes is what the HTTP listener serves.
type routes struct {
	Matrix http.Handler  // the node's /_matrix/ API
	Status func() Status // the node's current status
	Web    fs.FS         // the embedded web app
	// PublicStatus answers /_hearth/v1/status to every client, not only
	// loopback ones.
	PublicStatus bool
}

// handler assembles the native node's HTTP surface.
func (rt routes) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/_matrix/", httputil.CORS(rt.Matrix))
	mux.HandleFunc("GET /_hearth/v1/status", rt.status)
	mux.HandleFunc("GET /_hearth/v1/schema.db", schema.serve)
	// Anything else under /_hearth/ is ours too: answer like the Matrix
	// API does rather than with the web app's 404 page.
	mux.HandleFunc("/_hearth/", func(w http.ResponseWriter, r *http.Request) {
		httputil.WriteError(w, r, httputil.Unrecognized(http.StatusNotFound))
	})
	mux.Handle("/", webApp(rt.Web))
	return mux
}

// appPath is where the web app's page lives ("/" redirects there). The
// service worker's scope is this path alone: it controls the app's pages,
// whose /_matrix/ requests it answers with the browser node, and not the
// node's own workers, whose scripts are at the root. A worker it
// controlled had every fetch it made (the wasm, the native node's status)
// wait for the service worker to be up, after a reload up to a second.
const appPath = "/app"

// webApp serves the embedded web app. Every file gets an ETag (a hash of
// its content: embedded files have no modification time), so browsers
// revalidate instead of downloading the ~50 MB wasm again. A file with a
// pre-compressed sibling (NAME.br, NAME.gz, written by `make wasm`) is
// served as that when the browser accepts the encoding, except the wasm
// to a browser on this machine: the browser's HTTP cache keeps a body as
// it was sent and decodes it on every page load (~0.3 s for 50 MB of
// brotli), which saves nothing over loopback.
func webApp(files fs.FS) http.Handler {
	var mu sync.Mutex
	etags := map[string]string{}
	read := func(name string) ([]byte, string, bool) {
		b, err := fs.ReadFile(files, name)
		if err != nil {
			return nil, "", false
		}
		mu.Lock()
		defer mu.Unlock()
		tag, ok := etags[name]
		if !ok {
			sum := sha256.Sum256(b)
			tag = `"` + hex.EncodeToString(sum[:12]) + `"`
			etags[name] = tag
		}
		return b, tag, true
	}
	fallback := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
		switch "/" + name {
		case "/":
			target := appPath
			if r.URL.RawQuery != "" {
				target += "?" + r.URL.RawQuery
			}
			http.Redirect(w, r, target, http.StatusFound)
			return
		case appPath:
			name = "index.html"
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			fallback.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Add("Vary", "Accept-Encoding")
		accept := r.Header.Get("Accept-Encoding")
		if path.Ext(name) == ".wasm" && isLoopback(r.RemoteAddr) {
			accept = ""
		}
		for _, enc := range []struct{ ext, name string }{{".br", "br"}, {".gz", "gzip"}} {
			if !strings.Contains(accept, enc.name) {
				continue
			}
			if b, tag, ok := read(name + enc.ext); ok {
				h.Set("Content-Encoding", enc.name)
				h.Set("ETag", tag)
				if ct := contentType(name); ct != "" {
					h.Set("Content-Type", ct)
				}
				// ServeContent leaves out Content-Length for encoded
				// bodies; the length helps browsers show progress.
				h.Set("Content-Length", strconv.Itoa(len(b)))
				r.Header.Del("Range") // ranges of an encoded body: not needed
				http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
				return
			}
		}
		b, tag, ok := read(name)
		if !ok || strings.HasSuffix(name, "/") {
			fallback.ServeHTTP(w, r) // directories, 404s
			return
		}
		h.Set("ETag", tag)
		if ct := contentType(name); ct != "" {
			h.Set("Content-Type", ct)
		}
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
	})
}

// contentType is the MIME type of the web app's files, independent of the
// host's mime tables (application/wasm is what instantiateStreaming needs).
func contentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js", ".mjs":
		return "text/javascript; charset=utf-8"
	case ".wasm":
		return "application/wasm"
	case ".css":
		return "text/css; charset=utf-8"
	case ".json", ".map":
		return "application/json"
	case ".png":
		return "image/png"
	case ".svg":
		return "image/svg+xml"
	}
	return ""
}

// status answers GET /_hearth/v1/status. It needs no token, so it answers
// loopback clients only unless the operator opened it: the peer list says
// who this node talks to, which is not for everyone on the network.
func (rt routes) status(w http.ResponseWriter, r *http.Request) {
	if !rt.PublicStatus && !isLoopback(r.RemoteAddr) {
		httputil.WriteError(w, r, httputil.Forbidden("status is only served to loopback clients"))
		return
	}
	st := rt.Status()
	// Empty lists, never null: clients iterate over them.
	if st.Addrs == nil {
		st.Addrs = []string{}
	}
	if st.Peers == nil {
		st.Peers = []PeerInfo{}
	}
	httputil.WriteJSON(w, http.StatusOK, st)
}

// isLoopback reports whether a request's RemoteAddr ("host:port") is on
// the loopback interface.
func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
