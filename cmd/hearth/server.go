package main

import (
	"io/fs"
	"net"
	"net/http"

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
	mux.Handle("/_matrix/", cors(rt.Matrix))
	mux.HandleFunc("GET /_hearth/v1/status", rt.status)
	// Anything else under /_hearth/ is ours too: answer like the Matrix
	// API does rather than with the web app's 404 page.
	mux.HandleFunc("/_hearth/", func(w http.ResponseWriter, r *http.Request) {
		httputil.WriteError(w, r, httputil.Unrecognized(http.StatusNotFound))
	})
	mux.Handle("/", http.FileServerFS(rt.Web))
	return mux
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

// cors lets Matrix clients served from other origins call the API, as the
// spec's "Web Browser Clients" section asks: every answer carries the
// headers, and a preflight OPTIONS is answered here without reaching the
// endpoint's logic.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
