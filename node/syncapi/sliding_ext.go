package syncapi

import (
	"encoding/json"
	"strconv"

	"hearth/node/httputil"
	"hearth/node/storage"
)

// slidingExtensions fills in the extensions the request enabled, by
// running /sync's stream readers into a scratch /sync response and
// reshaping what they wrote. all are the user's memberships.
func (rd *reader) slidingExtensions(res *slidingResponse, req *slidingRequest, dev *httputil.Device, sincePtr *Token,
	since Token, to *Token, tdSince int64, joined []string, all []storage.UserRoom) error {
	ext := &req.Extensions
	sreq := &syncRequest{dev: dev, since: sincePtr, filter: &Filter{}}
	scratch := newSyncResponse()

	if ext.ToDevice.Enabled {
		if err := rd.toDevice(scratch, tdSince, to); err != nil {
			return err
		}
		events := scratch.ToDevice.Events
		res.Extensions["to_device"] = map[string]any{
			"next_batch": strconv.FormatInt(max(to.ToDevice, tdSince), 10),
			"events":     events,
		}
		res.news = res.news || len(events) > 0
	}
	if ext.E2EE.Enabled {
		e2ee := map[string]any{}
		if sincePtr != nil {
			changed, left, err := rd.deviceListDelta(since, *to, all)
			if err != nil {
				return err
			}
			e2ee["device_lists"] = deviceLists{Changed: orEmpty(changed), Left: orEmpty(left)}
			res.news = res.news || len(changed) > 0 || len(left) > 0
		} else {
			e2ee["device_lists"] = deviceLists{Changed: []string{}, Left: []string{}}
		}
		if err := rd.keyCounts(scratch); err != nil {
			return err
		}
		e2ee["device_one_time_keys_count"] = scratch.OneTimeKeyCounts
		e2ee["device_unused_fallback_key_types"] = scratch.FallbackKeyTypes
		res.Extensions["e2ee"] = e2ee
	}
	if ext.AccountData.Enabled {
		if err := rd.accountData(scratch, sreq, since.AccountData, to.AccountData, joined); err != nil {
			return err
		}
		rooms := map[string][]json.RawMessage{}
		for id, jr := range scratch.Rooms.Join {
			if len(jr.AccountData.Events) > 0 {
				rooms[id] = jr.AccountData.Events
			}
		}
		res.Extensions["account_data"] = map[string]any{"global": scratch.AccountData.Events, "rooms": rooms}
		res.news = res.news || len(scratch.AccountData.Events) > 0 || len(rooms) > 0
	}
	if ext.Receipts.Enabled || ext.Typing.Enabled {
		f := &Filter{}
		switch {
		case !ext.Receipts.Enabled:
			f.Room.Ephemeral.Types = &[]string{"m.typing"}
		case !ext.Typing.Enabled:
			f.Room.Ephemeral.Types = &[]string{"m.receipt"}
		}
		// A fresh scratch: account data above may have made room entries.
		eph := newSyncResponse()
		if err := rd.ephemeral(eph, &syncRequest{dev: dev, since: sincePtr, filter: f}, since, *to, joined); err != nil {
			return err
		}
		receipts, typing := map[string]json.RawMessage{}, map[string]json.RawMessage{}
		for id, jr := range eph.Rooms.Join {
			for _, ev := range jr.Ephemeral.Events {
				var probe struct {
					Type string `json:"type"`
				}
				json.Unmarshal(ev, &probe)
				if probe.Type == "m.typing" {
					typing[id] = ev
				} else {
					receipts[id] = ev
				}
			}
		}
		if ext.Receipts.Enabled {
			res.Extensions["receipts"] = map[string]any{"rooms": receipts}
		}
		if ext.Typing.Enabled {
			res.Extensions["typing"] = map[string]any{"rooms": typing}
		}
		res.news = res.news || len(receipts) > 0 || len(typing) > 0
	}
	return nil
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
