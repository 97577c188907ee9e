// Package edu carries ephemeral data between servers: it turns what sync
// reports of local users (typing, read receipts, presence, to-device
// messages, device-list changes) into EDUs for the servers that need them,
// and hands other servers' EDUs, once checked, to sync.
//
// It is glue: it imports syncapi and gomatrixserverlib, and reaches
// federation only through the small Federation interface (which
// *federation.Federation satisfies), so the node wires it and nothing
// imports it but the node.
package edu

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"hearth/node/syncapi"
)

// Federation is what the relay needs of the Server-Server API.
type Federation interface {
	// SendEDU queues an EDU, persistently, for each destination.
	SendEDU(ctx context.Context, edu gomatrixserverlib.EDU, destinations ...string) error
	// RoomServers lists the other servers with members joined to a room.
	RoomServers(ctx context.Context, roomID string) ([]string, error)
}

// Config is what the relay needs from its node.
type Config struct {
	ServerName string
	Sync       *syncapi.Syncer
	Logger     *slog.Logger
}

// Relay moves EDUs between sync and federation.
type Relay struct {
	cfg  Config
	sync *syncapi.Syncer
	log  *slog.Logger

	mu   sync.Mutex
	fed  Federation
	jobs chan func(context.Context)
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// maxPending bounds the outbound EDUs waiting to be queued; past it new
// typing, receipt and presence updates are dropped (they go stale fast,
// and the persistent queue behind is bounded too).
const maxPending = 1024

// New makes a relay. It sends nothing until Attach gives it federation.
func New(cfg Config) *Relay {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Relay{cfg: cfg, sync: cfg.Sync, log: cfg.Logger.With("component", "edu"),
		jobs: make(chan func(context.Context), maxPending), ctx: ctx, stop: stop}
}

// Attach starts sending through fed, and makes the relay sync's Outbound.
func (r *Relay) Attach(fed Federation) {
	r.mu.Lock()
	r.fed = fed
	r.mu.Unlock()
	r.wg.Add(1)
	go r.run()
	r.sync.SetOutbound(r)
}

// Close stops sending (what federation already queued stays queued) and
// detaches from sync. Call it before closing federation.
func (r *Relay) Close() {
	r.sync.SetOutbound(nil)
	r.stop()
	r.wg.Wait()
}

func (r *Relay) run() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case job := <-r.jobs:
			ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
			job(ctx)
			cancel()
		}
	}
}

// later queues work for the sender goroutine, dropping it when too much
// is pending: sync's callers must never wait on federation.
func (r *Relay) later(what string, job func(context.Context)) {
	select {
	case r.jobs <- job:
	default:
		r.log.Warn("outbound EDU dropped: too many pending", "type", what)
	}
}

func (r *Relay) federation() Federation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fed
}

// send queues an EDU for destinations, logging failures.
func (r *Relay) send(ctx context.Context, edu gomatrixserverlib.EDU, dests []string) {
	fed := r.federation()
	if fed == nil || len(dests) == 0 {
		return
	}
	if err := fed.SendEDU(ctx, edu, dests...); err != nil {
		r.log.Warn("queueing EDU", "type", edu.Type, "err", err)
	}
}

// roomServers is the union of the other servers in rooms.
func (r *Relay) roomServers(ctx context.Context, rooms ...string) []string {
	fed := r.federation()
	if fed == nil {
		return nil
	}
	var out []string
	for _, room := range rooms {
		servers, err := fed.RoomServers(ctx, room)
		if err != nil {
			r.log.Warn("servers of a room", "room", room, "err", err)
			continue
		}
		for _, s := range servers {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}
