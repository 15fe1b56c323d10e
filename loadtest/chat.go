package loadtest

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Chat scenarios.
const (
	ScenarioChat  = "chat"  // rooms of RoomSize members, each client says Rate messages per second
	ScenarioChurn = "churn" // chat, while ChurnFraction of the clients keep leaving and coming back
)

// chatState is the chat scenario's bookkeeping for this process's clients.
// Rooms are contiguous blocks of RoomSize global client indexes, so a
// worker given whole rooms accounts for them alone. Each client's slots
// are touched only by its poller (receiving) or the sender goroutine
// (sending).
type chatState struct {
	cfg     Config
	churner []bool    // local index: a churn client (no room, not counted)
	next    [][]int32 // local recipient -> next seq expected from each room member
	sent    []int32   // local sender -> messages sent
	joined  []atomic.Int32
	joins   atomic.Int64

	received, dups, gaps, stray atomic.Int64
	churns, churnFails          atomic.Int64
}

func newChatState(cfg Config) *chatState {
	cs := &chatState{cfg: cfg, churner: make([]bool, cfg.Clients), next: make([][]int32, cfg.Clients),
		sent: make([]int32, cfg.Clients), joined: make([]atomic.Int32, cfg.Clients)}
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

var (
	joinPrefix    = []byte(`{"type":"join","room":"lt-`)
	messagePrefix = []byte(`{"type":"message"`)
)

// onMessage handles a frame to local client i; it runs on i's poller.
func (cs *chatState) onMessage(i int, data []byte, r *run) {
	switch {
	case bytes.HasPrefix(data, joinPrefix):
		cs.joined[i].Store(1)
		cs.joins.Add(1)
	case bytes.HasPrefix(data, messagePrefix) && !cs.churner[i]:
		g, seq, ts, ok := parseProbe(data)
		if !ok {
			return
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
}

// joinAll asks every chatter to join its room and waits (bounded) for the
// acknowledgements.
func (cs *chatState) joinAll(ctx context.Context, pool *Pool) int {
	var buf []byte
	want := int64(0)
	for i := range cs.cfg.Clients {
		if cs.churner[i] || pool.conn(i) == nil {
			continue
		}
		room, _, _ := cs.room(i)
		buf = append(append(buf[:0], `{"type":"join","room":"lt-`...), strconv.Itoa(room)...)
		buf = append(buf, `"}`...)
		if pool.Send(i, buf) == nil {
			want++
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for cs.joins.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	return int(cs.joins.Load())
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
			room, _, _ := cs.room(i)
			buf = append(buf[:0], `{"type":"say","room":"lt-`...)
			buf = strconv.AppendInt(buf, int64(room), 10)
			buf = append(buf, `","text":"`...)
			buf = appendProbe(buf, int32(cs.cfg.Offset+i), cs.sent[i], time.Now().UnixNano())
			buf = append(buf, `"}`...)
			if pool.Send(i, buf) == nil {
				cs.sent[i]++
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
	for i, n := range cs.sent {
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
