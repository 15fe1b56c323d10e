package chat

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/parleyhq/parley/engine"
	"github.com/parleyhq/parley/protocol"
)

// The hub's nicknames: choosing one, guests' names, and finding the
// holder of a nick anywhere in the cluster.

func (h *Hub) nick(c *client, req *protocol.Request) {
	old, code, msg := h.setNick(c, req.Nick)
	if code != "" {
		h.fail(c, req, code, msg)
		return
	}
	for _, r := range c.rooms {
		r.mu.Lock()
		r.members[c.id] = c.nick
		r.renamed = append(r.renamed, protocol.Renamed{From: old, To: c.nick})
		h.markDirty(r)
		r.mu.Unlock()
	}
	h.send(c, protocol.NickChanged{Type: protocol.EventNick, Nick: c.nick, Old: old})
}

// setNick checks and claims want for c (cluster-wide) and returns c's old
// nick, or the error code and message refusing it. The rooms are the
// caller's to tell.
func (h *Hub) setNick(c *client, want string) (old string, code protocol.Code, msg string) {
	switch {
	case c.userID() != "":
		return "", protocol.CodeForbidden, "a signed-in user's nick is its token's"
	case h.cfg.Verifier != nil:
		return "", protocol.CodeForbidden, "guests keep their guest nick on a server with signed-in users"
	}
	shown, err := normalizeNick(want)
	if err != nil {
		return "", protocol.CodeBadNick, "nick " + err.Error()
	}
	key, oldKey := keyOf(shown), keyOf(c.nick)
	if isGuest(key) && key != oldKey {
		return "", protocol.CodeBadNick, `nicks starting with "guest-" are given by the server`
	}
	if key == systemKey {
		return "", protocol.CodeBadNick, `"system" signs the server's own messages`
	}
	h.nickMu.Lock()
	holder, taken := h.nicks[key]
	h.nickMu.Unlock()
	if taken && holder != c.id {
		return "", protocol.CodeNickTaken, fmt.Sprintf("%q is taken", shown)
	}
	// The cluster-wide claim (the broker's); a new spelling of the same
	// key (another case, a look-alike of one's own nick) only re-claims
	// the key with it, and takes the old one back if that fails.
	if !isGuest(key) {
		caseOnly := key == oldKey
		if caseOnly {
			_ = h.presence.ReleaseNick(h.ctx, key, h.owner(c.id, c.nick))
		}
		if err := h.presence.ClaimNick(h.ctx, key, h.owner(c.id, shown)); err != nil {
			if caseOnly {
				_ = h.presence.ClaimNick(h.ctx, key, h.owner(c.id, c.nick))
			}
			if errors.Is(err, ErrNickClaimed) {
				return "", protocol.CodeNickTaken, fmt.Sprintf("%q is taken", shown)
			}
			h.log.Warn("claiming a nick", "nick", shown, "err", err)
			return "", protocol.CodeUnavailable, "nicks cannot be changed right now: " + err.Error()
		}
	}
	h.nickMu.Lock()
	if holder, taken := h.nicks[key]; taken && holder != c.id {
		h.nickMu.Unlock() // another client here got it meanwhile (and the claim is theirs)
		return "", protocol.CodeNickTaken, fmt.Sprintf("%q is taken", shown)
	}
	old = c.nick
	delete(h.nicks, oldKey)
	h.nicks[key] = c.id
	c.nick = shown
	h.nickMu.Unlock()
	if key != oldKey && !isGuest(oldKey) {
		if err := h.presence.ReleaseNick(h.ctx, oldKey, h.owner(c.id, old)); err != nil {
			h.log.Warn("releasing a nick", "nick", old, "err", err)
		}
	}
	return old, "", ""
}

// guestNick is the nick a client starts with: unique in the cluster, since
// it holds the node's name and the client's id there.
func (h *Hub) guestNick(id engine.ClientID) string {
	if h.node == "" {
		return "guest-" + strconv.FormatUint(uint64(id), 10)
	}
	return "guest-" + h.node + "-" + strconv.FormatUint(uint64(id), 10)
}

// isGuest reports whether the nick key is reserved for guests: a nick that
// only looks like "guest-..." (a Cyrillic e) has such a key too.
func isGuest(key string) bool { return strings.HasPrefix(key, "guest-") }

// owner is what the broker records for a nick: "node/id/nick".
func (h *Hub) owner(id engine.ClientID, nick string) string {
	return h.node + "/" + strconv.FormatUint(uint64(id), 10) + "/" + nick
}

// parseOwner splits an owner record.
func parseOwner(o string) (node string, id engine.ClientID, nick string, ok bool) {
	node, rest, ok1 := strings.Cut(o, "/")
	ids, nick, ok2 := strings.Cut(rest, "/")
	n, err := strconv.ParseUint(ids, 10, 64)
	return node, engine.ClientID(n), nick, ok1 && ok2 && err == nil
}

// locate finds the client holding the nick key anywhere in the cluster.
func (h *Hub) locate(key, asked string) (node string, id engine.ClientID, nick string, err error) {
	if isGuest(key) {
		// guest-<node>-<id>: no lookup needed. Read from the nick as
		// asked (ASCII; the key is its skeleton, where 1 reads as l).
		rest, found := strings.CutPrefix(strings.ToLower(asked), "guest-")
		i := strings.LastIndexByte(rest, '-')
		n, perr := strconv.ParseUint(rest[i+1:], 10, 64)
		if !found || i <= 0 || perr != nil {
			return "", 0, "", ErrNickNotFound
		}
		return rest[:i], engine.ClientID(n), asked, nil
	}
	o, err := h.presence.LookupNick(h.ctx, key)
	if err != nil {
		return "", 0, "", err
	}
	node, id, nick, ok := parseOwner(o)
	if !ok {
		return "", 0, "", fmt.Errorf("chat: nick %q has a bad owner record %q", key, o)
	}
	return node, id, nick, nil
}
