package clientapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"hearth/node/httputil"
	"hearth/node/storage"
)

// Push rules live in the user's m.push_rules account data ({"global":
// ruleset}), written with the spec's defaults at registration: /sync then
// delivers them (and every change) like any account data, and this file
// only reads and edits that one item.

type pushRule struct {
	RuleID     string          `json:"rule_id"`
	Default    bool            `json:"default"`
	Enabled    bool            `json:"enabled"`
	Actions    json.RawMessage `json:"actions"`
	Conditions json.RawMessage `json:"conditions,omitempty"`
	Pattern    *string         `json:"pattern,omitempty"`
}

type ruleset struct {
	Content   []pushRule `json:"content"`
	Override  []pushRule `json:"override"`
	Room      []pushRule `json:"room"`
	Sender    []pushRule `json:"sender"`
	Underride []pushRule `json:"underride"`
}

type pushRules struct {
	Global ruleset `json:"global"`
}

func (rs *ruleset) kind(k string) *[]pushRule {
	switch k {
	case "content":
		return &rs.Content
	case "override":
		return &rs.Override
	case "room":
		return &rs.Room
	case "sender":
		return &rs.Sender
	case "underride":
		return &rs.Underride
	}
	return nil
}

func raw(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("push rules: %v", err)) // only fixed Go values reach here
	}
	return b
}

type cond = map[string]any

func eventMatch(key, pattern string) cond {
	return cond{"kind": "event_match", "key": key, "pattern": pattern}
}

// The spec's predefined rules (v1.12), in their order.
func defaultRuleset(userID string) ruleset {
	local := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(local, ':'); i >= 0 {
		local = local[:i]
	}
	notify := raw([]any{"notify"})
	none := raw([]any{})
	sound := func(highlight bool) json.RawMessage {
		acts := []any{"notify", map[string]any{"set_tweak": "sound", "value": "default"}}
		if highlight {
			acts = append(acts, map[string]any{"set_tweak": "highlight"})
		}
		return raw(acts)
	}
	highlight := raw([]any{"notify", map[string]any{"set_tweak": "highlight"}})
	rule := func(id string, actions json.RawMessage, conds ...cond) pushRule {
		if conds == nil {
			conds = []cond{}
		}
		return pushRule{RuleID: id, Default: true, Enabled: true, Actions: actions, Conditions: raw(conds)}
	}
	master := rule(".m.rule.master", none)
	master.Enabled = false
	return ruleset{
		Override: []pushRule{
			master,
			rule(".m.rule.suppress_notices", none, eventMatch("content.msgtype", "m.notice")),
			rule(".m.rule.invite_for_me", sound(false),
				eventMatch("type", "m.room.member"), eventMatch("content.membership", "invite"), eventMatch("state_key", userID)),
			rule(".m.rule.member_event", none, eventMatch("type", "m.room.member")),
			rule(".m.rule.is_user_mention", sound(true),
				cond{"kind": "event_property_contains", "key": `content.m\.mentions.user_ids`, "value": userID}),
			rule(".m.rule.contains_display_name", sound(true), cond{"kind": "contains_display_name"}),
			rule(".m.rule.is_room_mention", highlight,
				cond{"kind": "event_property_is", "key": `content.m\.mentions.room`, "value": true},
				cond{"kind": "sender_notification_permission", "key": "room"}),
			rule(".m.rule.roomnotif", highlight,
				cond{"kind": "sender_notification_permission", "key": "room"}, eventMatch("content.body", "@room")),
			rule(".m.rule.tombstone", highlight, eventMatch("type", "m.room.tombstone"), eventMatch("state_key", "")),
			rule(".m.rule.reaction", none, eventMatch("type", "m.reaction")),
			rule(".m.rule.server_acl", none, eventMatch("type", "m.room.server_acl"), eventMatch("state_key", "")),
			rule(".m.rule.suppress_edits", none,
				cond{"kind": "event_property_is", "key": `content.m\.relates_to.rel_type`, "value": "m.replace"}),
		},
		Content: []pushRule{{
			RuleID: ".m.rule.contains_user_name", Default: true, Enabled: true, Actions: sound(true), Pattern: &local,
		}},
		Room:   []pushRule{},
		Sender: []pushRule{},
		Underride: []pushRule{
			rule(".m.rule.call", raw([]any{"notify", map[string]any{"set_tweak": "sound", "value": "ring"}}),
				eventMatch("type", "m.call.invite")),
			rule(".m.rule.encrypted_room_one_to_one", sound(false),
				cond{"kind": "room_member_count", "is": "2"}, eventMatch("type", "m.room.encrypted")),
			rule(".m.rule.room_one_to_one", sound(false),
				cond{"kind": "room_member_count", "is": "2"}, eventMatch("type", "m.room.message")),
			rule(".m.rule.message", notify, eventMatch("type", "m.room.message")),
			rule(".m.rule.encrypted", notify, eventMatch("type", "m.room.encrypted")),
		},
	}
}

// defaultPushRules is the m.push_rules account data a new user starts with.
func defaultPushRules(userID string) []byte {
	return raw(pushRules{Global: defaultRuleset(userID)})
}

func (a *API) registerPushRules(mux *http.ServeMux) {
	a.route(mux, "GET", "/pushrules/{$}", a.getAllPushRules, true)
	a.route(mux, "GET", "/pushrules", a.getAllPushRules, true)
	a.route(mux, "GET", "/pushrules/global/{$}", a.getGlobalPushRules, true)
	a.route(mux, "GET", "/pushrules/{scope}/{kind}/{ruleId}", a.getPushRule, true)
	a.route(mux, "PUT", "/pushrules/{scope}/{kind}/{ruleId}", a.putPushRule, true)
	a.route(mux, "DELETE", "/pushrules/{scope}/{kind}/{ruleId}", a.deletePushRule, true)
	a.route(mux, "GET", "/pushrules/{scope}/{kind}/{ruleId}/{attr}", a.getPushRuleAttr, true)
	a.route(mux, "PUT", "/pushrules/{scope}/{kind}/{ruleId}/{attr}", a.putPushRuleAttr, true)
}

func (a *API) loadPushRules(r *http.Request, userID string) (*pushRules, error) {
	c, err := a.db.AccountData(r.Context(), userID, "", "m.push_rules")
	if errors.Is(err, storage.ErrNotFound) {
		return &pushRules{Global: defaultRuleset(userID)}, nil
	}
	if err != nil {
		return nil, err
	}
	var pr pushRules
	if err := json.Unmarshal(c, &pr); err != nil {
		return nil, fmt.Errorf("stored push rules of %s: %w", userID, err)
	}
	for _, k := range []string{"content", "override", "room", "sender", "underride"} {
		if s := pr.Global.kind(k); *s == nil {
			*s = []pushRule{}
		}
	}
	return &pr, nil
}

func (a *API) savePushRules(r *http.Request, userID string, pr *pushRules) error {
	pos, err := a.db.PutAccountData(r.Context(), userID, "", "m.push_rules", raw(pr))
	if err != nil {
		return fmt.Errorf("save push rules: %w", err)
	}
	a.accountDataChanged(userID, pos)
	return nil
}

func (a *API) getAllPushRules(r *http.Request, dev *httputil.Device) (any, error) {
	return a.loadPushRules(r, dev.UserID)
}

func (a *API) getGlobalPushRules(r *http.Request, dev *httputil.Device) (any, error) {
	pr, err := a.loadPushRules(r, dev.UserID)
	if err != nil {
		return nil, err
	}
	return pr.Global, nil
}

// findRule resolves the path's scope, kind and rule: the kind's rule list
// and the rule's index in it (-1 if absent).
func (a *API) findRule(r *http.Request, pr *pushRules) (*[]pushRule, int, error) {
	if r.PathValue("scope") != "global" {
		return nil, 0, httputil.InvalidParam("unknown push rule scope")
	}
	list := pr.Global.kind(r.PathValue("kind"))
	if list == nil {
		return nil, 0, httputil.InvalidParam("unknown push rule kind")
	}
	id := r.PathValue("ruleId")
	for i, rule := range *list {
		if rule.RuleID == id {
			return list, i, nil
		}
	}
	return list, -1, nil
}

var errNoRule = httputil.NotFound("unknown push rule")

func (a *API) getPushRule(r *http.Request, dev *httputil.Device) (any, error) {
	pr, err := a.loadPushRules(r, dev.UserID)
	if err != nil {
		return nil, err
	}
	list, i, err := a.findRule(r, pr)
	if err != nil {
		return nil, err
	}
	if i < 0 {
		return nil, errNoRule
	}
	return (*list)[i], nil
}

func (a *API) getPushRuleAttr(r *http.Request, dev *httputil.Device) (any, error) {
	rule, err := a.getPushRule(r, dev)
	if err != nil {
		return nil, err
	}
	switch r.PathValue("attr") {
	case "enabled":
		return map[string]bool{"enabled": rule.(pushRule).Enabled}, nil
	case "actions":
		return map[string]json.RawMessage{"actions": rule.(pushRule).Actions}, nil
	}
	return nil, httputil.Errf(400, "M_UNRECOGNIZED", "unknown push rule attribute")
}

func (a *API) putPushRuleAttr(r *http.Request, dev *httputil.Device) (any, error) {
	attr := r.PathValue("attr")
	if attr != "enabled" && attr != "actions" {
		return nil, httputil.Errf(400, "M_UNRECOGNIZED", "unknown push rule attribute")
	}
	var body struct {
		Enabled *bool           `json:"enabled"`
		Actions json.RawMessage `json:"actions"`
	}
	if err := readJSON(r, &body); err != nil {
		return nil, err
	}
	pr, err := a.loadPushRules(r, dev.UserID)
	if err != nil {
		return nil, err
	}
	list, i, err := a.findRule(r, pr)
	if err != nil {
		return nil, err
	}
	if i < 0 {
		return nil, errNoRule
	}
	rule := &(*list)[i]
	if attr == "enabled" {
		if body.Enabled == nil {
			return nil, httputil.MissingParam("enabled is required")
		}
		rule.Enabled = *body.Enabled
	} else {
		if err := checkActions(body.Actions); err != nil {
			return nil, err
		}
		rule.Actions = body.Actions
	}
	return struct{}{}, a.savePushRules(r, dev.UserID, pr)
}

func checkActions(actions json.RawMessage) error {
	var acts []json.RawMessage
	if len(actions) == 0 || json.Unmarshal(actions, &acts) != nil {
		return httputil.BadJSON("actions must be an array")
	}
	return nil
}

func (a *API) putPushRule(r *http.Request, dev *httputil.Device) (any, error) {
	var body struct {
		Actions    json.RawMessage `json:"actions"`
		Conditions json.RawMessage `json:"conditions"`
		Pattern    *string         `json:"pattern"`
	}
	if err := readJSON(r, &body); err != nil {
		return nil, err
	}
	id := r.PathValue("ruleId")
	if strings.HasPrefix(id, ".") {
		return nil, httputil.InvalidParam("rule IDs starting with '.' are reserved for the server")
	}
	if err := checkActions(body.Actions); err != nil {
		return nil, err
	}
	kind := r.PathValue("kind")
	if kind == "content" && body.Pattern == nil {
		return nil, httputil.MissingParam("content rules need a pattern")
	}
	if (kind == "override" || kind == "underride") && len(body.Conditions) == 0 {
		body.Conditions = json.RawMessage(`[]`)
	}
	if len(body.Conditions) > 0 {
		var cs []map[string]json.RawMessage
		if json.Unmarshal(body.Conditions, &cs) != nil {
			return nil, httputil.BadJSON("conditions must be an array of objects")
		}
	}
	pr, err := a.loadPushRules(r, dev.UserID)
	if err != nil {
		return nil, err
	}
	list, i, err := a.findRule(r, pr)
	if err != nil {
		return nil, err
	}
	rule := pushRule{RuleID: id, Enabled: true, Actions: body.Actions, Conditions: body.Conditions, Pattern: body.Pattern}
	if i >= 0 {
		rule.Enabled = (*list)[i].Enabled
		*list = append((*list)[:i], (*list)[i+1:]...)
	}
	// User rules go before the server's defaults of their kind (they take
	// priority), or next to the rule named by before/after.
	at := 0
	if ref := r.URL.Query().Get("before"); ref != "" {
		if at = ruleIndex(*list, ref); at < 0 {
			return nil, httputil.NotFound("unknown rule in before")
		}
	} else if ref := r.URL.Query().Get("after"); ref != "" {
		if at = ruleIndex(*list, ref); at < 0 {
			return nil, httputil.NotFound("unknown rule in after")
		}
		at++
	} else if kind == "override" && len(*list) > 0 && (*list)[0].RuleID == ".m.rule.master" {
		at = 1 // the master rule stays first
	}
	*list = append((*list)[:at], append([]pushRule{rule}, (*list)[at:]...)...)
	return struct{}{}, a.savePushRules(r, dev.UserID, pr)
}

func ruleIndex(list []pushRule, id string) int {
	for i, r := range list {
		if r.RuleID == id {
			return i
		}
	}
	return -1
}

func (a *API) deletePushRule(r *http.Request, dev *httputil.Device) (any, error) {
	pr, err := a.loadPushRules(r, dev.UserID)
	if err != nil {
		return nil, err
	}
	list, i, err := a.findRule(r, pr)
	if err != nil {
		return nil, err
	}
	if i < 0 {
		return nil, errNoRule
	}
	if (*list)[i].Default {
		return nil, httputil.Forbidden("server-default rules cannot be deleted")
	}
	*list = append((*list)[:i], (*list)[i+1:]...)
	return struct{}{}, a.savePushRules(r, dev.UserID, pr)
}
