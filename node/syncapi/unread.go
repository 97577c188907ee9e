package syncapi

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"hearth/node/storage"
)

// Unread notification counts, from the spec's default push rules: the
// events after the user's read position that notify them, and those that
// highlight (mention them). The read position is the newer of the user's
// main-timeline read receipts (public or private) and their own newest
// event: what one sends, one has read. With neither, counting starts at
// their membership.
//
// Counting walks the room's stream back from its newest event and stops
// at the read position, at the user's own event or after maxUnreadScan
// events (the counts are then a floor). A cache keeps each (user, room)'s
// counts with the range they cover, so the next sync counts only what
// arrived since: the cost follows new events, not history. What arrived
// since is mostly what the sync's timeline scan just read (reader.walks),
// and the read position comes with the sync's rooms (UserRoom.ReadPos):
// then counting runs no query. Events of ignored users do not count (a
// change of the ignore list shows in counts from the next read receipt
// on).

// maxUnreadScan bounds the events one count walks.
const maxUnreadScan = 1000

type unreadCache = boundedCache[unreadKey, unreadCount]

type unreadKey struct {
	user string
	room int64
}

// unreadCount covers the stream positions (from, upto]: the room's events
// up to last, its newest when counted, and none after it (upto is the
// position of the snapshot counted in). A read at a position in [last,
// upto] sees the same events.
type unreadCount struct {
	from, last, upto  int64
	notify, highlight int
}

const maxUnreadCache = 100000

func newUnreadCache() *unreadCache { return newBoundedCache[unreadKey, unreadCount](maxUnreadCache) }

// unreadNotifications fills in the counts of every joined room in the
// response. rooms are the memberships the sync read (others are looked
// up).
func (rd *reader) unreadNotifications(res *syncResponse, rooms map[string]storage.UserRoom) error {
	for id, jr := range res.Rooms.Join {
		ur, ok := rooms[id]
		if !ok {
			var err error
			if ur, err = rd.snap.MembershipByID(rd.user, id); err != nil {
				return fmt.Errorf("syncapi: membership of %s: %w", id, err)
			}
		}
		n, h, err := rd.unreadCounts(roomInfo{ur.RoomNID, id, ur.Version}, ur)
		if err != nil {
			return err
		}
		jr.Unread = &unreadNotifications{Notifications: n, Highlights: h}
	}
	return nil
}

// unreadCounts counts one room; ur is the user's membership of it, read
// in the reader's snapshot.
func (rd *reader) unreadCounts(rm roomInfo, ur storage.UserRoom) (int, int, error) {
	from := ur.ReadPos
	if !ur.SyncCols {
		var err error
		if from, err = rd.snap.OwnReadPos(rm.id, rd.user); err != nil {
			return 0, 0, err
		}
	}
	if from == 0 {
		from = ur.Pos
	}
	latest := min(ur.LatestPos, rd.readPos)
	k := unreadKey{rd.user, rm.nid}
	prev, ok := rd.s.unread.get(k)
	lo := from
	// A count from an older snapshot extends to this one; one from a
	// newer snapshot (a concurrent sync) only if the room has had no
	// events since this one.
	if ok && prev.from == from && prev.last <= latest && prev.upto >= from {
		if latest <= prev.upto {
			return prev.notify, prev.highlight, nil
		}
		lo = prev.upto
	} else {
		ok = false
	}
	ignored, err := rd.ignoredUsers()
	if err != nil {
		return 0, 0, err
	}
	// No row of the room lies after latest in this snapshot.
	u := unreadCount{from: from, last: latest, upto: max(latest, rd.readPos)}
	uc := &unreadCtx{rd: rd, rm: rm, memberNID: ur.EventNID}
	own, scanned := false, 0
	count := func(ev *event) bool {
		if scanned++; scanned > maxUnreadScan {
			return false
		}
		if ev == nil {
			return true
		}
		if ev.Sender == rd.user {
			own = true
			return false
		}
		if ignored[ev.Sender] {
			return true
		}
		notify, highlight := uc.classify(ev)
		if notify {
			u.notify++
		}
		if highlight {
			u.highlight++
		}
		return true
	}
	if w := rd.walks[rm.nid]; w != nil && w.lo <= lo && w.hi >= latest {
		for i := range w.rows {
			if pos := w.rows[i].Pos; pos > latest {
				continue
			} else if pos <= lo || !count(w.evs[i]) {
				break
			}
		}
	} else {
		was := rd.lookOnly
		rd.lookOnly = true // old events would only evict the recent ones
		err = rd.snap.StreamEach(rm.nid, lo, latest, true, func(r *storage.StreamRow) bool {
			return count(rd.event(rm, &r.Event))
		})
		rd.lookOnly = was
		if err != nil {
			return 0, 0, err
		}
	}
	if ok && !own {
		u.notify += prev.notify
		u.highlight += prev.highlight
	}
	rd.s.unread.put(k, u)
	return u.notify, u.highlight, nil
}

// unreadCtx is what classifying a room's events needs, read lazily.
type unreadCtx struct {
	rd *reader
	rm roomInfo
	// memberNID is the user's member event: the memberships table
	// follows the room's current state.
	memberNID   int64
	loaded      bool
	displayName string
	power       *powerLevels
}

type powerLevels struct {
	Users         map[string]int64 `json:"users"`
	UsersDefault  int64            `json:"users_default"`
	Notifications struct {
		Room *int64 `json:"room"`
	} `json:"notifications"`
	creators []string
}

// classify applies the default push rules (override, content, underride,
// in the spec's order) to an event from someone else.
func (uc *unreadCtx) classify(ev *event) (notify, highlight bool) {
	switch ev.Type {
	case "m.room.message", "m.room.encrypted", "m.room.member", "m.room.tombstone", "m.call.invite":
	default:
		return false, false // no default rule notifies for other types
	}
	var e struct {
		Content struct {
			MsgType    string `json:"msgtype"`
			Body       string `json:"body"`
			Membership string `json:"membership"`
			Mentions   *struct {
				UserIDs []string `json:"user_ids"`
				Room    bool     `json:"room"`
			} `json:"m.mentions"`
			RelatesTo struct {
				RelType string `json:"rel_type"`
			} `json:"m.relates_to"`
		} `json:"content"`
	}
	json.Unmarshal(eventContent(ev.JSON), &e.Content)
	c := &e.Content
	user := uc.rd.user
	switch {
	case c.MsgType == "m.notice":
		return false, false
	case ev.Type == "m.room.member":
		// Only an invite for the user notifies; other member events never.
		return c.Membership == "invite" && ev.StateKey != nil && *ev.StateKey == user, false
	case c.Mentions != nil && slices.Contains(c.Mentions.UserIDs, user):
		return true, true
	}
	// The body-matching rules predate intentional mentions: an event that
	// has m.mentions is judged by it alone.
	legacy := c.Mentions == nil && ev.Type == "m.room.message" && c.Body != ""
	if legacy {
		uc.load()
		if uc.displayName != "" && containsWord(c.Body, uc.displayName) {
			return true, true
		}
	}
	if (c.Mentions != nil && c.Mentions.Room) || (legacy && containsWord(c.Body, "@room")) {
		if uc.mayNotifyRoom(ev.Sender) {
			return true, true
		}
	}
	switch {
	case ev.Type == "m.room.tombstone" && ev.StateKey != nil && *ev.StateKey == "":
		return true, true
	case c.RelatesTo.RelType == "m.replace":
		return false, false
	case legacy && containsWord(c.Body, localpart(user)):
		return true, true
	case ev.Type == "m.room.tombstone":
		return false, false
	}
	return true, false // message, encrypted, call
}

// load reads the user's display name in the room.
func (uc *unreadCtx) load() {
	if uc.loaded {
		return
	}
	uc.loaded = true
	rd := uc.rd
	was := rd.lookOnly
	rd.lookOnly = false // every sync with news in the room may need it
	evs, err := rd.events(uc.rm, []int64{uc.memberNID})
	rd.lookOnly = was
	if err != nil || len(evs) == 0 {
		return
	}
	var c struct {
		DisplayName string `json:"displayname"`
	}
	if uc.contentOf(evs[0], &c) {
		uc.displayName = c.DisplayName
	}
}

// mayNotifyRoom reports whether sender has the power to notify the whole
// room (notifications.room, default 50; room creators of v12 rooms have
// every power).
func (uc *unreadCtx) mayNotifyRoom(sender string) bool {
	if uc.power == nil {
		uc.power = &powerLevels{}
		if ev := uc.stateEvent("m.room.power_levels"); ev != nil {
			uc.contentOf(ev, uc.power)
		}
		if ev := uc.stateEvent("m.room.create"); ev != nil && uc.rm.version == "12" {
			var c struct {
				Additional []string `json:"additional_creators"`
			}
			uc.contentOf(ev, &c)
			uc.power.creators = append(c.Additional, ev.Sender)
		}
	}
	p := uc.power
	if slices.Contains(p.creators, sender) {
		return true
	}
	need := int64(50)
	if p.Notifications.Room != nil {
		need = *p.Notifications.Room
	}
	have, ok := p.Users[sender]
	if !ok {
		have = p.UsersDefault
	}
	return have >= need
}

// stateEvent reads one current state event with the empty state key (nil
// if none or unreadable).
func (uc *unreadCtx) stateEvent(typ string) *event {
	rd := uc.rd
	types, err := rd.typeNIDs([]string{typ})
	if err != nil || types[typ] == 0 {
		return nil
	}
	_, empty, err := rd.hvKey()
	if err != nil || empty == 0 {
		return nil
	}
	entries, err := rd.snap.CurrentStateKeys(uc.rm.nid, [][2]int64{{types[typ], empty}})
	if err != nil || len(entries) == 0 {
		return nil
	}
	evs, err := rd.events(uc.rm, []int64{entries[0].EventNID})
	if err != nil || len(evs) == 0 {
		return nil
	}
	return evs[0]
}

func (uc *unreadCtx) contentOf(ev *event, v any) bool {
	c := eventContent(ev.JSON)
	return c != nil && json.Unmarshal(c, v) == nil
}

// eventContent is the raw content of an event's JSON (nil if none):
// decoding only it spares encoding/json the rest of the event.
func eventContent(js []byte) []byte {
	var c []byte
	eachField(js, func(k, v []byte) bool {
		if string(k) == `"content"` {
			c = v
			return false
		}
		return true
	})
	return c
}

// localpart is a user ID's local part.
func localpart(userID string) string {
	l := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(l, ':'); i >= 0 {
		l = l[:i]
	}
	return l
}

// containsWord reports whether s contains word, case-insensitively, with
// no letter, digit or underscore just before or after it (the push
// rules' word boundaries).
func containsWord(s, word string) bool {
	if word == "" {
		return false
	}
	s, word = strings.ToLower(s), strings.ToLower(word)
	for off := 0; off < len(s); {
		i := strings.Index(s[off:], word)
		if i < 0 {
			return false
		}
		start, end := off+i, off+i+len(word)
		before, _ := utf8.DecodeLastRuneInString(s[:start])
		after, _ := utf8.DecodeRuneInString(s[end:])
		if (start == 0 || !wordRune(before)) && (end == len(s) || !wordRune(after)) {
			return true
		}
		off = start + 1
	}
	return false
}

func wordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }
