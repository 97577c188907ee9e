package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"

	"hearth/node/httputil"
	"hearth/node/roomserver"
	"hearth/node/storage"
)

// txnBody is a /send transaction as it arrives.
type txnBody struct {
	Origin         string                  `json:"origin"`
	OriginServerTS int64                   `json:"origin_server_ts"`
	PDUs           []json.RawMessage       `json:"pdus"`
	EDUs           []gomatrixserverlib.EDU `json:"edus"`
}

// ephemeral are the EDU types handed to Config.OnEDU; others are dropped.
var ephemeral = map[string]bool{
	"m.typing": true, "m.receipt": true, "m.presence": true,
	"m.direct_to_device": true, "m.device_list_update": true, "m.signing_key_update": true,
}

// handleSend serves PUT /v1/send/{txnId}: each PDU goes through the
// roomserver (gaps filled from the origin first), each EDU to OnEDU. A
// transaction ID seen before from the same origin gets the first answer.
func (f *Federation) handleSend(r *http.Request, origin string, body []byte) (any, error) {
	txnID := r.PathValue("txnId")
	var t txnBody
	if err := httputil.DecodeJSON(body, &t); err != nil {
		return nil, err
	}
	if len(t.PDUs) > maxTxnPDUs || len(t.EDUs) > maxTxnEDUs {
		return nil, httputil.Errf(400, "M_TOO_LARGE",
			fmt.Sprintf("a transaction holds at most %d PDUs and %d EDUs", maxTxnPDUs, maxTxnEDUs))
	}
	release, err := f.originLock(r.Context(), origin)
	if err != nil {
		return nil, err
	}
	defer release()
	// Whether the transaction was seen is read while its PDUs' signatures
	// are checked: in the browser that check waits on WebCrypto, and the
	// node's one thread would otherwise idle meanwhile.
	type seenTxn struct {
		resp []byte
		err  error
	}
	seen := make(chan seenTxn, 1)
	go func() {
		resp, err := f.db.FedTxnResponse(r.Context(), origin, txnID)
		seen <- seenTxn{resp, err}
	}()
	pdus := f.checkPDUs(r.Context(), origin, t.PDUs)
	if s := <-seen; s.err == nil {
		return json.RawMessage(s.resp), nil
	} else if !errors.Is(s.err, storage.ErrNotFound) {
		return nil, s.err
	}
	resp := fclient.RespSend{PDUs: f.inputPDUs(r.Context(), origin, pdus)}
	for _, edu := range t.EDUs {
		if !ephemeral[edu.Type] {
			f.log.Debug("dropping EDU of unknown type", "origin", origin, "type", edu.Type)
			continue
		}
		edu.Origin = origin
		if f.cfg.OnEDU != nil {
			f.cfg.OnEDU(origin, edu)
		}
	}
	b, err := json.Marshal(resp)
	if err != nil {
		return nil, err
	}
	if err := f.db.PutFedTxn(r.Context(), origin, txnID, time.Now().UnixMilli(), b); err != nil {
		f.log.Warn("recording transaction", "origin", origin, "txn", txnID, "err", err)
	}
	return json.RawMessage(b), nil
}

// originLock serialises the transactions of one origin. The spec has a
// sender wait for each answer before the next transaction, so this costs
// an honest server nothing; a retry racing its first attempt waits for
// the first answer, and a peer flooding us in parallel is held to one
// transaction at a time (the wait ends with the request).
func (f *Federation) originLock(ctx context.Context, origin string) (func(), error) {
	for {
		f.originMu.Lock()
		ch, busy := f.originBusy[origin]
		if !busy {
			ch = make(chan struct{})
			f.originBusy[origin] = ch
			f.originMu.Unlock()
			return func() {
				f.originMu.Lock()
				delete(f.originBusy, origin)
				f.originMu.Unlock()
				close(ch)
			}, nil
		}
		f.originMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// checkedPDUs are a transaction's PDUs, checked and not yet input.
type checkedPDUs struct {
	out  map[string]fclient.PDUResult // the results known already
	raws []json.RawMessage            // the PDUs to input
	in   []roomserver.Verified        // and their checks, in the same order
}

// checkPDUs refuses the PDUs a room's server ACL shuts origin out of and
// checks the others' signatures and hashes.
func (f *Federation) checkPDUs(ctx context.Context, origin string, raws []json.RawMessage) checkedPDUs {
	c := checkedPDUs{out: make(map[string]fclient.PDUResult, len(raws))}
	var in []roomserver.InputEvent
	for _, raw := range raws {
		if roomID := roomIDOf(raw); roomID != "" && f.denied(ctx, roomID, origin) {
			if p := f.parseStored(ctx, raw); p != nil {
				c.out[p.EventID()] = fclient.PDUResult{Error: "the room's server ACL does not allow " + origin}
			}
			continue
		}
		c.raws = append(c.raws, raw)
		in = append(in, roomserver.InputEvent{Origin: origin, JSON: raw})
	}
	if len(in) > 0 {
		c.in = f.rs.Verify(ctx, in)
	}
	return c
}

// inputPDUs inputs a transaction's checked PDUs and returns each one's
// result. Events that wait for earlier events are retried, per room in
// parallel, once the gap is filled from origin (each room within
// GapTimeout).
func (f *Federation) inputPDUs(ctx context.Context, origin string, c checkedPDUs) map[string]fclient.PDUResult {
	out, raws := c.out, c.raws
	if len(raws) == 0 {
		return out
	}
	res := f.rs.InputVerified(ctx, c.in)
	waiting := map[string][]gomatrixserverlib.PDU{}
	for i, r := range res {
		var me *roomserver.MissingEventsError
		if errors.As(r.Err, &me) {
			if p := f.parseStored(ctx, raws[i]); p != nil {
				roomID := p.RoomID().String()
				waiting[roomID] = append(waiting[roomID], p)
				continue
			}
		}
		id := r.EventID
		if id == "" { // refused before the roomserver named it
			p := f.parseStored(ctx, raws[i])
			if p == nil {
				continue // unparseable: nothing to key a result by
			}
			id = p.EventID()
		}
		out[id] = pduResult(r)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for roomID, evs := range waiting {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gctx, cancel := context.WithTimeout(ctx, f.cfg.GapTimeout)
			defer cancel()
			g := &gap{origin: origin, roomID: roomID, version: evs[0].Version()}
			for _, ev := range topoOrder(evs, prevDeps) {
				err := f.ensure(gctx, g, ev)
				mu.Lock()
				out[ev.EventID()] = pduResult(roomserver.InputResult{Err: err})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// roomIDOf reads an event's room ID, "" if it has none.
func roomIDOf(raw []byte) string {
	var probe struct {
		RoomID string `json:"room_id"`
	}
	if json.Unmarshal(raw, &probe) != nil {
		return ""
	}
	return probe.RoomID
}

// parseStored parses an event of a room we have, for retrying it.
func (f *Federation) parseStored(ctx context.Context, raw []byte) gomatrixserverlib.PDU {
	v, err := f.rs.RoomVersion(ctx, roomIDOf(raw))
	if err != nil {
		return nil
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(v)
	if err != nil {
		return nil
	}
	p, err := roomserver.ParseUntrusted(verImpl, raw)
	if err != nil {
		return nil
	}
	return p
}

// pduResult is an event's entry in the /send answer: empty when it was
// stored (a soft-failed event too: the spec counts it as accepted).
func pduResult(r roomserver.InputResult) fclient.PDUResult {
	if r.Err != nil {
		return fclient.PDUResult{Error: r.Err.Error()}
	}
	return fclient.PDUResult{}
}
