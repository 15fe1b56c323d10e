package protocol_test

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// section returns the markdown table rows (cells split, backticks kept)
// under heading in doc, up to the next heading of the same or a higher
// level.
func section(t *testing.T, doc, heading string) [][]string {
	t.Helper()
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("docs/PROTOCOL.md has no %q", heading)
	}
	level := heading[:strings.IndexByte(heading, ' ')+1]
	rest := doc[i+len(heading)+2:]
	if j := strings.Index(rest, "\n"+level); j >= 0 {
		rest = rest[:j]
	}
	var rows [][]string
	for _, line := range strings.Split(rest, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for k := range cells {
			cells[k] = strings.TrimSpace(cells[k])
		}
		rows = append(rows, cells)
	}
	return rows
}

var quoted = regexp.MustCompile("`([a-z_]+)`")

// names returns the `name`s a cell holds.
func names(cell string) []string {
	var out []string
	for _, m := range quoted.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// jsonFields returns the JSON keys of struct value v, "type" left out.
func jsonFields(v any) []string {
	var out []string
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" && name != "type" {
			out = append(out, name)
		}
	}
	return out
}

func readDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sameSet fails the test unless doc and code name the same things.
func sameSet(t *testing.T, what string, doc, code []string) {
	t.Helper()
	for _, d := range doc {
		if !slices.Contains(code, d) {
			t.Errorf("%s: docs/PROTOCOL.md documents %q, which the protocol package does not have", what, d)
		}
	}
	for _, c := range code {
		if !slices.Contains(doc, c) {
			t.Errorf("%s: %q is not documented in docs/PROTOCOL.md", what, c)
		}
	}
}

// TestDocumentedRequests: docs/PROTOCOL.md's table of requests lists
// every request type, nothing more, and only Request's fields, all of
// them.
func TestDocumentedRequests(t *testing.T) {
	rows := section(t, readDoc(t), "## Client requests")
	var types, fields []string
	for _, r := range rows {
		types = append(types, names(r[0])...)
		fields = append(fields, names(r[1])...)
	}
	sameSet(t, "request types", types, protocol.RequestTypes())
	fields = append(fields, "id") // every request's, documented above the table
	sort.Strings(fields)
	sameSet(t, "request fields", slices.Compact(fields), jsonFields(protocol.Request{}))
}

// events maps each event type to the Go type that carries it.
var events = map[string]any{
	protocol.EventWelcome:   protocol.Welcome{},
	protocol.EventMessage:   protocol.Message{},
	protocol.EventEdited:    protocol.Edit{},
	protocol.EventDeleted:   protocol.Edit{},
	protocol.EventReactions: protocol.Reactions{},
	protocol.EventJoin:      protocol.Joined{},
	protocol.EventReset:     protocol.Reset{},
	protocol.EventLeave:     protocol.Left{},
	protocol.EventSeen:      protocol.Seen{},
	protocol.EventRead:      protocol.Read{},
	protocol.EventPresence:  protocol.Presence{},
	protocol.EventHistory:   protocol.History{},
	protocol.EventDM:        protocol.DM{},
	protocol.EventAuth:      protocol.Authed{},
	protocol.EventTyping:    protocol.Typing{},
	protocol.EventNick:      protocol.NickChanged{},
	protocol.EventError:     protocol.Error{},
	protocol.EventRooms:     protocol.RoomList{},
	protocol.EventSearch:    protocol.SearchResult{},
}

// TestDocumentedEvents: docs/PROTOCOL.md's table of events lists every
// event type, nothing more, each with the fields of its Go type (edited
// and deleted share one: together they name all its fields).
func TestDocumentedEvents(t *testing.T) {
	rows := section(t, readDoc(t), "## Server events")
	var types []string
	byType := map[string][]string{} // Go type name -> documented fields
	for _, r := range rows {
		if len(r) != 3 {
			continue // the error codes' table
		}
		typ := names(r[0])
		if len(typ) != 1 {
			t.Fatalf("event row %q: want one type", r[0])
		}
		types = append(types, typ[0])
		v, ok := events[typ[0]]
		if !ok {
			continue // reported below
		}
		got := names(r[1])
		for _, f := range got {
			if !slices.Contains(jsonFields(v), f) {
				t.Errorf("event %s: docs/PROTOCOL.md documents field %q, which %T does not have", typ[0], f, v)
			}
		}
		name := reflect.TypeOf(v).Name()
		byType[name] = append(byType[name], got...)
	}
	sameSet(t, "event types", types, protocol.EventTypes())
	for typ, v := range events {
		for _, f := range jsonFields(v) {
			if !slices.Contains(byType[reflect.TypeOf(v).Name()], f) {
				t.Errorf("event %s: field %q of %T is not documented", typ, f, v)
			}
		}
	}
}

// TestDocumentedCodes: the table of error codes is protocol.Codes().
func TestDocumentedCodes(t *testing.T) {
	var doc, code []string
	for _, r := range section(t, readDoc(t), "### Error codes") {
		doc = append(doc, names(r[0])...)
	}
	for _, c := range protocol.Codes() {
		code = append(code, string(c))
	}
	sameSet(t, "error codes", doc, code)
}

// TestDocumentedClosing: every close code and reason the server sends is
// in docs/PROTOCOL.md, and the engine's reasons are protocol's.
func TestDocumentedClosing(t *testing.T) {
	doc := readDoc(t)
	for _, c := range []protocol.CloseCode{protocol.CloseGoingAway, protocol.CloseProtocolError, protocol.CloseInvalidPayload,
		protocol.ClosePolicyViolation, protocol.CloseTooBig, protocol.CloseTryAgainLater, protocol.CloseDisconnected,
		protocol.CloseTokenExpired, protocol.CloseBanned} {
		if !strings.Contains(doc, "**"+strconv.Itoa(int(c))+"**") {
			t.Errorf("close code %d is not documented", c)
		}
	}
	for _, r := range []string{protocol.ReasonShutdown, protocol.ReasonRateLimit, protocol.ReasonSlowConsumer,
		protocol.ReasonHeartbeat, protocol.ReasonInflateRate, protocol.ReasonServerFull, protocol.ReasonTokenExpired,
		protocol.ReasonBanned} {
		if !strings.Contains(doc, "`"+r+"`") {
			t.Errorf("close reason %q is not documented", r)
		}
	}
	for _, tc := range []struct{ engine, protocol string }{
		{engine.ReasonShutdown, protocol.ReasonShutdown},
		{engine.ReasonSlowConsumer, protocol.ReasonSlowConsumer},
		{engine.ReasonHeartbeat, protocol.ReasonHeartbeat},
		{engine.ReasonInflateRate, protocol.ReasonInflateRate},
		{engine.ReasonServerFull, protocol.ReasonServerFull},
	} {
		if tc.engine != tc.protocol {
			t.Errorf("the engine closes with %q, the protocol says %q", tc.engine, tc.protocol)
		}
	}
	for _, tc := range []struct {
		engine   engine.StatusCode
		protocol protocol.CloseCode
	}{
		{engine.StatusGoingAway, protocol.CloseGoingAway}, {engine.StatusProtocolError, protocol.CloseProtocolError},
		{engine.StatusInvalidPayload, protocol.CloseInvalidPayload}, {engine.StatusPolicyViolation, protocol.ClosePolicyViolation},
		{engine.StatusMessageTooBig, protocol.CloseTooBig}, {engine.StatusTryAgainLater, protocol.CloseTryAgainLater},
	} {
		if int(tc.engine) != int(tc.protocol) {
			t.Errorf("engine %v is protocol %d", tc.engine, tc.protocol)
		}
	}
}
