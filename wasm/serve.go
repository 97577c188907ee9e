//go:build js

package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"syscall/js"

	"hearth/node/clientapi"
	"hearth/node/httputil"
	"hearth/p2p/host"
	"hearth/wasm/opfs"
)

// Status is the browser node's answer to /_hearth/v1/status: the native
// node's fields (DESIGN.md, "Contracts") plus the browser's own.
type Status struct {
	ServerName string          `json:"server_name"`
	PeerID     string          `json:"peer_id"`
	Addrs      []string        `json:"addrs"`
	Peers      []host.PeerInfo `json:"peers"`
	// Starting is true until storage is open and the node serves the
	// whole client API; until then only this status and
	// /_matrix/client/versions answer (the rest waits).
	Starting bool `json:"starting"`
	// P2P is "starting", "up" or the error that kept libp2p down.
	P2P        string    `json:"p2p"`
	Persistent bool      `json:"persistent"`
	Boot       bootTimes `json:"boot"`
	// Federation is what the node is fetching from other servers now (a
	// join, a backfill), for the page to show progress.
	Federation fedStatus `json:"federation"`
	// OPFS is the storage VFS's work so far: its share of the time tells
	// the cost of the browser's file system from SQLite's and ours.
	OPFS opfs.Stats `json:"opfs"`
	// Checks is what the check workers took off the node's thread.
	Checks checkStats `json:"checks"`
}

func (b *browserNode) status() (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.id == nil {
		if b.startErr != nil {
			return nil, b.startErr
		}
		return nil, errors.New("the node is not started")
	}
	st := Status{
		ServerName: b.id.ServerName, PeerID: b.id.PeerID.String(),
		Addrs: []string{}, Peers: []host.PeerInfo{},
		Persistent: b.persistent, Boot: b.boot, P2P: "starting",
		Federation: b.fed.status(), OPFS: opfs.ReadStats(), Checks: b.checks.stats(),
	}
	select {
	case <-b.ready:
	default:
		st.Starting = true
	}
	switch {
	case b.h != nil:
		st.P2P = "up"
		for _, a := range b.h.Addrs() {
			st.Addrs = append(st.Addrs, a.String())
		}
		if ps := b.h.Peers(); ps != nil {
			st.Peers = ps
		}
	case b.hostErr != nil:
		st.P2P = b.hostErr.Error()
	}
	return st, nil
}

// earlyAPI answers /_matrix/client/versions before storage is open: a
// client API with no storage behind it, of which only that endpoint (which
// needs none) is ever called.
func earlyAPI(serverName string) http.Handler {
	mux := http.NewServeMux()
	clientapi.New(clientapi.Config{ServerName: serverName}, nil, nil, nil).Register(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/_matrix/client/versions" {
			mux.ServeHTTP(w, r)
		}
	})
}

// serve answers one request from the page: /_hearth/v1/status here, the
// rest through the node's client API. Status, versions and CORS
// preflights answer as soon as the identity is known; the rest waits for
// storage.
func (b *browserNode) serve(req *http.Request) js.Value {
	rec := httptest.NewRecorder()
	b.mu.Lock()
	early := b.early
	b.mu.Unlock()
	switch {
	case req.URL.Path == "/_hearth/v1/status":
		st, err := b.status()
		if err != nil {
			httputil.WriteError(rec, req, httputil.Errf(http.StatusServiceUnavailable, "M_UNKNOWN", "the browser node is not running: "+err.Error()))
			break
		}
		httputil.WriteJSON(rec, http.StatusOK, st)
	case early != nil && (req.Method == http.MethodOptions || req.Method == http.MethodGet && req.URL.Path == "/_matrix/client/versions"):
		httputil.CORS(early).ServeHTTP(rec, req)
	default:
		n, err := b.running(req.Context())
		if err != nil {
			httputil.WriteError(rec, req, httputil.Errf(http.StatusServiceUnavailable, "M_UNKNOWN", "the browser node did not start: "+err.Error()))
			break
		}
		httputil.CORS(n.Handler()).ServeHTTP(rec, req)
	}
	return responseToJS(rec)
}
