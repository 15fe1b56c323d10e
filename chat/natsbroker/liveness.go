package natsbroker

import (
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parleyhq/parley/chat"
)

// alive reports whether node is this one or has been heard from lately.
// Until this node has listened for three heartbeats, every node is
// presumed alive.
func (b *Broker) alive(node string) bool {
	if node == b.cfg.Node {
		return true
	}
	b.mu.RLock()
	_, ok := b.seen[node]
	left := b.left[node]
	b.mu.RUnlock()
	return ok || !left && time.Since(b.started) < 3*b.cfg.Heartbeat
}

// beatMsg is a heartbeat.
type beatMsg struct {
	Node    string `json:"node"`
	Bye     bool   `json:"bye,omitempty"`
	Clients int    `json:"clients"`
	Users   int    `json:"users"`
	Rooms   int    `json:"rooms"`
	// Tails: rooms this node wrote to lately, and the sequence number its
	// last message there was stored under (tails.go).
	Tails map[string]uint64 `json:"tails,omitempty"`
}

func (b *Broker) beat(bye bool) {
	bm := beatMsg{Node: b.cfg.Node, Bye: bye}
	b.mu.RLock()
	h := b.h
	b.mu.RUnlock()
	if h != nil {
		l := h.NodeLoad()
		bm.Clients, bm.Users, bm.Rooms = l.Clients, l.Users, l.Rooms
	}
	if !bye {
		bm.Tails = b.out.recentTails(time.Now(), b.cfg.Heartbeat)
	}
	data, _ := json.Marshal(bm)
	_ = b.nc.Publish(b.cfg.Prefix+".nodes", data) // fails only while disconnected
	if b.testBeat != nil {
		b.testBeat(bye)
	}
}

// beatsSize bounds the heartbeats waiting to be read; past it NATS drops
// them for this node (counted as slow). A few per node and heartbeat.
const beatsSize = 4096

// heartbeat says this node is alive and finds the nodes that no longer
// are. It runs on a goroutine of its own, fed by its own subscription: no
// room message, repair or handler call ever delays it, so a live node is
// declared gone only for its silence. And when this node itself stalled
// (its ticker fired late: GC, a starved CPU), what it did not hear is its
// own fault: the others are presumed to have spoken meanwhile.
func (b *Broker) heartbeat(beats <-chan *nats.Msg) {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.Heartbeat)
	defer t.Stop()
	b.beat(false)
	last := time.Now()
	for {
		select {
		case <-b.stop:
			return
		case m := <-beats:
			b.nodeBeat(m)
		case now := <-t.C:
			b.beat(false)
			// Heartbeats that arrived before this tick count before it is
			// judged.
			for drained := false; !drained; {
				select {
				case m := <-beats:
					b.nodeBeat(m)
				default:
					drained = true
				}
			}
			late := now.Sub(last) > 2*b.cfg.Heartbeat
			last = now
			if late || !b.nc.IsConnected() {
				b.heardAll(now) // the silence was ours, not theirs
				if late {
					b.stats.stalls.Add(1)
				}
				continue
			}
			var gone []string
			b.mu.Lock()
			for n, at := range b.seen {
				if now.Sub(at) > 3*b.cfg.Heartbeat {
					delete(b.seen, n)
					delete(b.loads, n)
					b.left[n] = true
					gone = append(gone, n)
				}
			}
			b.mu.Unlock()
			for _, n := range gone {
				b.post(func() { b.gone(n) })
			}
		}
	}
}

// heardAll counts every known node as heard from at now.
func (b *Broker) heardAll(now time.Time) {
	b.mu.Lock()
	for n := range b.seen {
		b.seen[n] = now
	}
	b.mu.Unlock()
}

// nodeBeat reads a heartbeat. The handler hears of a node that left on
// the dispatcher.
func (b *Broker) nodeBeat(m *nats.Msg) {
	var bm beatMsg
	if err := strict(m.Data, &bm); err != nil || !validName(bm.Node, 16) || bm.Clients < 0 || bm.Users < 0 || bm.Rooms < 0 || len(bm.Tails) > maxTails {
		b.stats.droppedBeats.Add(1)
		if b.dropLog.allow() {
			b.log.Warn("dropping a heartbeat that does not decode", "err", err, "data", string(m.Data[:min(len(m.Data), 200)]))
		}
		return
	}
	if bm.Node == b.cfg.Node {
		return
	}
	b.stats.beats.Add(1)
	if len(bm.Tails) > 0 {
		b.post(func() {
			for room, seq := range bm.Tails {
				b.tailHeard(room, seq)
			}
		})
	}
	b.mu.Lock()
	_, known := b.seen[bm.Node]
	if bm.Bye {
		delete(b.seen, bm.Node)
		delete(b.loads, bm.Node)
		b.left[bm.Node] = true
	} else {
		b.seen[bm.Node] = time.Now()
		b.loads[bm.Node] = chat.NodeInfo{Node: bm.Node, Clients: bm.Clients, Users: bm.Users, Rooms: bm.Rooms}
		delete(b.left, bm.Node)
	}
	b.mu.Unlock()
	switch {
	case bm.Bye: // known or not: it may have held nicks or members heard of before its first heartbeat
		b.post(func() { b.gone(bm.Node) })
	case !bm.Bye && !known:
		b.log.Info("a node joined the cluster", "peer", bm.Node)
	}
}

func (b *Broker) gone(node string) {
	b.stats.nodesGone.Add(1)
	b.mu.RLock()
	h := b.h
	b.mu.RUnlock()
	h.HandleNodeGone(node)
}

// liveNodes counts the other nodes heard from lately.
func (b *Broker) liveNodes() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.seen)
}
