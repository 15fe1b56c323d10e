package loadtest

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/protocol"
)

// Chat scenarios.
const (
	ScenarioChat  = "chat"  // rooms of RoomSize members, each client says Rate messages per second
	ScenarioChurn = "churn" // chat, while ChurnFraction of the clients keep leaving and coming back
	ScenarioFlood = "flood" // chat, while Flooders hostile clients send as fast as they can
)

// isChat reports the scenarios built on the chat: rooms, senders and
// per-sender sequence checks.
func isChat(scenario string) bool {
	return scenario == ScenarioChat || scenario == ScenarioChurn || scenario == ScenarioFlood
}

// chatState is the chat scenario's bookkeeping for this process's clients.
// Rooms are contiguous blocks of RoomSize global client indexes, so a
// worker given whole rooms accounts for them alone. Each client's slots
// are touched only by its poller (receiving) or the sender goroutine
// (sending).
type chatState struct {
	cfg     Config
	churner []bool         // local index: a churn client (no room, not counted)
	next    [][]int32      // local recipient -> next seq expected from each room member
	sent    []atomic.Int32 // local sender -> messages sent (by the sender; read by the poller to resend)
	nonce   string         // starts the ids of this process's messages
	joined  []atomic.Int32
	joins   atomic.Int64
	refused atomic.Int64           // joins answered with an error
	refusal atomic.Pointer[string] // the first such answer

	// Resuming (Config.Reconnect): per local client, its room's epoch and
	// the last sequence number it saw there, and whether it awaits the
	// history of a rejoin.
	epoch, lastSeq []int64
	resuming       []atomic.Bool
	reconnect      chan closed  // clients to reconnect
	reconnectLat   Histogram    // from the close to the rejoin request
	redialLat      Histogram    // the reconnection itself (connect and upgrade, retries included)
	away           atomic.Int64 // clients closed and not yet back (or given up)

	received, dups, gaps, stray atomic.Int64
	churns, churnFails          atomic.Int64
	reconnects, resumed, resent atomic.Int64
	retried                     atomic.Int64 // says answered not_delivered, said again
}

// closed is a client the server closed, and when.
type closed struct {
	i  int
	at time.Time
}

func newChatState(cfg Config) *chatState {
	cs := &chatState{cfg: cfg, churner: make([]bool, cfg.Clients), next: make([][]int32, cfg.Clients),
		sent: make([]atomic.Int32, cfg.Clients), joined: make([]atomic.Int32, cfg.Clients), nonce: nonce()}
	if cfg.Reconnect {
		cs.epoch, cs.lastSeq = make([]int64, cfg.Clients), make([]int64, cfg.Clients)
		cs.resuming = make([]atomic.Bool, cfg.Clients)
		cs.reconnect = make(chan closed, cfg.Clients)
	}
	if cfg.Scenario == ScenarioChurn {
		every := max(1, int(1/cfg.ChurnFraction+0.5))
		for i := range cs.churner {
			cs.churner[i] = (cfg.Offset+i)%every == every-1
		}
	}
	return cs
}

// room returns the global room index, first member and size of local
// client i's room.
func (cs *chatState) room(i int) (room, base, size int) {
	g := cs.cfg.Offset + i
	room = g / cs.cfg.RoomSize
	base = room * cs.cfg.RoomSize
	return room, base, min(cs.cfg.RoomSize, cs.cfg.TotalClients-base)
}

// The prefixes of the server's frames the load generator tells apart
// without decoding them: its events begin with "type" and "room" in the
// order protocol's types declare them (TestFramePrefixes).
var (
	joinPrefix    = []byte(`{"type":"` + protocol.EventJoin + `","room":"lt-`)
	messagePrefix = []byte(`{"type":"` + protocol.EventMessage + `"`)
	historyPrefix = []byte(`{"type":"` + protocol.EventHistory + `","room":"lt-`)
	resetPrefix   = []byte(`{"type":"` + protocol.EventReset + `","room":"lt-`)
	undelivered   = []byte(`{"type":"` + protocol.EventError + `","code":"` + string(protocol.CodeNotDelivered) + `"`)
	errorPrefix   = []byte(`{"type":"` + protocol.EventError + `","code":"`)
)

// The requests' prefixes it writes, and where an error names its say.
const (
	sayPrefix    = `{"type":"` + protocol.TypeSay + `","room":"lt-`
	joinRequest  = `{"type":"` + protocol.TypeJoin + `","room":"lt-`
	sayAnswered  = `"request":{"type":"` + protocol.TypeSay + `","id":"`
	joinAnswered = `"request":{"type":"` + protocol.TypeJoin + `"`
)

// onMessage handles a frame to local client i; it runs on i's poller.
func (cs *chatState) onMessage(i int, data []byte, r *run) {
	switch {
	case bytes.HasPrefix(data, joinPrefix):
		cs.joined[i].Store(1)
		cs.joins.Add(1)
		if cs.epoch != nil {
			cs.epoch[i], _ = jsonInt(data, `"epoch":`)
		}
	case bytes.HasPrefix(data, messagePrefix) && !cs.churner[i]:
		cs.message(i, data, r)
	case bytes.HasPrefix(data, historyPrefix) && cs.resuming != nil && cs.resuming[i].Load():
		// The rejoin's replay: what the client missed, in order.
		for k := bytes.Index(data, messagePrefix); k >= 0; {
			data = data[k:]
			cs.message(i, data, r)
			k = bytes.Index(data[1:], messagePrefix)
			if k >= 0 {
				k++
			}
		}
		cs.resend(i, r)
		cs.resuming[i].Store(false)
		cs.resumed.Add(1)
	case bytes.HasPrefix(data, undelivered):
		cs.retry(i, data, r)
	case bytes.HasPrefix(data, errorPrefix) && bytes.Contains(data, []byte(joinAnswered)):
		if cs.refused.Add(1) == 1 {
			answer := string(data[:min(len(data), 300)])
			cs.refusal.Store(&answer)
		}
	case bytes.HasPrefix(data, resetPrefix) && cs.lastSeq != nil:
		cs.lastSeq[i], _ = jsonInt(data, `"seq":`)
		cs.epoch[i], _ = jsonInt(data, `"epoch":`)
	}
}

// message handles a room message (live or replayed) to local client i.
func (cs *chatState) message(i int, data []byte, r *run) {
	g, seq, ts, ok := parseProbe(data)
	if !ok {
		return
	}
	if cs.lastSeq != nil {
		cs.lastSeq[i], _ = jsonInt(data, `"seq":`)
	}
	r.delivered(ts)
	_, base, size := cs.room(i)
	k := int(g) - base
	if k < 0 || k >= size {
		cs.stray.Add(1) // from another room: the server mixed rooms up
		return
	}
	if cs.next[i] == nil {
		cs.next[i] = make([]int32, size)
	}
	switch n := cs.next[i][k]; {
	case seq == n:
		cs.next[i][k]++
		cs.received.Add(1)
	case seq < n:
		cs.dups.Add(1)
	default:
		cs.gaps.Add(1)
		cs.next[i][k] = seq + 1
		cs.received.Add(1)
	}
}

// say appends local client i's message number seq, said at ts, to b: a
// say with the probe as its text and an id of its own, so a resent copy is
// recognised (and dropped) by the server if the first got through.
func (cs *chatState) say(b []byte, i int, seq int32, ts int64) []byte {
	room, _, _ := cs.room(i)
	g := int32(cs.cfg.Offset + i)
	b = append(b, sayPrefix...)
	b = strconv.AppendInt(b, int64(room), 10)
	b = append(b, `","id":"`...)
	b = append(b, cs.nonce...)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(g), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, `","text":"`...)
	b = appendProbe(b, g, seq, ts)
	return append(b, `"}`...)
}

// resend says again, once local client i is back in its room, its
// messages that never came back to it: lost with the connection, or kept
// by the server (which then drops the copy by its id). Their latency counts
// from the resend.
func (cs *chatState) resend(i int, r *run) {
	_, base, _ := cs.room(i)
	from := int32(0)
	if cs.next[i] != nil {
		from = cs.next[i][cs.cfg.Offset+i-base]
	}
	var buf []byte
	for seq := from; seq < cs.sent[i].Load(); seq++ {
		if r.pool.Send(i, cs.say(buf[:0], i, seq, time.Now().UnixNano())) == nil {
			cs.resent.Add(1)
		}
	}
}

// retry says again, under the same id, a message of local client i's that
// the server answered not_delivered (as the browser page does): the
// server kept it as long as it could, and its id keeps a copy that did get
// through from being heard twice. Its latency counts from the retry.
func (cs *chatState) retry(i int, data []byte, r *run) {
	k := bytes.Index(data, []byte(sayAnswered))
	if k < 0 {
		return
	}
	id := data[k+len(sayAnswered):]
	if end := bytes.IndexByte(id, '"'); end >= 0 {
		id = id[:end]
	}
	// nonce.client.seq, as say writes it.
	rest, ok := bytes.CutPrefix(id, []byte(cs.nonce+"."))
	g, seqText, ok2 := bytes.Cut(rest, []byte("."))
	client, err1 := strconv.Atoi(string(g))
	seq, err2 := strconv.ParseInt(string(seqText), 10, 32)
	if !ok || !ok2 || err1 != nil || err2 != nil || client != cs.cfg.Offset+i {
		return
	}
	if r.pool.Send(i, cs.say(nil, i, int32(seq), time.Now().UnixNano())) == nil {
		cs.retried.Add(1)
	}
}

// nonce returns a random token of letters and digits.
func nonce() string { return strconv.FormatUint(rand.Uint64(), 36) }

// jsonInt returns the integer after key in b, a JSON object.
func jsonInt(b []byte, key string) (int64, bool) {
	k := bytes.Index(b, []byte(key))
	if k < 0 {
		return 0, false
	}
	var n int64
	digits := 0
	for _, c := range b[k+len(key):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
		digits++
	}
	return n, digits > 0
}

// resume reconnects the clients the server closed, until ctx ends, and
// has each rejoin its room from the last sequence number it saw.
func (cs *chatState) resume(ctx context.Context, pool *Pool, r *run) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for range cs.cfg.Dialers { // as many reconnections at once as connections at the start
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for {
				var c closed
				select {
				case c = <-cs.reconnect:
				case <-ctx.Done():
					return
				}
				start := time.Now()
				cause := pool.Reconnect(ctx, c.i)
				cs.away.Add(-1)
				if cause != "" {
					r.lose("closed, then reconnecting failed: " + cause)
					continue
				}
				cs.redialLat.Record(time.Since(start))
				cs.reconnects.Add(1)
				room, _, _ := cs.room(c.i)
				buf = append(append(buf[:0], joinRequest...), strconv.Itoa(room)...)
				buf = append(append(buf, `","since":`...), strconv.FormatInt(cs.lastSeq[c.i], 10)...)
				buf = append(append(buf, `,"epoch":`...), strconv.FormatInt(cs.epoch[c.i], 10)...)
				buf = append(buf, '}')
				if pool.Send(c.i, buf) == nil {
					cs.reconnectLat.Record(time.Since(c.at))
				}
			}
		}()
	}
}

// joinAll asks every chatter to join its room and waits (bounded) for the
// acknowledgements; it returns how many joined and how many asked.
func (cs *chatState) joinAll(ctx context.Context, pool *Pool) (joined, asked int) {
	var buf []byte
	want := int64(0)
	for i := range cs.cfg.Clients {
		if cs.churner[i] || pool.conn(i) == nil {
			continue
		}
		room, _, _ := cs.room(i)
		buf = append(append(buf[:0], joinRequest...), strconv.Itoa(room)...)
		buf = append(buf, `"}`...)
		if pool.Send(i, buf) == nil {
			want++
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for cs.joins.Load()+cs.refused.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	return int(cs.joins.Load()), int(want)
}

// send runs the senders until ctx ends: every chatter says Rate messages
// per second, spread evenly, as "<global index> <seq> <unix ns>".
func (cs *chatState) send(ctx context.Context, pool *Pool) {
	var chatters []int
	for i := range cs.cfg.Clients {
		if !cs.churner[i] && cs.joined[i].Load() == 1 {
			chatters = append(chatters, i)
		}
	}
	if len(chatters) == 0 || cs.cfg.Rate <= 0 {
		<-ctx.Done()
		return
	}
	perSecond := float64(len(chatters)) * cs.cfg.Rate
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	begin := time.Now()
	var done int64
	var buf []byte
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		due := int64(time.Since(begin).Seconds()*perSecond) - done
		for ; due > 0; due-- {
			i := chatters[next]
			next = (next + 1) % len(chatters)
			if cs.resuming != nil && cs.resuming[i].Load() {
				done++
				continue // away, or not yet back in its room: it says nothing meanwhile
			}
			seq := cs.sent[i].Load()
			if pool.Send(i, cs.say(buf[:0], i, seq, time.Now().UnixNano())) == nil {
				cs.sent[i].Store(seq + 1)
			}
			done++
		}
	}
}

// expected returns the deliveries the sent messages owe: each message to
// every joined chatter of its room (the sender included).
func (cs *chatState) expected() (sent, expected int64) {
	members := map[int]int64{}
	for i := range cs.cfg.Clients {
		if !cs.churner[i] && cs.joined[i].Load() == 1 {
			r, _, _ := cs.room(i)
			members[r]++
		}
	}
	for i := range cs.sent {
		n := cs.sent[i].Load()
		r, _, _ := cs.room(i)
		sent += int64(n)
		expected += int64(n) * members[r]
	}
	return sent, expected
}

// churn drops and redials ChurnRate churn clients per second until ctx
// ends; redials run under dialCtx (the run's), so those in flight at the end
// finish instead of failing.
func (cs *chatState) churn(ctx, dialCtx context.Context, pool *Pool, churnLatency *Histogram) {
	var churners []int
	for i, c := range cs.churner {
		if c {
			churners = append(churners, i)
		}
	}
	if len(churners) == 0 || cs.cfg.ChurnRate <= 0 {
		<-ctx.Done()
		return
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(16, len(churners)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				pool.Drop(i)
				start := time.Now()
				if pool.Redial(dialCtx, i) {
					churnLatency.Record(time.Since(start))
					cs.churns.Add(1)
				} else {
					cs.churnFails.Add(1)
				}
			}
		}()
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer func() { t.Stop(); close(jobs); wg.Wait() }()
	begin := time.Now()
	var done int64
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for due := int64(time.Since(begin).Seconds()*cs.cfg.ChurnRate) - done; due > 0; due-- {
			select {
			case jobs <- churners[next]:
			case <-ctx.Done():
				return
			}
			next = (next + 1) % len(churners)
			done++
		}
	}
}
