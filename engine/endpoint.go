package engine

import (
	"fmt"
	"net/netip"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/parleyhq/parley/internal/wsproto"
)

// autotunedReceiveBuffer stands for a receive buffer the kernel autotunes
// (Config.SocketReadBuffer -1): Linux's default net.ipv4.tcp_rmem maximum.
const autotunedReceiveBuffer = 6 << 20

// registryShards is the number of stripes of an endpoint's client registry.
const registryShards = 64

// Endpoint is an Application's handle on its clients: it sends to one, to a
// list or to all, closes them and reports their counters. All methods are
// safe for concurrent use, including from inside the Application's
// callbacks.
//
// Sends are asynchronous: a send encodes its frame once, queues it to the
// writer shards of its recipients and returns. Sends that are ordered with
// each other (made by one goroutine, or under one lock) reach every
// recipient in that order, whatever their kind. Sends made concurrently
// have no order between them, and recipients on different writer shards
// may see them interleaved differently: an application that needs every
// recipient to see one order (a chat room) makes those sends under one
// lock, as OnMessage callbacks of different clients run concurrently.
//
// A recipient whose socket is backed up past Config.SendQueueSoftLimit
// skips messages sent to many (Multicast, Broadcast, Group sends; counted
// in Stats.SkippedSlow), but not those sent to it alone (Send): a reply is
// never lost while its client stays. Past the hard limit it is closed.
type Endpoint struct {
	srv        *Server
	path       string
	app        Application
	maxMessage int  // received messages above this close the client with 1009
	inline     bool // MountOptions.Inline

	// pendingBudget is a client's Config.MaxPendingInput: at least one
	// message of the largest size.
	pendingBudget int

	// pausedLimit: a paused client that keeps sending until this many
	// bytes wait unread (its budget and what its kernel receive buffer
	// held, four times over) is closed with 1008.
	pausedLimit int

	count    atomic.Int64
	registry [registryShards]struct {
		sync.RWMutex
		m    map[ClientID]*conn
		gone readTotals // what removed clients read
	}

	// members[i] lists the clients owned by writer i. Only writer i's
	// goroutine reads or changes it.
	members [][]*conn
}

func newEndpoint(srv *Server, path string, app Application, maxMessage int) *Endpoint {
	ep := &Endpoint{srv: srv, path: path, app: app, maxMessage: maxMessage, members: make([][]*conn, len(srv.writers)),
		pendingBudget: max(srv.cfg.MaxPendingInput, maxMessage)}
	rcvbuf := 2 * srv.cfg.SocketReadBuffer // what the kernel keeps for SO_RCVBUF n
	if rcvbuf <= 0 {
		rcvbuf = autotunedReceiveBuffer
	}
	ep.pausedLimit = 4 * (ep.pendingBudget + rcvbuf)
	for i := range ep.registry {
		ep.registry[i].m = make(map[ClientID]*conn)
	}
	return ep
}

// Path returns the path the endpoint is mounted on.
func (ep *Endpoint) Path() string { return ep.path }

func (ep *Endpoint) add(c *conn) {
	r := &ep.registry[c.id%registryShards]
	r.Lock()
	r.m[c.id] = c
	r.Unlock()
	ep.count.Add(1)
}

func (ep *Endpoint) remove(c *conn) {
	r := &ep.registry[c.id%registryShards]
	r.Lock()
	found := r.m[c.id] == c
	if found {
		delete(r.m, c.id)
		r.gone.bytes += c.bytesIn.Load()
		r.gone.frames += c.framesIn.Load()
		r.gone.messages += c.msgsIn.Load()
	}
	r.Unlock()
	if found {
		ep.count.Add(-1)
		ep.srv.release()
	}
}

func (ep *Endpoint) lookup(id ClientID) *conn {
	r := &ep.registry[id%registryShards]
	r.RLock()
	c := r.m[id]
	r.RUnlock()
	return c
}

// Count returns the number of open clients.
func (ep *Endpoint) Count() int { return int(ep.count.Load()) }

// Clients returns the ids of the open clients, in ascending order.
func (ep *Endpoint) Clients() []ClientID {
	ids := make([]ClientID, 0, ep.Count())
	for i := range ep.registry {
		r := &ep.registry[i]
		r.RLock()
		for id := range r.m {
			ids = append(ids, id)
		}
		r.RUnlock()
	}
	slices.Sort(ids)
	return ids
}

// Info returns the counters of client id, or ErrUnknownClient.
func (ep *Endpoint) Info(id ClientID) (ClientInfo, error) {
	c := ep.lookup(id)
	if c == nil {
		return ClientInfo{}, fmt.Errorf("info of client %d: %w", id, ErrUnknownClient)
	}
	return c.info(), nil
}

// Addr returns client id's address and port. Unlike Info, whose
// RemoteAddr is a string made when asked, it allocates nothing: for checks
// made per message.
func (ep *Endpoint) Addr(id ClientID) (netip.AddrPort, error) {
	c := ep.lookup(id)
	if c == nil {
		return netip.AddrPort{}, fmt.Errorf("address of client %d: %w", id, ErrUnknownClient)
	}
	return c.addr(), nil
}

func checkMessage(typ MessageType, data []byte) error {
	switch typ {
	case Text:
		if !utf8.Valid(data) {
			return ErrInvalidUTF8
		}
	case Binary:
	default:
		return fmt.Errorf("%w: %d", ErrInvalidMessageType, int(typ))
	}
	return nil
}

// Send queues a message to client id. It returns ErrUnknownClient if the
// endpoint has no such client and ErrClientClosing if the client is being
// closed; the message is then dropped.
func (ep *Endpoint) Send(id ClientID, typ MessageType, data []byte) error {
	if err := checkMessage(typ, data); err != nil {
		return fmt.Errorf("send to client %d: %w", id, err)
	}
	c := ep.lookup(id)
	if c == nil {
		return fmt.Errorf("send to client %d: %w", id, ErrUnknownClient)
	}
	if c.flags.Load(flagClosing) {
		return fmt.Errorf("send to client %d: %w", id, ErrClientClosing)
	}
	ep.srv.stats.framesEncoded.Add(1)
	c.w.send(job{kind: jobSend, c: c, f: newDataFrame(typ, data, 1)})
	return nil
}

// Multicast queues a message to each listed client, encoded once; a client
// listed twice gets it once. It returns how many listed ids were open
// (counting repeats); unknown or closing ids are skipped.
func (ep *Endpoint) Multicast(ids []ClientID, typ MessageType, data []byte) (int, error) {
	if err := checkMessage(typ, data); err != nil {
		return 0, fmt.Errorf("multicast to %d clients: %w", len(ids), err)
	}
	f := newDataFrame(typ, data, 0)
	var shards uint64 // bit i: writer i has a recipient (up to 64 writers)
	for _, id := range ids {
		if c := ep.lookup(id); c != nil && !c.flags.Load(flagClosing) {
			f.conns = append(f.conns, c)
			shards |= 1 << uint(c.w.idx%64)
		}
	}
	n := len(f.conns)
	if n == 0 {
		f.refs.Store(1)
		f.release()
		return 0, nil
	}
	ep.srv.stats.framesEncoded.Add(1)
	ep.postToWriters(job{kind: jobMulticast, f: f}, func(i int) bool { return shards&(1<<uint(i%64)) != 0 })
	return n, nil
}

// Broadcast queues a message, encoded once, to every open client except
// the listed ids. It returns the number of clients open when it was called.
func (ep *Endpoint) Broadcast(typ MessageType, data []byte, except ...ClientID) (int, error) {
	if err := checkMessage(typ, data); err != nil {
		return 0, fmt.Errorf("broadcast: %w", err)
	}
	f := newDataFrame(typ, data, 0)
	var ex []ClientID
	if len(except) > 0 {
		ex = slices.Clone(except)
	}
	ep.srv.stats.framesEncoded.Add(1)
	ep.postToWriters(job{kind: jobBroadcast, ep: ep, f: f, except: ex}, nil)
	return ep.Count(), nil
}

// postToWriters posts j to every writer that want accepts (all if nil),
// setting the frame's reference count first.
func (ep *Endpoint) postToWriters(j job, want func(int) bool) {
	var n int32
	for i := range ep.srv.writers {
		if want == nil || want(i) {
			n++
		}
	}
	j.f.refs.Store(n)
	for i, w := range ep.srv.writers {
		if want == nil || want(i) {
			w.post(j)
		}
	}
}

// Close starts the close handshake with client id: a close frame with code
// and reason (cut to 123 bytes) follows whatever is already queued to it.
// The client's OnClose follows once it answers, or after
// Config.CloseTimeout. Messages from it that OnMessage has not been given
// yet are dropped, and what it sends from now on is only scanned for its
// close reply, or with StatusPolicyViolation not read at all: a client
// closed for flooding costs no more work.
func (ep *Endpoint) Close(id ClientID, code StatusCode, reason string) error {
	if code < 1000 || code > 4999 || !wsproto.ValidCloseCode(uint16(code)) {
		return fmt.Errorf("close client %d with %d: %w", id, int(code), ErrInvalidCloseCode)
	}
	c := ep.lookup(id)
	if c == nil {
		return fmt.Errorf("close client %d: %w", id, ErrUnknownClient)
	}
	if !c.startClose(code, reason) {
		return fmt.Errorf("close client %d: %w", id, ErrClientClosing)
	}
	c.flags.Store(flagAppClosed, true)
	return nil
}

// callMessage runs OnMessage, closing the client with 1011 on a panic.
func (ep *Endpoint) callMessage(c *conn, typ MessageType, data []byte) {
	defer ep.recoverApp(c, "OnMessage")
	ep.app.OnMessage(c.id, typ, data)
}

func (ep *Endpoint) callOpen(c *conn, data any) {
	defer ep.recoverApp(c, "OnOpen")
	ep.app.OnOpen(c.id, data)
}

func (ep *Endpoint) callClose(c *conn, code StatusCode, reason string) {
	defer ep.recoverApp(c, "OnClose")
	ep.app.OnClose(c.id, code, reason)
}

func (ep *Endpoint) recoverApp(c *conn, callback string) {
	if v := recover(); v != nil {
		ep.srv.stats.appPanics.Add(1)
		ep.srv.log.Error("application panic", "callback", callback, "client", c.id,
			"path", ep.path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		c.startClose(StatusInternalError, ReasonInternalError)
	}
}
